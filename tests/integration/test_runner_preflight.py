"""Bad input to `experiment run` fails before anything is logged or loaded."""

from __future__ import annotations

import mlflow
import pytest

from biorag.errors import BioragError
from biorag.experiment.plan import plan
from biorag.experiment.runner import run_experiment


def test_missing_task_file_fails_before_any_run_is_logged(tmp_path) -> None:
    loaded = []

    def loader(cfg, adapter):  # pragma: no cover - must never be called
        loaded.append(cfg.name)
        raise AssertionError("a model was loaded")

    with pytest.raises(BioragError, match=r"mli_test_v1\.jsonl: no such file.*task\.path"):
        run_experiment(
            ["arm=base", "model=fake", "task=hpo-term-mcq,mednli", "task.n=4",
             f"cache_dir={tmp_path / 'c'}", "experiment=preflight"],
            loader=loader,
        )
    assert loaded == []
    # the first cell (hpo-term-mcq) is fine, yet nothing of this invocation reached MLflow
    assert mlflow.MlflowClient().get_experiment_by_name("preflight") is None


def test_dorfner2024_study_plans_the_headline_pairs() -> None:
    experiment, cells, baseline = plan(["study=dorfner2024"])
    assert experiment == "biorag-dorfner2024" and baseline == "base"
    models = {c.model.name: c.model for c in cells}
    pairs = {(m.name, m.counterpart) for m in models.values()}
    assert ("llama3-8b-instruct", "openbiollm-8b") in pairs
    assert ("llama3-70b-instruct", "openbiollm-70b") in pairs
    assert {m.family for m in models.values()} == {"general", "biomedical"}
    for m in models.values():  # every model's counterpart is in the study, of the other family
        assert models[m.counterpart].family != m.family
    tasks = {c.task.name for c in cells}
    assert {"nejm-case-challenge", "jama-clinical-challenge", "mednli", "longhealth"} <= tasks
    # multiple-choice tasks under both protocols, the others once
    settings = {(c.task.name, c.task.protocol) for c in cells}
    assert len(cells) == len(models) * len(settings) and len(settings) == len(tasks) + 3
