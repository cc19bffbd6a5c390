"""The report on hand-made cells (no MLflow): deltas by score type, cost, rendering."""

from __future__ import annotations

import math

import pytest

from biorag.errors import BioragError
from biorag.report.compare import build_report, headline_metric, model_pairs
from biorag.report.render import all_tables, fmt_ci, fmt_p, write_report
from biorag.report.study import Cell, Study, TaskInfo, finetune_seconds
from biorag.scoring.metrics import aggregate
from biorag.types import Prediction

IDS = [f"e{i}" for i in range(10)]


def _cell(arm: str, model: str, family: str, correct: list[int], rouge: list[float], counterpart=None,
          **extra) -> Cell:
    task = "t"
    metrics = {f"{task}/eval_seconds": 2.0, f"{task}/tokens": 100.0, f"{task}/n": 10.0}
    for name, values in (("accuracy", [float(x) for x in correct]), ("rouge1", rouge)):
        v, lo, hi = aggregate(values)
        metrics.update({f"{task}/{name}": v, f"{task}/{name}_ci_low": lo, f"{task}/{name}_ci_high": hi})
    # a corpus-level metric: its value is not the mean of its per-example values
    metrics.update({f"{task}/macro_f1": 0.5, f"{task}/macro_f1_ci_low": 0.3, f"{task}/macro_f1_ci_high": 0.7})
    preds = [Prediction(i, "", None, "", scores={"accuracy": float(c), "rouge1": r, "macro_f1": float(c)})
             for i, c, r in zip(IDS, correct, rouge, strict=True)]
    return Cell(f"{arm}-{model}", arm, model, task, family, counterpart, 0, metrics, preds,
                index_manifest={"build_seconds": 12.5} if arm == "rag" else None,
                adapter_manifest={"results": {"wall_seconds": 300.0, "train_seconds": 250.0}} if arm == "lora" else None,
                **extra)


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
    assert {p.name for p in files.values()} == {"bars.png", "deltas.png", "bars.svg", "deltas.svg", "bars.pdf",
                                                 "deltas.pdf", "results.csv", "deltas.csv", "costs.csv",
                                                 "report.md", "report.html"}
    assert all(p.stat().st_size > 0 for p in files.values())
    assert not list((tmp_path / "r").glob(".*.tmp"))
    titles = [t.title for t in all_tables(report, headline_only=True)]
    assert titles[0].startswith("t: every metric") and "Cost beside quality" in titles
    assert fmt_ci(0.25, 0.1, 0.4, sign=True) == "+0.250 [0.100, 0.400]"
    assert fmt_p(0.0001) == "<0.001" and fmt_p(math.nan) == "-"


