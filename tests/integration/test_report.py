"""`biorag report` on a tiny fake-model study: numbers, paired tests, files, artifacts."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient
from tests.helpers.study import ARMS, MODELS, TASKS, N
from typer.testing import CliRunner

from biorag.errors import BioragError
from biorag.report.compare import build_report, check, model_pairs, recompute
from biorag.report.study import read_study, resolve_parent
from biorag.scoring.stats import mcnemar


def test_study_reads_back_every_cell(tiny_study) -> None:
    study = read_study(tiny_study.parent_run_id)
    assert sorted(c.name for c in study.cells) == tiny_study.cell_names
    assert len(study.cells) == len(ARMS) * len(MODELS) * len(TASKS)
    assert study.baseline == "base" and study.experiment == tiny_study.experiment
    assert all(len(c.predictions) == N for c in study.cells)
    assert model_pairs(study.cells) == [("fake", "fake-bio")]
    rag = next(c for c in study.cells if c.arm == "rag")
    assert rag.index_manifest and rag.cost()["index_build_seconds"] > 0
    assert math.isnan(next(c for c in study.cells if c.arm == "base").cost()["index_build_seconds"])


def test_report_numbers_recomputed_from_predictions_equal_the_logged_metrics(tiny_study) -> None:
    study = read_study(tiny_study.parent_run_id)
    for cell in study.cells:
        again = recompute(cell)
        assert set(again) == set(cell.quality_metrics()) == {"accuracy", "accuracy_ll", "accuracy_ll_norm"}
        for metric, (value, lo, hi) in again.items():
            assert (value, lo, hi) == pytest.approx(cell.value(metric), abs=1e-12), (cell.name, metric)
        assert check(cell) == []
    report = build_report(study)
    assert report.problems == []
    logged = {(r.arm, r.model, r.task, r.metric): (r.value, r.lo, r.hi) for r in report.rows}
    client = MlflowClient()
    for cell in study.cells:
        m = client.get_run(cell.run_id).data.metrics
        key = f"{cell.task}/accuracy_ll"
        assert logged[(cell.arm, cell.model, cell.task, "accuracy_ll")] == (
            m[key], m[key + "_ci_low"], m[key + "_ci_high"])


def test_a_tampered_metric_is_reported(tiny_study) -> None:
    cell = read_study(tiny_study.parent_run_id).cells[0]
    cell.metrics[f"{cell.task}/accuracy"] += 0.1
    assert any("accuracy:" in p for p in check(cell))


def test_deltas_against_baseline_and_between_families_are_paired(tiny_study) -> None:
    report = build_report(read_study(tiny_study.parent_run_id))
    heads = [d for d in report.deltas if d.headline]
    arm = [d for d in heads if d.kind == "arm"]
    family = [d for d in heads if d.kind == "family"]
    assert {(d.model, d.task) for d in arm} == {(m, t) for m in MODELS for t in TASKS}
    assert all(d.treatment.startswith("rag/") and d.reference == f"base/{d.model}" for d in arm)
    assert {(d.arm, d.task) for d in family} == {(a, t) for a in ARMS for t in TASKS}
    assert all(d.treatment.endswith("/fake-bio") and d.reference.endswith("/fake") for d in family)
    study = report.study
    by = {c.name: c for c in study.cells}
    for d in arm:
        base = by[f"base/{d.model}/{d.task}"]
        rag = by[f"rag/{d.model}/{d.task}"]
        assert d.delta == pytest.approx(rag.value(d.metric)[0] - base.value(d.metric)[0])
        r, t = base.scores(d.metric), rag.scores(d.metric)
        _, p, b, c, method = mcnemar([r[i] for i in r], [t[i] for i in r])
        assert (d.b, d.c, d.p, d.test) == (b, c, p, method)
        assert d.lo <= d.delta <= d.hi and d.n == N
    assert all(not math.isnan(d.p_holm) and d.p_holm >= d.p for d in heads)
    # the fake model is told the answer by retrieval on hpo items: rag beats base there
    hpo = next(d for d in arm if d.model == "fake" and d.task == "hpo-term-mcq")
    assert hpo.delta > 0 and hpo.c > hpo.b


def test_cli_writes_tables_plots_markdown_html_and_logs_them(tiny_study, tmp_path) -> None:
    from biorag.cli import app

    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", tiny_study.experiment, "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("hpo-term-mcq: every metric", "Deltas against the baseline arm 'base'",
                 "Biomedical minus general", "Cost beside quality", "rag/fake vs base/fake", "mcnemar"):
        assert text in result.output, text
    for name in ("bars.png", "deltas.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "http://" not in html and "https://" not in html and " src='bars.png'" not in html
    assert "rag/fake-bio vs rag/fake" in html
    md = (out / "report.md").read_text()
    assert "![bars.png](bars.png)" in md and "| arm | model | family | n |" in md
    for name in ("results.csv", "deltas.csv", "costs.csv"):
        assert len((out / name).read_text().splitlines()) > 1
    logged = {a.path for a in MlflowClient().list_artifacts(tiny_study.parent_run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/bars.png", "report/deltas.png"} <= logged


def test_default_output_folder_and_no_log(tiny_study, tmp_path, monkeypatch) -> None:
    from biorag.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "--no-log"])  # the latest study run
    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / f"{tiny_study.experiment}-{tiny_study.parent_run_id[:8]}"
    assert (folder / "report.html").stat().st_size > 0


def test_targets_resolve_to_the_parent_run(tiny_study) -> None:
    pid = tiny_study.parent_run_id
    assert resolve_parent(None).run_id == pid
    assert resolve_parent(tiny_study.experiment).run_id == pid
    child = read_study(pid).cells[0].run_id
    assert resolve_parent(child).run_id == pid
    with pytest.raises(BioragError, match="Did you mean 'tiny-study'"):
        resolve_parent("tiny-studyy")
    with pytest.raises(BioragError, match="no run"):
        resolve_parent("0" * 32)


def test_no_study_runs_says_how_to_make_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(BioragError, match="biorag experiment run study="):
        read_study(None)
