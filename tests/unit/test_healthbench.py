"""The HealthBench loader: its JSONL as free-text items carrying their rubrics; bad rubrics are
row problems naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biorag.errors import InputError
from biorag.prompting import build_prompt
from biorag.tasks import load_examples, load_task_config
from biorag.tasks.validate import validate_file

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "healthbench"
GOOD, BAD = FOLDER / "healthbench.jsonl", FOLDER / "healthbench_bad.jsonl"


def _task(*overrides: str):
    return load_task_config("healthbench", [f"task.path={GOOD}", *overrides])


def test_items_carry_conversation_rubric_tags_and_ideal_completion() -> None:
    cfg = _task()
    assert (cfg.type, cfg.answer_type, cfg.scoring) == ("summarisation", "text", "generate")
    examples = load_examples(cfg)
    assert [ex.id for ex in examples] == ["hb-0001", "hb-0002", "hb-0003", "hb-0004"]
    first, multi = examples[0], examples[1]
    assert first.input.startswith("My 3 year old swallowed a button battery")
    assert first.gold.startswith("Go to the nearest emergency department")
    rubrics = first.metadata["rubrics"]
    assert [r["points"] for r in rubrics] == [10.0, 5.0, -8.0, 3.0]
    assert all(isinstance(r["points"], float) for r in rubrics)
    assert rubrics[3]["tags"] == ["level:cluster", "cluster:emergency_referrals_clarity",
                                  "axis:communication_quality"]
    assert first.metadata["tags"] == ["theme:emergency_referrals", "physician_agreed_category:emergent"]
    # a conversation of several turns: role-prefixed, the user's last; no ideal completion
    assert multi.input.splitlines()[0] == "user: what is a normal resting heart rate"
    assert multi.input.endswith("user: mine is 52 and I run a lot, is that bad?")
    assert [m["role"] for m in multi.metadata["conversation"]] == ["user", "assistant", "user"]
    assert multi.gold == "" and multi.query == "mine is 52 and I run a lot, is that bad?"
    assert first.source == f"{GOOD}:1"


def test_the_prompt_is_the_conversation_whole() -> None:
    cfg = _task()
    ex = load_examples(cfg)[1]
    text = build_prompt(cfg, ex).text
    assert "assistant: For most adults a normal resting heart rate" in text
    assert text.rstrip().endswith("mine is 52 and I run a lot, is that bad?")


def test_subset_keeps_the_items_with_an_example_tag() -> None:
    examples = load_examples(_task("task.subset=theme:hedging"))
    assert [ex.id for ex in examples] == ["hb-0004"]


def test_bad_rubrics_are_row_problems_with_file_line_and_field() -> None:
    report = validate_file(str(BAD), fmt="healthbench")
    assert [ex.id for ex in report.examples] == ["hb-0001"]
    found = {(p.row, p.field): p.message for p in report.problems}
    assert set(found) == {(2, "rubrics[1].points"), (3, "rubrics[0].points"), (4, "rubrics"),
                          (5, "prompt[1].role")}
    assert "no points" in found[(2, "rubrics[1].points")]
    assert "'eight' is not a number" in found[(3, "rubrics[0].points")]
    assert "no criterion with positive points" in found[(4, "rubrics")]
    # loading (not validating) stops at the first, counting the others
    with pytest.raises(InputError, match="no points") as e:
        load_examples(load_task_config("healthbench", [f"task.path={BAD}"]))
    assert (e.value.file, e.value.line, e.value.field) == (str(BAD), 2, "rubrics[1].points")
    assert "and 3 more problems" in str(e.value)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"rubrics": [{"criterion": "x", "points": True, "tags": []}]}, "rubrics[0].points", "is not a number"),
    ({"rubrics": [{"criterion": "", "points": 3, "tags": []}]}, "rubrics[0].criterion", "empty criterion"),
    ({"rubrics": []}, "rubrics", "non-empty list"),
    ({"prompt": "just text"}, "prompt", "list of messages"),
    ({"prompt": [{"role": "patient", "content": "hi"}]}, "prompt[0].role", "'patient'"),
    ({"example_tags": "theme:x"}, "example_tags", "list of tag strings"),
    ({"ideal_completions_data": {"ideal_completion": 3}}, "ideal_completions_data.ideal_completion",
     "expected text"),
])
def test_more_bad_rows(tmp_path: Path, change: dict, field: str, message: str) -> None:
    rec = json.loads(GOOD.read_text().splitlines()[0]) | change
    path = tmp_path / "hb.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    report = validate_file(str(path), fmt="healthbench")
    assert not report.examples and len(report.problems) == 1
    p = report.problems[0]
    assert (p.row, p.field) == (1, field) and message in p.message


def test_the_cli_validates_and_shows_the_fixture() -> None:
    from biorag.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["task", "validate", str(GOOD), "--task", "healthbench"])
    assert r.exit_code == 0 and "4 examples, no problems" in r.output
    r = runner.invoke(app, ["task", "show", "healthbench", "-n", "2", f"task.path={GOOD}"])
    assert r.exit_code == 0 and "hb-0001" in r.output and "hb-0002" in r.output
    r = runner.invoke(app, ["task", "validate", str(BAD), "--type", "healthbench"])
    assert r.exit_code == 1 and "4 problem(s)" in r.output
