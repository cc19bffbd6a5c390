"""Fault injection at every change a job makes to its files (tests/helpers/faults.py): a
SIGKILL before each write, rename and unlink of a build's, a fine-tune's and an experiment
cell's finish, then the same job again, must end with the files a clean run writes, and
leave nothing temporary (issue 39)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.faults import FULL_ENV, Outcome, distinct, enospc_sweep, finish, kill_sweep

# the default suite sweeps the flat build and the LoRA fine-tune (about 90 s); the others, and
# every point rather than one of each shape, with $BIORAG_FAULT_SWEEP=finish (or =all)
longer = pytest.mark.skipif(not os.environ.get(FULL_ENV), reason=f"a longer sweep: set {FULL_ENV}=finish")
TIMINGS = {"created_at", "build_seconds", "embed_seconds", "chunks_per_second"}


def _corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "notes.jsonl"
    path.write_text("".join(json.dumps({"id": f"n{i}", "title": f"note {i}", "text": f"Patient {i} has fever {i % 7}."})
                            + "\n" for i in range(n)))
    return path


def _build_job(overrides: list[str]) -> str:
    return ("from biorag.indexing.build import build_index, load_build_config\n"
            f"build_index(load_build_config({overrides!r} + ['root=' + __import__('os').getcwd() + '/indexes']))\n")


def _index_snapshot(name: str):
    def snapshot(root: Path) -> dict[str, Any]:
        folder = root / "indexes" / name
        out: dict[str, Any] = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        manifest = json.loads(out.pop("manifest.json"))
        for key in TIMINGS:
            manifest.pop(key, None)
        manifest["counts"].pop("resumed_shards", None)  # a resumed build says so
        out["manifest.json"] = manifest
        if "index.faiss" in out:  # an on-disk index names its lists' file by its full path
            out["index.faiss"] = out["index.faiss"].replace(str(root.resolve()).encode(), b"ROOT")
        out["[index root]"] = sorted(p.name for p in (root / "indexes").iterdir())
        return out
    return snapshot


# a build's finish: from the assembly on (its first write that is not a shard or the state)
BUILD_FINISH = distinct(finish(lambda e: any(f in e for f in ("index.faiss", "trained.faiss", "/ivf/"))))


def _report(what: str, sweep) -> None:
    print(f"\n{what}: {len(sweep.events)} events, faulted at {len(sweep.points)}:",
          *(f"{k:3d} {sweep.events[k - 1]}" for k in sweep.points), sep="\n  ")


def test_a_flat_build_killed_at_every_event_of_its_finish_ends_as_a_clean_build(tmp_path: Path) -> None:
    """With BM25 (its eight files) when $BIORAG_FAULT_SWEEP is set; the default suite's sweep
    leaves it out for time (its writes are in the default ENOSPC sweep)."""
    corpus = _corpus(tmp_path / "data", 20)
    bm25 = [] if os.environ.get(FULL_ENV) else ["index.bm25=false"]
    job = _build_job(["corpus=sample", f"corpus.path={corpus}", "shard_size=8", "name=ix", *bm25])
    sweep = kill_sweep(job, tmp_path / "job", _index_snapshot("ix"), BUILD_FINISH)
    _report("flat build", sweep)
    sweep.check()
    assert len(sweep.points) >= 12


@longer
def test_an_on_disk_ivfpq_build_killed_at_every_event_of_its_finish_ends_as_a_clean_build(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "data", 100)
    job = _build_job(["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", "shard_size=40", "index=ivfpq",
                      "index.nlist=4", "index.nprobe=4", "index.pq_m=8", "index.pq_nbits=4", "index.on_disk=true",
                      "name=pq"])
    sweep = kill_sweep(job, tmp_path / "job", _index_snapshot("pq"), BUILD_FINISH)
    _report("on-disk IVF-PQ build", sweep)
    sweep.check()
    assert any(sweep.events[k - 1].startswith("open") and "index.ivfdata" in sweep.events[k - 1]
               for k in sweep.points)  # the merge (biorag.indexing.merge) opens its output once


# a fine-tune's finish: from the adapter's save on (training is over)
FINETUNE_FINISH = distinct(finish(lambda e: "adapter/" in e and "checkpoint" not in e))


def _to_the_swap(events: list[str]) -> list[int]:
    """The default suite's LoRA points: the finish's, from the adapter's save to just after
    its swap (the window where a kill left a RUNNING run or a stale partial); the cleanup's
    rmtree after it with $BIORAG_FAULT_SWEEP set."""
    picked = FINETUNE_FINISH(events)
    if os.environ.get(FULL_ENV):
        return picked
    swap = next(k for k, e in enumerate(events, 1) if e.startswith("rename") and e.endswith("-> adapters/tiny-notes"))
    return [k for k in picked if k <= swap + 1]


RUN_TIMINGS = {"train_seconds", "wall_seconds", "wall_seconds_this_session", "train_seconds_this_session",
               "tokens_per_second", "peak_memory_mb", "resumed_from_step", "tokens_this_session"}


def _finetune_job(tiny: Path, corpus_yaml: Path) -> str:
    return f"""