# -- issue 37: failed runs, paper figures and tables, the headline, the arms' order ----------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figures_come_as_png_svg_and_pdf_at_the_dpi_asked(study, tmp_path) -> None:
    report = build_report(study)
    low = write_report(report, tmp_path / "low", dpi=60)
    high = write_report(report, tmp_path / "high", dpi=120)
    for stem in ("bars", "deltas"):
        w60, h60 = _png_size((tmp_path / "low" / f"{stem}.png").read_bytes())
        w120, h120 = _png_size((tmp_path / "high" / f"{stem}.png").read_bytes())
        assert (w120, h120) == (2 * w60, 2 * h60)
        svg = (tmp_path / "high" / f"{stem}.svg").read_text()
        assert "<svg" in svg
        assert (tmp_path / "high" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert {"bars_svg", "bars_pdf", "deltas_svg", "deltas_pdf"} <= set(low) and set(low) == set(high)
    # display names, not ids, in the figures (SVG text stays text)
    bars = (tmp_path / "high" / "bars.svg").read_text()
    assert "Accuracy (95% CI)" in bars and "arm" in bars


def test_a_study_without_intervals_draws_bars_without_whiskers(tmp_path) -> None:
    """Cells whose intervals are NaN (nothing to resample) are drawn without whiskers, and a
    study with nothing to draw writes no bar chart: no crash either way."""
    nan = math.nan
    def cell(arm: str, value: float) -> Cell:
        metrics = {"t/accuracy": value, "t/accuracy_ci_low": nan, "t/accuracy_ci_high": nan}
        return Cell(arm, arm, "m", "t", "general", None, 0, metrics, [])

    files = write_report(build_report(Study("exp", "1", "p" * 32, "exp", "base", "sqlite:///x.db", "abc",
                                            [cell("base", 0.4), cell("rag", 0.6)])), tmp_path / "a")
    assert files["bars"].stat().st_size > 0
    files = write_report(build_report(Study("exp", "1", "p" * 32, "exp", "base", "sqlite:///x.db", "abc",
                                            [cell("base", nan), cell("rag", nan)])), tmp_path / "b")
    assert "bars" not in files and (tmp_path / "b" / "report.md").is_file()


def test_latex_writes_booktabs_tables_with_display_names(study, tmp_path) -> None:
    files = write_report(build_report(study), tmp_path / "r", latex=True)
    results = files["results_tex"].read_text()
    assert "\\toprule" in results and "\\midrule" in results and "\\bottomrule" in results
    assert "Accuracy" in results and "ROUGE-1" in results and "Macro-F1" in results
    deltas = files["deltas_tex"].read_text()
    assert "\\toprule" in deltas and "p (Holm)" in deltas and "rag/gen vs base/gen" in deltas
    assert "lora_rag" not in results or "lora\\_rag" in results
    assert not (tmp_path / "plain").exists()
    assert not any(p.suffix == ".tex" for p in write_report(build_report(study), tmp_path / "plain").values())


def test_headline_follows_the_tasks_own_first_listed_metric() -> None:
    ll = {"t/accuracy_ll": 1, "t/accuracy_ll_norm": 1}
    assert headline_metric({**ll, "t/accuracy": 1}, "t", ["accuracy"], "letter") == "accuracy"
    # log-likelihood only: with letters length normalisation changes nothing, so accuracy_ll
    assert headline_metric(ll, "t", ["accuracy"], "letter") == "accuracy_ll"
    assert headline_metric(ll, "t", ["accuracy"], "text") == "accuracy_ll_norm"
    assert headline_metric(ll, "t", (), "letter") == "accuracy_ll"
    assert headline_metric({**ll, "t/macro_f1": 1}, "t", ["macro_f1", "accuracy"]) == "macro_f1"
    assert headline_metric({"t/rouge1": 1, "t/accuracy": 1}, "t", ["bertscore", "rouge1"]) == "rouge1"


def test_headline_of_a_report_and_the_metric_option(study) -> None:
    for c in study.cells:
        c.task_info = TaskInfo(metrics=("rouge1", "accuracy"))
    report = build_report(study)
    assert report.headline == {"t": "rouge1"}
    assert {d.metric for d in report.deltas if d.headline} == {"rouge1"}
    report = build_report(study, metric="macro_f1")
    assert report.headline == {"t": "macro_f1"}
    with pytest.raises(BioragError) as e:
        build_report(study, metric="acuracy")
    assert "acuracy" in str(e.value) and "accuracy, macro_f1, rouge1" in str(e.value)


def test_arms_are_listed_in_the_2x2_order(study) -> None:
    zeros = [0] * 10
    study.cells = [_cell(arm, "gen", "general", zeros, [0.0] * 10)
                   for arm in ("zeta", "lora_rag", "raft", "alpha", "lora", "rag", "base")]
    report = build_report(study)
    quality = all_tables(report)[0]
    assert [row[0].removesuffix(" (baseline)") for row in quality.rows] == [
        "base", "rag", "lora", "lora_rag", "raft", "alpha", "zeta"]
    assert [d.arm for d in report.deltas if d.headline] == ["rag", "lora", "lora_rag", "raft", "alpha", "zeta"]


def test_a_closed_book_or_baseline_arm_with_an_adapter_is_flagged(study) -> None:
    """The packaged arm `base` has adapter: null; a cell of it that ran with an adapter is no
    2x2 cell. Neither is a baseline arm with an adapter. `lora` with its adapter is fine."""
    zeros = [0] * 10
    study.cells = [_cell("base", "gen", "general", zeros, [0.0] * 10, adapter="smollm2-mine"),
                   _cell("lora", "gen", "general", zeros, [0.0] * 10, adapter="smollm2-hpo"),
                   _cell("mine", "gen", "general", zeros, [0.0] * 10, adapter="x")]  # no config: skipped
    warnings = build_report(study).warnings
    assert any(w.startswith("arm base ran with adapter smollm2-mine: its comparison with the fine-tuned "
                            "arms is not the 2x2 it claims") and "base/gen/t" in w for w in warnings), warnings
    assert not any("lora ran with" in w or "arm mine" in w for w in warnings)
    study.baseline = "lora"
    warnings = build_report(study).warnings
    assert any(w.startswith("baseline arm lora ran with adapter smollm2-hpo") for w in warnings), warnings


def test_chance_is_one_over_the_options(study, tmp_path) -> None:
    from biorag.report.labels import chance_of, has_chance, metric_name

    assert chance_of([4, 4, 5, 5]) == pytest.approx((0.25 + 0.25 + 0.2 + 0.2) / 4)
    assert chance_of([], "mcq", 5) == pytest.approx(0.2) and chance_of([], "nli", labels=3) == pytest.approx(1 / 3)
    assert math.isnan(chance_of([], "summarisation"))
    assert has_chance("accuracy_ll_norm") and not has_chance("rouge1")
    assert metric_name("accuracy_ll_norm") == "Accuracy (length-normalised log-likelihood)"
    assert metric_name("retrieval_recall_at_5") == "Recall@5"
    for c in study.cells:
        c.task_info = TaskInfo(metrics=("accuracy",), chance=0.2, description="a made-up task")
    report = build_report(study)
    assert report.chance == {"t": pytest.approx(0.2)}
    svg = write_report(report, tmp_path / "r")["bars_svg"].read_text()
    assert "chance" in svg and "a made-up task" in svg
