"""CLUE through the runner and the report: the fixtures in CLUE's data/ layout, both protocols,
the metrics and tags each cell logs, and the report's levels and quirk table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from statistics import mean

from mlflow.tracking import MlflowClient

from biorag.experiment.runner import run_experiment
from biorag.report.clue_levels import clue_tables
from biorag.report.study import read_study
from biorag.tracking import keys

CLUE = Path(__file__).resolve().parents[1] / "fixtures" / "clue"


def test_clue_tasks_run_under_both_protocols_and_report_levels(tmp_path, monkeypatch) -> None:
    shutil.copytree(CLUE, tmp_path / "data")  # where the task configs look: CLUE's layout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = run_experiment(["arm=base", "model=fake", "task=mednli,medisumqa,longhealth-absent",
                             "task.protocol=clue,clue-compat", f"cache_dir={tmp_path / 'cache'}",
                             "experiment=clue-t"])
    assert sorted(c.name for c in result.cells) == sorted(
        f"base/fake/{t}@{p}" for t in ("mednli", "medisumqa", "longhealth-absent") for p in ("clue", "clue-compat"))

    client = MlflowClient()
    runs = {r.data.tags[keys.TASK] + "@" + r.data.tags[keys.PROTOCOL]: r
            for r in client.search_runs([client.get_experiment_by_name("clue-t").experiment_id])
            if keys.TASK in r.data.tags}
    nli, nli_compat = runs["mednli@clue"], runs["mednli@clue-compat"]
    assert nli.data.metrics["mednli/n"] == 3  # 6 pairs, 3 held aside as shots
    assert "mednli/clue_accuracy" in nli.data.metrics and "mednli/macro_f1" in nli.data.metrics
    assert nli.data.tags[keys.DECODING].startswith("greedy")
    assert "temperature 1.0" in nli_compat.data.tags[keys.DECODING]  # and its seed
    # UMLS-F1 is absent (no scispaCy here), with the reason on the cell; ROUGE is there
    qa = runs["medisumqa@clue"]
    assert "medisumqa/umls_f1" not in qa.data.metrics and "medisumqa/rougeL" in qa.data.metrics
    assert "umls_f1" in json.loads(qa.data.tags[keys.SKIPPED_METRICS])
    assert runs["longhealth-absent@clue"].data.metrics["longhealth-absent/n"] == 4 * 5

    study = read_study("clue-t")
    compat = next(c for c in study.cells if c.task == "mednli" and c.protocol == "clue-compat")
    per = list(compat.scores("clue_accuracy").values())
    assert compat.value("clue_accuracy")[0] == mean([per[0], *per])  # CLUE's first item twice
    tables = {t.title.split(" (")[0]: t for t in clue_tables(study.cells)}
    levels = tables["Benchmark levels"]
    assert {(r[2], r[3]) for r in levels.rows} == {(p, lv) for p in ("clue", "clue-compat")
                                                   for lv in ("Level 1", "Level 2")}
    level2 = next(r for r in levels.rows if r[2] == "clue" and r[3] == "Level 2")
    assert "medisumcode" in level2[6] and "longhealth (2 of 3 settings)" in level2[6]
    quirks = tables["CLUE's quirks, measured"]
    assert {r[0] for r in quirks.rows} == {"mednli", "medisumqa", "longhealth-absent"}