import os
from biorag.contamination import AuditSettings
from biorag.corpora.training import DataConfig
from biorag.finetune.config import FinetuneConfig, LoraSettings, TrainSettings
from biorag.finetune.run import run_finetune
from biorag.models.config import ModelConfig
run_finetune(FinetuneConfig(
    model=ModelConfig(name="tiny", id={str(tiny)!r}),
    data=DataConfig(name="notes", corpora=[{str(corpus_yaml)!r}]),
    name="tiny-notes", output_dir=os.getcwd() + "/adapters", experiment="ft-faults",
    lora=LoraSettings(r=4, alpha=8), audit=AuditSettings(tasks=[]),
    train=TrainSettings(seq_len=32, batch_size=2, max_steps=4, save_steps=2, learning_rate=5e-3,
                        eval_fraction=0.1)))
"""


def _adapter_snapshot(root: Path, name: str = "tiny-notes") -> dict[str, Any]:
    folder = root / "adapters" / name
    out: dict[str, Any] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    manifest = json.loads(out.pop("manifest.json"))
    manifest.pop("created_at")
    manifest["mlflow"].pop("run_id")
    for key in RUN_TIMINGS:
        manifest["results"].pop(key)
    if manifest.get("contamination"):
        manifest["contamination"].pop("seconds", None)
    out["manifest.json"] = manifest
    out["[adapters]"] = sorted(p.name for p in (root / "adapters").iterdir())
    return out


def _run_finished(root: Path, rerun, name: str = "tiny-notes") -> str | None:
    """The run the adapter names is FINISHED and holds the adapter."""
    from mlflow.tracking import MlflowClient

    manifest = json.loads((root / "adapters" / name / "manifest.json").read_text())
    client = MlflowClient(tracking_uri=manifest["mlflow"]["tracking_uri"])
    run = client.get_run(manifest["mlflow"]["run_id"])
    files = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    if run.info.status != "FINISHED" or "adapter/adapter_model.safetensors" not in files:
        return f"its MLflow run is {run.info.status} with artifacts {sorted(files)}"
    return None


def _finetune_data(data: Path, monkeypatch) -> tuple[Path, Path]:
    from tests.helpers.tiny_model import SENTENCES, build_tiny_model

    tiny = build_tiny_model(data / "tiny")
    rows = data / "notes.jsonl"
    rows.write_text("".join(json.dumps({"id": f"n{i}", "text": f"{SENTENCES[i % len(SENTENCES)]} Note {i}."}) + "\n"
                            for i in range(40)))
    corpus_yaml = data / "notes.yaml"
    corpus_yaml.write_text(f"name: notes\nloader: jsonl\npath: {rows}\ntitle_field: null\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}")  # one store: made once
    return tiny, corpus_yaml


def test_a_lora_fine_tune_killed_at_every_event_of_its_finish_ends_as_a_clean_one(tmp_path: Path, monkeypatch) -> None:
    tiny, corpus_yaml = _finetune_data(tmp_path / "data", monkeypatch)
    sweep = kill_sweep(_finetune_job(tiny, corpus_yaml), tmp_path / "job", _adapter_snapshot, _to_the_swap,
                       check_rerun=_run_finished)
    _report("LoRA fine-tune", sweep)
    sweep.check()
    assert len(sweep.points) >= 8 and any("mlruns/" in sweep.events[k - 1] for k in sweep.points)


CELL_TIMINGS = ("seconds", "latency", "time", "per_second", "created", "_per_s")


def _cell_job(index: Path, n: int) -> str:
    overrides = ["arm=rag", "model=fake", "task=hpo-term-mcq", f"task.n={n}", "task.scoring=loglikelihood",
                 f"arm.retriever.index={index}", "experiment=cell-faults", "batch_size=4"]
    return f"""
