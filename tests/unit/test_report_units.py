"""The report on hand-made cells (no MLflow): deltas by score type, cost, rendering."""

from __future__ import annotations

import math

import pytest

from biorag.report.compare import build_report, headline_metric, model_pairs
from biorag.report.render import all_tables, fmt_ci, fmt_p, write_report
from biorag.report.study import Cell, Study, finetune_seconds
from biorag.scoring.metrics import aggregate

IDS = [f"e{i}" for i in range(10)]


def _cell(arm: str, model: str, family: str, correct: list[int], rouge: list[float], counterpart=None) -> Cell:
    task = "t"
    metrics = {f"{task}/eval_seconds": 2.0, f"{task}/tokens": 100.0, f"{task}/n": 10.0}
    for name, values in (("accuracy", [float(x) for x in correct]), ("rouge1", rouge)):
        v, lo, hi = aggregate(values)
        metrics.update({f"{task}/{name}": v, f"{task}/{name}_ci_low": lo, f"{task}/{name}_ci_high": hi})
    # a corpus-level metric: its value is not the mean of its per-example values
    metrics.update({f"{task}/macro_f1": 0.5, f"{task}/macro_f1_ci_low": 0.3, f"{task}/macro_f1_ci_high": 0.7})
    preds = [{"example_id": i, "scores": {"accuracy": float(c), "rouge1": r, "macro_f1": float(c)}}
             for i, c, r in zip(IDS, correct, rouge, strict=True)]
    return Cell(f"{arm}-{model}", arm, model, task, family, counterpart, 0, metrics, preds,
                index_manifest={"build_seconds": 12.5} if arm == "rag" else None,
                adapter_manifest={"results": {"wall_seconds": 300.0, "train_seconds": 250.0}} if arm == "lora" else None)


@pytest.fixture
def study() -> Study:
    base = [1, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    rag = [1, 1, 1, 1, 1, 0, 1, 1, 1, 0]
    r_base = [0.1 * i for i in range(10)]
    cells = [
        _cell("base", "gen", "general", base, r_base, counterpart="bio"),
        _cell("rag", "gen", "general", rag, [x + 0.05 for x in r_base], counterpart="bio"),
        _cell("lora", "gen", "general", base, r_base, counterpart="bio"),
        _cell("base", "bio", "biomedical", rag, r_base),
    ]
    return Study("exp", "1", "p" * 32, "exp:4 cells", "base", "sqlite:///x.db", "abc", cells)


def test_deltas_use_mcnemar_for_accuracy_and_bootstrap_for_rouge(study) -> None:
    report = build_report(study)
    d = {(x.kind, x.treatment, x.metric): x for x in report.deltas}
    acc = d[("arm", "rag/gen", "accuracy")]
    assert acc.test == "mcnemar-exact" and (acc.b, acc.c) == (0, 5)
    assert acc.p == pytest.approx(2 / 32) and acc.delta == pytest.approx(0.5)
    rouge = d[("arm", "rag/gen", "rouge1")]
    assert rouge.test == "paired-bootstrap" and rouge.delta == pytest.approx(0.05)
    assert rouge.lo == pytest.approx(0.05) and rouge.p == pytest.approx(1 / 1001)
    same = d[("arm", "lora/gen", "accuracy")]
    assert same.delta == 0 and same.p == 1.0
    f1 = d[("arm", "rag/gen", "macro_f1")]
    assert f1.delta == 0 and math.isnan(f1.lo)  # corpus-level: the logged values' difference, no CI
    fam = d[("family", "base/bio", "accuracy")]
    assert fam.reference == "base/gen" and fam.c == 5
    assert not any(x.treatment == "base/gen" for x in report.deltas)  # the baseline is no treatment
    assert report.headline == {"t": "accuracy"} and report.problems == []


def test_cost_reads_manifests(study) -> None:
    costs = {(c["arm"], c["model"]): c for c in build_report(study).costs}
    assert costs[("rag", "gen")]["index_build_seconds"] == 12.5
    assert costs[("lora", "gen")]["finetune_seconds"] == 300.0
    assert math.isnan(costs[("base", "gen")]["finetune_seconds"])
    assert finetune_seconds({"train_seconds": 7}) == 7.0 and math.isnan(finetune_seconds({}))


def test_pairs_and_headline() -> None:
    cells = [_cell("base", "g", "general", [1] * 10, [0.0] * 10, counterpart="b"),
             _cell("base", "b", "biomedical", [1] * 10, [0.0] * 10),
             _cell("base", "x", "general", [1] * 10, [0.0] * 10, counterpart="missing")]
    assert model_pairs(cells) == [("g", "b")]
    assert headline_metric({"t/accuracy_ll": 1, "t/accuracy": 1, "t/accuracy_ll_norm": 1}, "t") == "accuracy_ll_norm"
    assert headline_metric({"t/rouge1": 1, "t/rouge1_ci_low": 0}, "t") == "rouge1"


def test_render_writes_every_file(study, tmp_path) -> None:
    report = build_report(study)
    files = write_report(report, tmp_path / "r")
    assert {p.name for p in files.values()} == {"bars.png", "deltas.png", "results.csv", "deltas.csv",
                                                 "costs.csv", "report.md", "report.html"}
    assert all(p.stat().st_size > 0 for p in files.values())
    assert not list((tmp_path / "r").glob(".*.tmp"))
    titles = [t.title for t in all_tables(report, headline_only=True)]
    assert titles[0].startswith("t: every metric") and "Cost beside quality" in titles
    assert fmt_ci(0.25, 0.1, 0.4, sign=True) == "+0.250 [0.100, 0.400]"
    assert fmt_p(0.0001) == "<0.001" and fmt_p(math.nan) == "-"
