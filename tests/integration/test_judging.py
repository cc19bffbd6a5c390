"""The judging stage in a run: judges grade the cells after prediction into the cells' own child
runs; a judge added to a finished study judges its cached predictions (nothing is predicted
again, no run is added); a jury logs each judge and their agreement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.helpers.scripted_judge import ScriptedJudge
from tests.integration.test_runner import TASK, _runs, task_index  # noqa: F401  (a fixture)

from biorag.experiment.runner import run_experiment
from biorag.models.fake import FakeGenerator


@pytest.fixture
def judge_files(tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("strict", "lenient", "first"):
        model = tmp_path / f"judge-{name}.yaml"
        model.write_text(f"name: judge-{name}\nbackend: fake\nfamily: general\nsize: '0'\n")
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(f"name: {name}\nmodel: {model}\nverdict: loglikelihood\n")
    return out


class Models:
    """The run's loader: the fake model for cells, scripted judges for the judge model."""

    def __init__(self) -> None:
        self.cell_calls = 0
        self.judges: list[ScriptedJudge] = []

    def __call__(self, cfg, adapter):
        if cfg.name.startswith("judge-"):
            # strict says yes to a claim that names an answer ("The answer is ..."), lenient to
            # nothing, first prefers whichever answer it is shown first
            kind = cfg.name.removeprefix("judge-")
            self.judges.append(ScriptedJudge(yes=("The answer is",) if kind == "strict" else (),
                                             position_biased=kind == "first"))
            return self.judges[-1]
        gen = FakeGenerator.from_config(cfg, adapter)
        real = gen.loglikelihood

        def counted(requests):
            self.cell_calls += len(requests)
            return real(requests)
        gen.loglikelihood = counted
        return gen


def _overrides(index, tmp_path, *extra):
    return ["arm=base,rag", "model=fake", *TASK, f"arm.retriever.index={index}",
            f"cache_dir={tmp_path / 'cache'}", "experiment=j", *extra]


def test_a_judge_added_to_a_finished_run_grades_its_cached_predictions(task_index, tmp_path, judge_files):  # noqa: F811
    models = Models()
    run_experiment(_overrides(task_index, tmp_path), loader=models)
    predicted = models.cell_calls
    assert predicted > 0
    result = run_experiment(_overrides(task_index, tmp_path, f"judges=[{judge_files['strict']}]"), loader=models)
    assert models.cell_calls == predicted  # nothing predicted again
    parents, children = _runs("j")
    assert len(parents) == 1 and len(children) == 2  # the same runs
    base, rag = sorted(children, key=lambda r: r.data.tags["arm"])
    key = "hpo-term-mcq/answer_supported"
    assert math.isnan(base.data.metrics[key]) and rag.data.metrics[key] == 1.0
    assert rag.data.metrics["hpo-term-mcq/judge_questions"] == 12
    assert rag.data.params["judge.strict.verdict"] == "loglikelihood"
    assert "never checked" in rag.data.tags["judge.strict.check"]
    arts = {a.path for a in MlflowClient().list_artifacts(rag.info.run_id)}
    assert "judgements.json" in arts
    rows = [json.loads(x) for x in Path(MlflowClient().download_artifacts(rag.info.run_id, "predictions.jsonl",
                                                                          str(tmp_path))).read_text().splitlines()]
    assert all(r["scores"]["answer_supported"] == 1.0 for r in rows)  # per item, for paired tests
    cell = next(c for c in result.cells if c.arm == "rag")
    assert cell.metrics[key] == 1.0 and key not in next(c for c in result.cells if c.arm == "base").metrics
    # judged again: every verdict from the cache
    asked = sum(j.calls for j in models.judges)
    run_experiment(_overrides(task_index, tmp_path, f"judges=[{judge_files['strict']}]"), loader=models)
    assert sum(j.calls for j in models.judges) == asked


def test_a_jury_logs_each_judge_their_agreement_and_the_report_and_arena_show_them(task_index, tmp_path,  # noqa: F811
                                                                                   judge_files):
    from biorag.report.arena import run_arena
    from biorag.report.compare import build_report
    from biorag.report.render import all_tables
    from biorag.report.study import read_study

    models = Models()
    run_experiment(_overrides(task_index, tmp_path, f"judges=[{judge_files['strict']},{judge_files['lenient']}]"),
                   loader=models)
    _, children = _runs("j")
    rag = next(r for r in children if r.data.tags["arm"] == "rag").data
    assert rag.metrics["hpo-term-mcq/answer_supported.strict"] == 1.0
    assert rag.metrics["hpo-term-mcq/answer_supported.lenient"] == 0.0
    # one yes and one no on every claim: the jury has no majority, and no item a verdict
    assert math.isnan(rag.metrics["hpo-term-mcq/answer_supported"])
    agreement = json.loads(rag.tags["judge.agreement.binary"])
    assert agreement["n_units"] == 12 and agreement["kappa"]["lenient|strict"] == 0.0
    assert rag.tags["judges"] == "strict,lenient"

    _, name, groups = run_arena(str(judge_files["first"]), "j", loader=models)
    stats = groups[0]["stats"]
    assert name == "arena-first.json" and stats["n"] == {"base|rag": 12}
    assert stats["tie_rate"] == {"base|rag": 1.0}  # a judge that prefers what it sees first: all ties
    titles = [t.title for t in all_tables(build_report(read_study("j")))]
    assert any(t.startswith("pairwise arena (first)") for t in titles)
    assert any(t.startswith("Judges:") for t in titles)


def test_an_unknown_or_unreachable_judge_stops_the_run_before_any_prediction(task_index, tmp_path):  # noqa: F811
    from biorag.errors import BioragError

    models = Models()
    with pytest.raises(BioragError, match="smolm2"):
        run_experiment(_overrides(task_index, tmp_path, "judges=[smolm2]"), loader=models)
    dead = tmp_path / "dead.yaml"
    dead.write_text("name: dead\nmodel: openai-compatible\nverdict: generate\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        with pytest.raises(BioragError, match=r"127\.0\.0\.1:9"):
            run_experiment(_overrides(task_index, tmp_path, f"judges=[{dead}]"), loader=models)
    assert models.cell_calls == 0 and not (tmp_path / "cache").exists()


def test_judge_check_prints_agreement_keeps_it_and_refuses_labels_of_other_items(tmp_path, judge_files,
                                                                                 monkeypatch):
    from typer.testing import CliRunner

    from biorag.cli import app
    from biorag.judges.checks import load_check

    fixtures = Path(__file__).parents[1] / "fixtures"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIORAG_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["judge", "check", str(judge_files["strict"]), "--labels",
                                      str(fixtures / "judges" / "labels.csv"), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "kappa" in result.output and "labels judged" in result.output
    kept = load_check(tmp_path / "cache", "strict")
    assert kept["n"] == 12 and kept["labels_sha256"] and "kappa" in kept["agreement"]
    other = CliRunner().invoke(app, ["judge", "check", str(judge_files["strict"]), "task.n=4", "--task",
                                     "hpo-term-mcq", "--labels", str(fixtures / "judges" / "labels.csv")])
    assert other.exit_code != 0 and "labels.csv" in str(other.exception) and "match" in str(other.exception)