import json, os
from pathlib import Path
from biorag.experiment.runner import run_experiment
result = run_experiment({overrides!r} + ["cache_dir=" + os.getcwd() + "/cache"])
metrics = {{c.name: c.metrics for c in result.cells}}
Path(os.getcwd()).with_name("cell-metrics.json").write_text(json.dumps(metrics))  # outside the job's root
"""


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items()
                if not (k.endswith("_s") or any(t in k for t in CELL_TIMINGS))}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _cell_snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted((root / "cache").rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix == ".jsonl":
            out[str(p.relative_to(root))] = sorted(json.dumps(_untimed(json.loads(line)), sort_keys=True)
                                                   for line in p.read_text().splitlines())
    metrics = json.loads(root.with_name("cell-metrics.json").read_text())
    out["metrics"] = _untimed(metrics)
    return out


CELL_POINTS = distinct(finish(lambda e: True))  # a cell is all finish: every event


@longer
def test_an_experiment_cell_killed_at_every_event_ends_with_a_clean_runs_predictions(tmp_path: Path, monkeypatch) -> None:
    index = _cell_setup(tmp_path / "data", monkeypatch)
    sweep = kill_sweep(_cell_job(index, 8), tmp_path / "job", _cell_snapshot, CELL_POINTS)
    _report("experiment cell", sweep)
    sweep.check()


def _disk_full(outcome: Outcome, event: str) -> str | None:
    """A full disk at a biorag write is DiskFullError naming the folder; inside MLflow's store,
    a message that says the write was MLflow's."""
    path = event.split(" ", 1)[1]
    if outcome.exitcode == 0:
        return None if ".lock" in path else "finished as if nothing had failed"  # a lock's note may fail
    if path.startswith("mlruns"):
        return None if "MLflow" in (outcome.message or "") else f"{outcome.error}: {outcome.message}"
    folders = [p.name for p in Path(path).parents if p.name]  # the folder, or one holding it
    if outcome.error != "DiskFullError" or not any(f"{f}:" in (outcome.message or "") for f in folders):
        return f"{outcome.error}: {outcome.message}\n{outcome.traceback}"
    return None


def test_a_flat_build_with_bm25_out_of_space_at_each_write_says_so_and_resumes(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "data", 20)
    job = _build_job(["corpus=sample", f"corpus.path={corpus}", "shard_size=8", "name=ix"])
    sweep = enospc_sweep(job, tmp_path / "job", _index_snapshot("ix"), _disk_full, BUILD_FINISH)
    _report("flat build, ENOSPC", sweep)
    sweep.check()
    assert len(sweep.points) >= 5


@longer
def test_a_lora_fine_tune_out_of_space_at_each_write_says_so_and_resumes(tmp_path: Path, monkeypatch) -> None:
    tiny, corpus_yaml = _finetune_data(tmp_path / "data", monkeypatch)
    sweep = enospc_sweep(_finetune_job(tiny, corpus_yaml), tmp_path / "job", _adapter_snapshot, _disk_full,
                         FINETUNE_FINISH)
    _report("LoRA fine-tune, ENOSPC", sweep)
    sweep.check()


