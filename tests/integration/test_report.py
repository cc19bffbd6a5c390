"""`biorag report` on a tiny fake-model study: numbers, paired tests, files, artifacts."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient
from tests.helpers.study import ARMS, MODELS, TASKS, N
from typer.testing import CliRunner

from biorag.errors import BioragError
from biorag.report.compare import build_report, check, model_pairs, recompute
from biorag.report.select import resolve_parent
from biorag.report.study import read_study
from biorag.retrieval.evidence import (
    CELL_KEYS,
    EVIDENCE_IN_PROMPT,
    SOURCE_IN_INDEX,
    is_retrieval_metric,
)
from biorag.scoring.metrics import aggregate
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
        answers = {"accuracy", "accuracy_ll", "accuracy_ll_norm"}
        parsing = {"unparsed_rate", "truncated_outputs"}  # of the generated answers
        # closed-book cells log the retrieval measures as NaN, with nothing to recompute them from
        retrieval = set(CELL_KEYS) if cell.arm == "rag" else set()
        assert set(again) == answers | parsing | retrieval
        assert {m for m in cell.quality_metrics() if not is_retrieval_metric(m)} == answers | parsing
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
    # the tasks list `accuracy` (the generated answer); the fake model's letters are not read
    # from a text-option task, so its option ranking is the measure that tells rag from base
    report = build_report(read_study(tiny_study.parent_run_id), metric="accuracy_ll_norm")
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
                 "Biomedical minus general", "Cost beside quality", "rag/fake vs base/fake", "mcnemar",
                 "Retrieval against gold evidence", "Why retrieval helped or not", "evidence not in prompt"):
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
    for name in ("results.csv", "deltas.csv", "costs.csv", "strata.csv"):
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


def test_strata_split_rag_against_base_by_evidence_in_prompt(tiny_study) -> None:
    """Half the hpo items' definitions are in the index: those reach the prompt. The strata
    equal numbers recomputed here from the predictions."""
    report = build_report(read_study(tiny_study.parent_run_id), metric="accuracy_ll_norm")
    cells = {c.name: c for c in report.study.cells}
    rag, base = cells["rag/fake/hpo-term-mcq"], cells["base/fake/hpo-term-mcq"]
    metric = report.headline["hpo-term-mcq"]
    flags = rag.scores(EVIDENCE_IN_PROMPT)
    assert sorted(flags.values()) == [0.0] * (N // 2) + [1.0] * (N // 2)
    got = {s.stratum: s for s in report.strata
           if (s.treatment, s.model, s.task, s.split) == ("rag", "fake", "hpo-term-mcq", EVIDENCE_IN_PROMPT)}
    assert set(got) == {"evidence in prompt", "evidence not in prompt"}
    for name, value in (("evidence in prompt", 1.0), ("evidence not in prompt", 0.0)):
        ids = [i for i, f in flags.items() if f == value]
        s = got[name]
        assert s.n == len(ids) and s.metric == metric
        t = aggregate([rag.scores(metric)[i] for i in ids], seed=rag.seed)
        r = aggregate([base.scores(metric)[i] for i in ids], seed=rag.seed)
        assert (s.treatment_value, s.treatment_lo, s.treatment_hi) == pytest.approx(t)
        assert (s.reference_value, s.reference_lo, s.reference_hi) == pytest.approx(r)
        assert s.delta == pytest.approx(t[0] - r[0])
    assert got["evidence in prompt"].treatment_value == 1.0  # the fake model uses the evidence
    leak = [s for s in report.strata if s.split == SOURCE_IN_INDEX and s.task == "hpo-term-mcq" and s.model == "fake"]
    assert {s.n for s in leak} == {N // 2}


# -- issue 37: a failed latest run, piped tables, formats, the headline option ---------------


def _store_copy(tiny_study, tmp_path, monkeypatch) -> str:
    """The tiny study's store copied, so a test can add runs to it; returns its URI."""
    import shutil

    src = tiny_study.tracking_uri.removeprefix("sqlite:///")
    shutil.copy(src, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _failed_study_run(uri: str, experiment: str) -> str:
    """A newer study run that failed in its first cell, before any result: the parent and
    its cell run FAILED, no metrics, no predictions."""
    from biorag.tracking import keys

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    parent = client.create_run(exp, tags={keys.KIND: keys.KIND_STUDY, keys.RUN_NAME: "tiny:8 cells"},
                               run_name="tiny:8 cells")
    cell = client.create_run(exp, run_name="base/fake/hpo-term-mcq", tags={
        keys.KIND: keys.KIND_CELL, keys.PARENT_RUN_ID: parent.info.run_id, keys.ARM: "base",
        keys.MODEL: "fake", keys.TASK: "hpo-term-mcq"})
    for run in (cell, parent):
        client.set_terminated(run.info.run_id, "FAILED")
    return parent.info.run_id


def test_a_failed_latest_run_is_passed_over_and_named(tiny_study, tmp_path, monkeypatch) -> None:
    from biorag.cli import app

    uri = _store_copy(tiny_study, tmp_path, monkeypatch)
    failed = _failed_study_run(uri, tiny_study.experiment)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "--no-log"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"reporting on study run {tiny_study.parent_run_id}" in text
    assert f"{failed} (tiny:8 cells, FAILED) logged no results" in text
    assert "hpo-term-mcq: every metric" in text
    folders = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert folders == [f"{tiny_study.experiment}-{tiny_study.parent_run_id[:8]}"]
    # asked for by its id, the failed run is an error, and leaves no folder behind
    result = CliRunner().invoke(app, ["report", failed, "--no-log"])
    assert isinstance(result.exception, BioragError) and "has no cell with results" in str(result.exception)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == folders


def test_piped_tables_are_whole_and_every_format_parses(tiny_study, tmp_path) -> None:
    import csv
    import io
    import json

    from biorag.cli import app

    runner = CliRunner()  # not a terminal: what `biorag report | less` gets
    result = runner.invoke(app, ["report", tiny_study.experiment, "--no-log", "-o", str(tmp_path / "t")],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "accuracy_ll_norm" in result.output
    titles = None
    for fmt in ("json", "csv", "md"):
        result = runner.invoke(app, ["report", tiny_study.experiment, "--no-log", "--format", fmt,
                                     "-o", str(tmp_path / fmt)], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "…" not in out and "report of run" not in out  # messages go to stderr
        if fmt == "json":
            tables = json.loads(out)
            titles = [t["title"] for t in tables]
            quality = tables[0]
            assert quality["columns"][:4] == ["arm", "model", "family", "n"]
            assert {r["arm"].removesuffix(" (baseline)") for r in quality["rows"]} == set(ARMS)
            assert any(r["accuracy_ll_norm"].count("[") == 1 for r in quality["rows"])
        elif fmt == "csv":
            blocks = [b for b in out.split("\n\n") if b.strip()]
            assert [b.splitlines()[0].removeprefix("# ") for b in blocks] == titles
            for b in blocks:
                rows = list(csv.reader(io.StringIO(b.split("\n", 1)[1])))
                assert len({len(r) for r in rows}) == 1 and len(rows) > 1
        else:
            assert [line.removeprefix("## ") for line in out.splitlines() if line.startswith("## ")] == titles
            assert "| arm | model | family | n |" in out


def test_metric_option_heads_the_tables_and_names_the_measured_ones(tiny_study, tmp_path) -> None:
    from biorag.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", tiny_study.experiment, "--no-log", "--metric", "accuracy_ll",
                                 "--latex", "--dpi", "80", "-o", str(tmp_path / "r")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "headline metric: accuracy_ll (Accuracy (log-likelihood))" in " ".join(result.output.split())
    assert "\\toprule" in (tmp_path / "r" / "results.tex").read_text()
    assert {"bars.svg", "bars.pdf", "deltas.svg", "deltas.pdf"} <= {p.name for p in (tmp_path / "r").iterdir()}
    result = runner.invoke(app, ["report", tiny_study.experiment, "--no-log", "--metric", "f1",
                                 "-o", str(tmp_path / "bad")])
    assert isinstance(result.exception, BioragError)
    assert "metric 'f1' was not measured" in str(result.exception)
    assert "accuracy, accuracy_ll, accuracy_ll_norm" in str(result.exception)
    assert not (tmp_path / "bad").exists()


def test_the_headline_is_the_tasks_own_metric(tiny_study) -> None:
    """The tiny tasks list `metrics: [accuracy]` and score both ways: the headline is the
    generated answers' accuracy, not the log-likelihood accuracy_ll_norm."""
    study = read_study(tiny_study.parent_run_id)
    assert {c.task_info.metrics for c in study.cells} == {("accuracy",)}
    assert build_report(study).headline == dict.fromkeys(TASKS, "accuracy")
    hpo = next(c for c in study.cells if c.task == "hpo-term-mcq")
    assert hpo.task_info.chance == pytest.approx(1 / 5) and hpo.task_info.description
