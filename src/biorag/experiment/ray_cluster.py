"""Ray for `launcher=ray`: the cluster (joined or started), what each cell asks of it (GPUs
from its model config, item shards), the checks before a study starts on it (a tracking
store every machine reaches, folders every node sees), and `validate`'s view of it."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.experiment.arms import LauncherConfig, RunConfig, cell_name
from biorag.models.config import ModelConfig
from biorag.tracking import keys

# -- what a cell asks for -------------------------------------------------------------------


def cell_resources(model: ModelConfig, cluster_has_gpus: bool) -> tuple[float, float, str]:
    """(CPUs, GPUs, why) that one replica of `model` asks Ray for: vllm tensor x pipeline
    parallel size GPUs, hf (or gguf) on a GPU one, fake and openai none."""
    device = model.device
    gpu = device.startswith("cuda") or (device == "auto" and cluster_has_gpus)
    if model.backend == "vllm" and gpu:
        tp = int(model.options.get("tensor_parallel_size", 1))
        pp = int(model.options.get("pipeline_parallel_size", 1))
        return 1, tp * pp, f"vllm: tensor {tp} x pipeline {pp}"
    if model.backend in ("hf", "gguf") and gpu:
        return 1, 1, f"{model.backend} on a GPU"
    return 1, 0, f"{model.backend}: CPU only"


def cell_shards(launcher: LauncherConfig, model: ModelConfig, items: int) -> tuple[int, str]:
    """How many item shards (replicas) a cell of `items` items is cut into, and why."""
    dp = int(model.options.get("data_parallel_size", 1)) if model.backend == "vllm" else 1
    above = launcher.shard_above == 0 or items > launcher.shard_above
    if launcher.shards > 1 and above:
        k, why = launcher.shards, "launcher.shards" + (f" (wins over data_parallel_size={dp})" if dp > 1 else "")
    elif launcher.shards == 1 and launcher.shard_above and items > launcher.shard_above:
        k, why = math.ceil(items / launcher.shard_above), f"launcher.shard_above={launcher.shard_above}"
    elif dp > 1:
        k, why = dp, f"vllm data_parallel_size={dp}"
    else:
        return 1, "none"
    return max(1, min(k, items)), why


def shard_bounds(items: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) item ranges, sizes differing by at most one."""
    cuts = [round(i * items / shards) for i in range(shards + 1)]
    return list(itertools.pairwise(cuts))


# -- the cluster ----------------------------------------------------------------------------


def ray_address(launcher: LauncherConfig) -> str | None:
    """The cluster to join: `launcher.address`, else $RAY_ADDRESS; None: a local Ray."""
    address = launcher.address or os.environ.get("RAY_ADDRESS") or None
    return None if address in (None, "", "local") else address


def check_ray_launch(launcher: LauncherConfig, uri: str) -> None:
    """Refuse a store on this machine's disk when the cells may run on other machines: the
    study's runs must be where the team (and a driver started elsewhere) can reach them."""
    address = ray_address(launcher)
    shared = uri.startswith(("http://", "https://")) or ("://" in uri and not uri.startswith(("sqlite:", "file:")))
    if address is None or shared:  # a server, or a SQL database the drivers reach
        return
    raise BioragError(
        f"launcher=ray on the cluster {address} with the MLflow store {uri}, a file on this machine: "
        "runs of a study across machines go to a tracking server. Start one with `biorag tracking serve "
        "--host 0.0.0.0` and set MLFLOW_TRACKING_URI=http://<host>:<port> (or a SQL database URI), "
        "or run on a local Ray (unset RAY_ADDRESS)")


def start_ray(launcher: LauncherConfig) -> Any:
    """Ray, initialised once: the cluster at `ray_address`, else a local Ray."""
    try:
        import ray
    except ImportError as e:
        raise BioragError("launcher=ray needs Ray: pip install 'biorag[ray]'") from e
    if not ray.is_initialized():
        address = ray_address(launcher)
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=launcher.ray_cpus or os.cpu_count(), num_gpus=launcher.ray_gpus,
                     include_dashboard=False, log_to_driver=False)
    return ray


def cluster_tags(ray: Any, launcher: LauncherConfig) -> dict[str, str]:
    from biorag.tracking.runs import scrub

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return {keys.LAUNCHER: "ray", keys.LAUNCHER_ADDRESS: scrub(ray_address(launcher) or "local"),
            keys.CLUSTER_NODES: str(len(nodes)), keys.CLUSTER_GPUS: str(int(res.get("GPU", 0))),
            keys.CLUSTER_CPUS: str(int(res.get("CPU", 0)))}


def _missing_paths(paths: list[str]) -> tuple[str, list[str]]:
    import socket

    return socket.gethostname(), [p for p in paths if not Path(p).exists()]


def check_shared_paths(ray: Any, paths: Sequence[str]) -> None:
    """On every node of the cluster, a task that checks the driver's folders (working folder,
    index root, adapters, cache) exist at the same paths: workers read and write them there."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_missing_paths)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    found = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
        list(paths)) for n in nodes])
    bad = {host: missing for host, missing in found if missing}
    if bad:
        raise BioragError("workers on other nodes read and write the driver's folders at the same paths (a "
                          "shared filesystem); missing: " + "; ".join(f"{h}: {', '.join(m)}" for h, m in bad.items()))


# -- validate -------------------------------------------------------------------------------


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def resource_rows(cells: Sequence[RunConfig]) -> tuple[list[list[str]], str]:
    """For `biorag experiment validate launcher=ray`: per cell, what one replica asks for, its
    shards, and whether the cluster has it; and what it was checked against."""
    launcher = cells[0].launcher
    address = ray_address(launcher)
    have: dict[str, float] | None = None
    if address is not None:
        try:
            have = start_ray(launcher).cluster_resources()
            against = f"the cluster at {address}"
        except Exception as e:  # unreachable: say so, do not fail
            against = f"not checked (cluster {address} unreachable: {e})"
    else:
        have = {"CPU": launcher.ray_cpus or os.cpu_count() or 1,
                "GPU": launcher.ray_gpus if launcher.ray_gpus is not None else _local_gpus()}
        against = f"a local Ray of {have['CPU']:g} CPU(s), {have['GPU']:g} GPU(s)"
    rows = []
    for c in cells:
        cpus, gpus, why = cell_resources(c.model, bool(have and have.get("GPU", 0)))
        n = c.task.n or 0
        k, shard_why = cell_shards(launcher, c.model, n) if n else (launcher.shards, "launcher.shards")
        fits = "not checked" if have is None else (
            "yes" if have.get("GPU", 0) >= gpus and have.get("CPU", 0) >= cpus else "no")
        rows.append([cell_name(c.arm.name, c.model.name, c.task.name, c.task.protocol), f"{gpus:g}", f"{cpus:g}",
                     why, f"{k} ({shard_why})" if k > 1 else "1", fits])
    return rows, against
