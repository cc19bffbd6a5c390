"""Planning: the arm-part rule for overrides, and one composition per distinct option set."""

from __future__ import annotations

import pytest

from biorag.errors import ConfigError
from biorag.experiment import plan as plan_mod
from biorag.experiment.plan import part_of, plan_run


def _by_arm(p):
    return {c.arm.name: c for c in p.cells}


def test_an_adapter_override_goes_only_on_the_arms_that_have_an_adapter():
    p = plan_run(["arm=base,rag,lora,lora_rag", "model=fake", "arm.adapter=smollm2-mine"])
    arms = _by_arm(p)
    assert arms["base"].arm.adapter is None and arms["rag"].arm.adapter is None
    assert arms["lora"].arm.adapter == arms["lora_rag"].arm.adapter == "smollm2-mine"
    assert p.notes == ["arm.adapter=smollm2-mine applies to lora, lora_rag; not to base, rag (no adapter)"]


def test_a_retriever_override_goes_only_on_the_arms_that_retrieve():
    p = plan_run(["arm=base,rag", "model=fake", "arm.retriever.k=3", "arm.retriever.rerank=lm"])
    arms = _by_arm(p)
    assert arms["base"].arm.retriever is None
    assert arms["rag"].arm.retriever.k == 3 and arms["rag"].arm.retriever.rerank == "lm"
    assert len(p.notes) == 2 and all("not to base" in n for n in p.notes)


@pytest.mark.parametrize("overrides, named", [
    (["arm=base", "arm.adapter=mine"], "arm base has none"),
    (["arm=base,rag", "arm.adapter=mine"], "none of the arms base, rag has one"),
    (["arm=base", "arm.retriever.k=3"], "arm base has none"),
    (["arm=base", "+arm.retriever.k=3"], "arm base has none"),
])
def test_an_override_that_would_add_a_part_to_every_arm_is_refused(overrides, named):
    with pytest.raises(ConfigError, match=named) as e:
        plan_run([*overrides, "model=fake"])
    assert "lora" in str(e.value) or "rag" in str(e.value)  # where the part does go


@pytest.mark.parametrize("overrides", [["arm=lora", "arm.adapter=null"], ["arm=rag", "arm.retriever=null"]])
def test_taking_a_part_off_an_arm_is_refused(overrides):
    with pytest.raises(ConfigError, match="would take the"):
        plan_run([*overrides, "model=fake"])


def test_taking_off_a_part_an_arm_lacks_changes_nothing():
    p = plan_run(["arm=base", "model=fake", "arm.adapter=null"])
    assert p.cells[0].arm.adapter is None and p.notes == []


def test_part_of():
    assert part_of("arm.adapter=x") == "adapter"
    assert part_of("+arm.retriever.k=3") == "retriever"
    assert part_of("arm.retriever=null") == "retriever"
    assert part_of("arm.description=x") is None and part_of("arm.adapters=x") is None


def test_a_study_composes_each_option_set_once(monkeypatch):
    calls = []
    real = plan_mod.compose
    monkeypatch.setattr(plan_mod, "compose", lambda name, ov: calls.append(tuple(ov)) or real(name, ov))
    p = plan_run(["study=dorfner2024"])
    # 8 models x 8 tasks x 2 protocols, 88 cells once a protocol that does not apply falls back
    assert len(p.cells) == 88
    assert len(calls) == len(set(calls)) <= 1 + 8 + 8 * 3 + 1


def test_the_finetune_hint_runs_the_2x2_with_the_adapter_on_the_lora_arms():
    from biorag.cli.finetune import adapter_hint

    hint = adapter_hint("smollm2-mine", "smollm2", "lm")
    command = hint.split(": ", 1)[1].split()
    assert command[:3] == ["biorag", "experiment", "run"]
    overrides = [o for o in command[3:] if "<" not in o]
    p = plan_run([*overrides, "task=hpo-term-mcq"])
    assert {c.arm.name: c.arm.adapter for c in p.cells} == {
        "base": None, "rag": None, "lora": "smollm2-mine", "lora_rag": "smollm2-mine"}
