"""Stopping a run: SIGTERM is handled as Ctrl-C is; progress and run names a person reads."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from biorag.experiment.runner import run_experiment

RUN = ["experiment", "run", "arm=base", "model=fake", "task=hpo-term-mcq", "task.n=40",
       "task.scoring=loglikelihood", "batch_size=2", "model.options.delay_s=0.4"]


def _runs(uri: str) -> list:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_sigterm_marks_the_runs_killed_keeps_finished_steps_and_prints_the_resume_line(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "BIORAG_CACHE_DIR": str(tmp_path / "cache"),
           "BIORAG_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "biorag", *RUN], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cached = tmp_path / "cache" / "predictions"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(cached.glob("*.jsonl")) if cached.exists() else []
        if files and len(files[0].read_text().splitlines()) >= 2:  # a step is kept
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    runs = _runs(uri)
    assert len(runs) == 2  # the parent and its one cell
    assert {r.info.status for r in runs} == {"KILLED"}
    kept = len(next(cached.glob("*.jsonl")).read_text().splitlines())
    assert 2 <= kept < 40


def test_runs_are_named_and_cells_counted(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="biorag.experiment.runner")
    import mlflow

    from biorag.indexing.build import build_index, load_build_config

    index = build_index(load_build_config(["corpus=sample", "name=snippets", f"root={tmp_path}"])).path
    over = ["arm=base,rag", "model=fake", "task=hpo-term-mcq", "task.n=2", "task.scoring=loglikelihood",
            "arm.retriever.mode=bm25", f"arm.retriever.index={index}", f"cache_dir={tmp_path / 'cache'}"]

    first = run_experiment(over)
    assert mlflow.get_run(first.parent_run_id).info.run_name == "base,rag x fake x hpo-term-mcq"
    assert "cell 1 of 2: base/fake/hpo-term-mcq" in caplog.text
    assert "cell 2 of 2: rag/fake/hpo-term-mcq (about" in caplog.text  # the time left, once known
    assert "arm.retriever.mode=bm25 applies to rag; not to base (no retriever)" in caplog.text
    named = run_experiment([*over, "run_name=my pilot"])
    assert mlflow.get_run(named.parent_run_id).info.run_name == "my pilot"
