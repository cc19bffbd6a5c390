"""The RAG x fine-tune factorial on hand-made per-item correctness vectors: main effects,
interaction, intervals and the sign-flip p-value against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from biorag.report.compare import build_report
from biorag.report.factorial import factorials, place
from biorag.report.render import all_tables, markdown, write_report
from biorag.report.study import Cell, Study
from biorag.scoring.metrics import aggregate
from biorag.scoring.stats import sign_flip
from biorag.types import Prediction

R = '{"arm.retriever.k": "3", "arm.retriever.mode": "dense"}'
LEVELS = {"base": (None, None), "rag": (R, None), "lora": (None, "smollm2-hpo"),
          "lora_rag": (R, "smollm2-hpo"), "raft": (R, "smollm2-raft")}


def _cell(arm: str, correct: list[int], model: str = "m", task: str = "t") -> Cell:
    values = [float(x) for x in correct]
    v, lo, hi = aggregate(values)
    metrics = {f"{task}/accuracy": v, f"{task}/accuracy_ci_low": lo, f"{task}/accuracy_ci_high": hi,
               f"{task}/eval_seconds": 2.0 * len(values) * (2 if LEVELS[arm][0] else 1), f"{task}/tokens": 10.0}
    preds = [Prediction(f"e{i}", "", None, "", scores={"accuracy": x}) for i, x in enumerate(values)]
    retriever, adapter = LEVELS[arm]
    return Cell(f"{arm}-{model}", arm, model, task, "general", None, 0, metrics, preds,
                index_manifest={"build_seconds": 42.0} if retriever else None,
                adapter_manifest={"results": {"wall_seconds": 100.0, "tokens": 5000}, "device": "cpu"}
                if adapter else None, retriever=retriever, adapter=adapter)


def _effects(cells: list[Cell]) -> dict[str, object]:
    (f,) = factorials(cells, {"t": "accuracy"})
    return {e.effect: e for e in f.effects}


def test_sign_flip_is_exact_for_few_contrasts() -> None:
    # non-zero contrasts 1 and .5: sums +-1 +-.5 = 1.5, .5, -.5, -1.5; |sum| >= 1.5 in 2 of 4
    assert sign_flip([1, 0, 0, 0.5]) == 0.5
    assert sign_flip([1, 1, 1]) == pytest.approx(2 / 8)
    assert sign_flip([1, 1, 1, 1, 1, 0]) == pytest.approx(2 / 32)
    assert sign_flip([0, 0]) == 1.0
    # many contrasts: seeded Monte Carlo, (1 + extreme) / (R + 1)
    p = sign_flip([1] * 30, seed=3, n_resamples=2000)
    assert p == pytest.approx(1 / 2001)
    assert sign_flip([1, -1] * 15, seed=3) == 1.0


def test_main_effects_and_interaction_by_hand() -> None:
    cells = [_cell("base", [0, 0, 1, 0]), _cell("rag", [1, 0, 1, 1]), _cell("lora", [0, 1, 1, 0]),
             _cell("lora_rag", [1, 1, 1, 0])]
    e = _effects(cells)
    retrieval, tune, inter = (e["retrieval"], e["fine-tune smollm2-hpo"],
                              e["interaction smollm2-hpo"])
    # retrieval: ((rag - base) + (lora_rag - lora)) / 2 = ([1,0,0,1] + [1,0,0,0]) / 2 = [1, 0, 0, .5]
    assert retrieval.value == pytest.approx(0.375) and retrieval.p == pytest.approx(0.5) and retrieval.n == 4
    # fine-tune: ((lora - base) + (lora_rag - rag)) / 2 = [0, 1, 0, -.5]: |+-1 +-.5| >= .5 always
    assert tune.value == pytest.approx(0.125) and tune.p == 1.0
    # interaction: (lora_rag - lora) - (rag - base) = [0, 0, 0, -1]
    assert inter.value == pytest.approx(-0.25) and inter.p == 1.0
    assert retrieval.contrast == "((rag - base) + (lora_rag - lora)) / 2"
    assert retrieval.cost == "index 42 s" and tune.cost == "train 100 s, 5,000 tok, cpu"
    assert retrieval.eval_per_item == "2.000 -> 4.000"


def test_intervals_and_p_for_a_clear_interaction() -> None:
    # fine-tuning helps only with retrieval: the interaction is [1, 1, 1, 1, 1, 0]
    zero = [0] * 6
    cells = [_cell("base", zero), _cell("rag", zero), _cell("lora", zero), _cell("lora_rag", [1, 1, 1, 1, 1, 0])]
    inter = _effects(cells)["interaction smollm2-hpo"]
    assert inter.value == pytest.approx(5 / 6)
    assert inter.p == pytest.approx(2 / 32)  # 2 of the 2^5 sign assignments reach |sum| 5
    # the bootstrap mean is k/6 with k ~ Binomial(6, 5/6): P(k <= 2) = .009 < .025 < P(k <= 3) = .062
    # and P(k = 6) = .335 > .025, so the 95% percentile interval is [3/6, 6/6] for any seed
    assert (inter.lo, inter.hi) == (pytest.approx(0.5), pytest.approx(1.0))


def test_raft_is_compared_given_retrieval() -> None:
    cells = [_cell("base", [0, 0, 1, 0]), _cell("rag", [1, 0, 1, 1]), _cell("lora", [0, 1, 1, 0]),
             _cell("lora_rag", [1, 1, 1, 0]), _cell("raft", [1, 1, 1, 1])]
    e = _effects(cells)
    assert e["fine-tune smollm2-raft given retrieval"].value == pytest.approx(0.25)  # raft - rag = [0,1,0,0]
    vs = e["smollm2-raft vs smollm2-hpo"]
    assert vs.value == pytest.approx(0.25) and vs.contrast == "raft - lora_rag" and vs.p == 1.0
    (f,) = factorials(cells, {"t": "accuracy"})
    assert f.best.best == "raft" and f.best.runner_up == "lora_rag" and f.best.n_cells == 5
    assert "raft is the best of the 5 cells" in f.best.sentence() and "not significant" in f.best.sentence()


def test_no_factorial_without_its_cells() -> None:
    assert place([_cell("base", [1, 0]), _cell("rag", [1, 1])], {"t": "accuracy"}) == []
    assert place([_cell("rag", [1, 0]), _cell("lora_rag", [1, 1])], {"t": "accuracy"}) == []  # no base


def test_report_holms_the_effects_and_renders_the_interaction_plot(tmp_path) -> None:
    zero = [0] * 6
    cells = [_cell("base", zero), _cell("rag", zero), _cell("lora", zero), _cell("lora_rag", [1, 1, 1, 1, 1, 0]),
             _cell("raft", [1, 1, 1, 1, 1, 1])]
    report = build_report(Study("exp", "1", "p" * 32, "exp", "base", "sqlite:///x.db", "abc", cells))
    (f,) = report.factorials
    family = [d.p for d in report.deltas if d.headline] + [e.p for e in f.effects] + [f.best.p]
    ps = sorted(family)
    smallest = min(f.effects, key=lambda e: e.p)
    assert smallest.p_holm == pytest.approx(min(1.0, len(family) * ps[0]))
    assert all(e.p_holm >= e.p for e in f.effects)
    titles = [t.title for t in all_tables(report)]
    assert any(t.startswith("RAG x fine-tune factorial") for t in titles) and "Which cell is best" in titles
    files = write_report(report, tmp_path / "r")
    png = files["factorial_plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = markdown(report, ["factorial.png"])
    assert "![factorial.png](factorial.png)" in md and "raft is the best of the 5 cells" in md
    assert "interaction smollm2-hpo" in (tmp_path / "r" / "factorial.csv").read_text()
    assert not math.isnan(f.best.p_holm)
