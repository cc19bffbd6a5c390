"""The judging stage in a run: judges grade the cells after prediction into the cells' own child
runs; a judge added to a finished study judges its cached predictions (nothing is predicted
again, no run is added); a jury logs each judge and their agreement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from biorag.experiment.runner import run_experiment
from biorag.models.fake import FakeGenerator
from tests.helpers.scripted_judge import ScriptedJudge
from tests.integration.test_runner import TASK, _runs, task_index  # noqa: F401  (a fixture)


@pytest.fixture
def judge_files(tmp_path) -> dict[str, Path]:
    model = tmp_path / "judge-model.yaml"
    model.write_text("name: judge-model\nbackend: fake\nfamily: general\nsize: '0'\n")
    out = {}
    for name in ("strict", "lenient"):
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(f"name: {name}\nmodel: {model}\nverdict: loglikelihood\n")
    return out


class Models:
    """The run's loader: the fake model for cells, scripted judges for the judge model."""

    def __init__(self) -> None:
        self.cell_calls = 0
        self.judges: list[ScriptedJudge] = []

    def __call__(self, cfg, adapter):
        if cfg.name == "judge-model":
            # says yes to a claim that names an answer the passages hold ("The answer is ...")
            self.judges.append(ScriptedJudge(yes=("The answer is",)))
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
