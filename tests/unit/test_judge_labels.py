"""Human label files: HealthBench's meta-eval JSONL and simple tables; bad rows name file,
line and field; which labels match a task's items."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from biorag.errors import InputError
from biorag.judges.labels import match_labels, read_labels, require_matches

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "judges"
HEALTHBENCH = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "healthbench" / "healthbench.jsonl"


def test_the_csv_fixture_reads_as_binary_labels() -> None:
    labels = read_labels(FIXTURES / "labels.csv")
    assert len(labels) == 12 and {lab.kind for lab in labels} == {"binary"}
    first = labels[0]
    assert first.item == "hb-0001" and first.key.startswith("Advises going to the emergency")
    assert first.value == 1.0 and first.source == f"{FIXTURES / 'labels.csv'}:2"
    assert [lab.value for lab in labels][3] == 1.0  # "yes"
    assert [lab.value for lab in labels][8] == 0.0  # "no"


def test_healthbench_meta_eval_rows_take_the_physicians_majority() -> None:
    labels = read_labels(FIXTURES / "healthbench_meta_eval.jsonl")
    assert [lab.item for lab in labels] == ["hb-0001", "hb-0001", "hb-0002", "hb-0004"]
    assert [lab.value for lab in labels] == [1.0, 0.0, 0.0, 1.0]
    assert labels[1].votes == (0.0, 0.0, 1.0)
    assert labels[2].prompt.startswith("user: what is a normal resting heart rate")
    assert labels[2].prompt.endswith("user: mine is 52 and I run a lot, is that bad?")
    assert labels[0].group == "cluster_emergency_referrals_emergent"
    assert labels[3].answer.startswith("Yes, ibuprofen")


def test_an_even_split_has_no_majority_and_is_left_out(tmp_path: Path, caplog) -> None:
    rows = [r for r in (FIXTURES / "healthbench_meta_eval.jsonl").read_text().splitlines() if r]
    tied = json.loads(rows[0]) | {"binary_labels": [True, False]}
    path = tmp_path / "meta.jsonl"
    path.write_text("\n".join([rows[1], json.dumps(tied)]) + "\n")
    with caplog.at_level(logging.WARNING):
        labels = read_labels(path)
    assert len(labels) == 1 and "1 row(s) whose raters split evenly" in caplog.text
    path.write_text(json.dumps(tied) + "\n")
    with pytest.raises(InputError, match="every row was a tie"):
        read_labels(path)


def test_tsv_and_jsonl_scale_labels(tmp_path: Path) -> None:
    tsv = tmp_path / "scale.tsv"
    tsv.write_text("item\tanswer\taxis\tscore\nq1\tsome answer\taccuracy\t4\nq1\tsome answer\tclarity\t2.5\n")
    labels = read_labels(tsv)
    assert [(lab.key, lab.value, lab.kind) for lab in labels] == [("accuracy", 4.0, "scale"),
                                                                  ("clarity", 2.5, "scale")]
    jsonl = tmp_path / "scale.jsonl"
    jsonl.write_text(json.dumps({"item": "q2", "answer": "a", "axis": "completeness", "score": 5,
                                 "prompt": "the question"}) + "\n")
    (lab,) = read_labels(jsonl)
    assert (lab.item, lab.value, lab.prompt, lab.source) == ("q2", 5.0, "the question", f"{jsonl}:1")


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("item,answer,criterion,verdict\nq1,a,c,1\nq2,a,c,maybe\n", 3, "verdict", "expected a verdict"),
    ("item,answer,criterion,verdict\nq1,,c,1\n", 2, "answer", "missing or empty"),
    ("item,answer,verdict\nq1,a,1\n", 2, "criterion", "'criterion' or 'axis'"),
    ("item,answer,axis,score\nq1,a,accuracy,high\n", 2, "score", "expected a number"),
    ("item,answer,criterion\nq1,a,c\n", 2, "verdict", r"'verdict' \(1/0\) or 'score'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                           message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        read_labels(path)
    assert (e.value.file, e.value.line, e.value.field) == (str(path), line, field)


def test_bad_healthbench_rows_and_files(tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "healthbench_meta_eval.jsonl").read_text().splitlines()[0])
    path = tmp_path / "meta.jsonl"
    bad = [row | {"binary_labels": ["yes"]}, row | {"rubric": ""}, {k: v for k, v in row.items()
                                                                   if k not in ("prompt_id", "completion_id")}]
    path.write_text("\n".join(json.dumps(b) for b in bad) + "\nnot json\n")
    with pytest.raises(InputError) as e:
        read_labels(path)
    assert (e.value.line, e.value.field) == (1, "binary_labels")
    assert "and 3 more problems" in str(e.value)
    with pytest.raises(InputError, match=r"unsupported label file type '\.txt'"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(InputError, match="no such file"):
        read_labels(tmp_path / "missing.csv")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"item": "q", "answer": "a", "criterion": "c", "verdict": 1}\n'
                     '{"item": "q", "answer": "a", "axis": "x", "score": 3}\n')
    with pytest.raises(InputError, match="mixes verdict"):
        read_labels(mixed)


def test_which_labels_match_a_tasks_items() -> None:
    labels = read_labels(FIXTURES / "healthbench_meta_eval.jsonl")
    items = [json.loads(line)["prompt_id"] for line in HEALTHBENCH.read_text().splitlines()]
    m = match_labels(labels, items[:2])
    assert len(m.matched) == 3 and [lab.item for lab in m.unmatched] == ["hb-0004"]
    assert m.items_matched == ("hb-0001", "hb-0002") and m.items_without_labels == 0
    assert require_matches(labels, items, "meta.jsonl").items_without_labels == 1  # hb-0003
    with pytest.raises(InputError, match="none of the 4 labels is about an item of healthbench") as e:
        require_matches(labels, ["other-1", "other-2"], "meta.jsonl", task="healthbench")
    assert e.value.file == "meta.jsonl" and "'hb-0001'" in str(e.value) and "'other-1'" in str(e.value)