@longer
def test_an_on_disk_ivfpq_build_out_of_space_at_each_write_says_so_and_resumes(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "data", 100)
    job = _build_job(["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", "shard_size=40", "index=ivfpq",
                      "index.nlist=4", "index.nprobe=4", "index.pq_m=8", "index.pq_nbits=4", "index.on_disk=true",
                      "name=pq"])
    sweep = enospc_sweep(job, tmp_path / "job", _index_snapshot("pq"), _disk_full, BUILD_FINISH)
    _report("on-disk IVF-PQ build, ENOSPC", sweep)
    sweep.check()


def _cell_setup(data: Path, monkeypatch, n: int = 8) -> Path:
    from biorag.indexing.build import build_index, load_build_config
    from biorag.tasks import load_examples, load_task_config

    data.mkdir(parents=True)
    corpus = data / "defs.jsonl"
    corpus.write_text("".join(
        json.dumps({"id": e.evidence[0], "title": e.options["ABCDEFGHIJ".index(e.gold)], "text": e.input}) + "\n"
        for e in load_examples(load_task_config("hpo-term-mcq", [f"n={n}"]))))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}")
    return build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "name=defs", "index.bm25=false",
                                          f"root={data / 'indexes'}"])).path


@longer
def test_an_experiment_cell_out_of_space_at_each_write_says_so_and_resumes(tmp_path: Path, monkeypatch) -> None:
    index = _cell_setup(tmp_path / "data", monkeypatch)
    sweep = enospc_sweep(_cell_job(index, 8), tmp_path / "job", _cell_snapshot, _disk_full, CELL_POINTS)
    _report("experiment cell, ENOSPC", sweep)
    sweep.check()


def _raft_job(tiny: Path, index: Path) -> str:
    return f"""
import os
from biorag.contamination import AuditSettings
from biorag.corpora.training import DataConfig, RaftSettings
from biorag.finetune.config import FinetuneConfig, LoraSettings, TrainSettings
from biorag.finetune.run import run_finetune
from biorag.models.config import ModelConfig
raft = RaftSettings(tasks=["hpo-term-mcq"], arm="rag", n=6, p_gold=0.8, depth=10, train=["task.seed=1"],
                    exclude=["task.n=4"], overrides=["arm.retriever.index={index}", "arm.retriever.k=3",
                                                     "task.scoring=loglikelihood"])
run_finetune(FinetuneConfig(
    model=ModelConfig(name="tiny", id={str(tiny)!r}),
    data=DataConfig(name="raft-tiny", objective="raft", raft=raft),
    name="tiny-raft", output_dir=os.getcwd() + "/adapters", experiment="raft-faults",
    lora=LoraSettings(r=4, alpha=8), audit=AuditSettings(),
    train=TrainSettings(seq_len=2048, batch_size=2, max_steps=2, save_steps=1, eval_fraction=0.0)))
"""


@longer
def test_a_raft_fine_tune_killed_at_every_event_of_its_finish_ends_as_a_clean_one(tmp_path: Path, monkeypatch) -> None:
    from tests.helpers.tiny_model import build_tiny_model

    index = _cell_setup(tmp_path / "data", monkeypatch, n=30)
    tiny = build_tiny_model(tmp_path / "data" / "tiny")
    sweep = kill_sweep(_raft_job(tiny, index), tmp_path / "job", lambda r: _adapter_snapshot(r, "tiny-raft"),
                       FINETUNE_FINISH, check_rerun=lambda r, o: _run_finished(r, o, "tiny-raft"))
    _report("RAFT fine-tune", sweep)
    sweep.check()


@longer
def test_a_raft_fine_tune_out_of_space_at_each_write_says_so_and_resumes(tmp_path: Path, monkeypatch) -> None:
    from tests.helpers.tiny_model import build_tiny_model

    index = _cell_setup(tmp_path / "data", monkeypatch, n=30)
    tiny = build_tiny_model(tmp_path / "data" / "tiny")
    sweep = enospc_sweep(_raft_job(tiny, index), tmp_path / "job", lambda r: _adapter_snapshot(r, "tiny-raft"),
                         _disk_full, FINETUNE_FINISH)
    _report("RAFT fine-tune, ENOSPC", sweep)
    sweep.check()
