"""`launcher=ray`: each cell's predictions on a Ray cluster; scoring and logging on the driver.

The driver plans, prepares (indexes, adapters) and opens the parent run exactly as the local
launcher does. Then each cell's *prediction* (the model over its items, written to its
prediction cache as it goes) runs on a Ray actor; the actor returns only a short summary
(items, seconds, the backend's `info`) or the error, never the records: those are in the cache,
on the filesystem the driver and the workers share. The driver then scores and logs the cell
with the local launcher's code (`runner.log_cell`), so its metrics, predictions and artifacts are
the local launcher's.

MLflow is written by the driver alone: one parent, one child per cell. Workers that logged
would each have to find the parent again, and a worker restarted by Ray mid-cell would open a
second child beside the first; the driver already finds runs again by their invocation and
cell tags (`Tracker`), so a rerun after any crash reuses them and nothing is duplicated.

Packing: one Ray *actor* per model (per replica of it, with item shards), holding the model
loaded once (`LoadedModels`, which also switches a vLLM engine between adapters); the cells of
that model are calls on it, run in turn. An actor is let go as soon as its last call returns,
so its GPUs go to the next model. Item shards: a cell cut into N contiguous pieces goes to N
replicas, each writing `<fingerprint>.shard-<i>-of-<N>.jsonl`; the driver merges them in item
order into the cell's cache. vLLM's `data_parallel_size` (which its offline engine refuses
above 1) becomes that many shards; `launcher.shards` wins when both are set (logged on the
parent run).

Faults: a worker that dies (killed, out of memory, node lost) is restarted up to
`launcher.max_retries` times and its cell resumes from the cache; an error raised by the cell
(a `BioragError`, a bad config) is not retried: that cell fails alone, the others finish, and
the run lists it. A driver killed and run again skips every cell whose cache is complete.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from biorag.atomic import write_json
from biorag.errors import BioragError
from biorag.experiment.arms import LauncherConfig, RunConfig, cell_name
from biorag.experiment.cache import PredictionCache, cache_root
from biorag.experiment.predict import Predicted, cell_cache, cell_retrieval_cache
from biorag.experiment.ray_cluster import (
    cell_resources,
    cell_shards,
    check_shared_paths,
    cluster_tags,
    ray_address,
    shard_bounds,
    start_ray,
)
from biorag.experiment.resources import PreparedCell, index_root_of
from biorag.tracking import keys

log = logging.getLogger(__name__)


@dataclass
class CellFailure:
    """A cell whose prediction failed for a reason a retry would not fix (launcher=ray): the
    other cells finish, and the run lists it with its error."""

    name: str
    fingerprint: str
    error: str

# the driver's environment that workers need to read the same files and reach the same hubs
WORKER_ENV = ("BIORAG_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "VLLM_", "OPENAI_")
PROGRESS_EVERY_S = 30.0  # a line of progress this often while cells run


def shard_path(cache: Path, shard: int, shards: int) -> Path:
    """`<fingerprint>.shard-<i>-of-<N>.jsonl` beside the cell's cache `<fingerprint>.jsonl`."""
    return cache.with_name(f"{cache.stem}.shard-{shard}-of-{shards}.jsonl")


def info_path(cache: Path) -> Path:
    """The backend's `info` of a cell's predictions, beside its cache: a cell whose cache is
    complete is logged again without loading its model."""
    return cache.with_name(f"{cache.stem}.info.json")


THREADS_ENV = "BIORAG_WORKER_THREADS"  # the driver's torch thread count, for the workers

# -- the workers ----------------------------------------------------------------------------


class CellWorker:
    """A Ray actor holding one model (`LoadedModels`): predicts cells, or shards of cells, of
    that model into their prediction caches, and returns a summary."""

    def __init__(self, cwd: str, env: dict[str, str]) -> None:
        from biorag import progress
        from biorag.experiment.resources import LoadedModels
        from biorag.models.loading import load_generator

        os.environ.update(env)
        if Path(cwd).is_dir():  # relative task and index paths resolve as on the driver
            os.chdir(cwd)
        # Ray starts a worker with one thread a CPU it asked for; a CPU kernel sums in another
        # order with another thread count, and bf16 log-likelihoods then differ by tenths of a
        # nat: the driver's thread count keeps a cell's numbers the local launcher's
        threads = int(env.get(THREADS_ENV, "0"))
        if threads:
            import torch

            torch.set_num_threads(min(threads, os.cpu_count() or threads))
        progress.set_enabled(False)  # the driver shows progress
        self.models = LoadedModels(load_generator)

    def predict(self, cfg: RunConfig, fingerprint: str, shard: int = 0, shards: int = 1) -> dict[str, Any]:
        import socket

        from biorag.experiment.predict import cell_cache, predict_cell
        from biorag.experiment.resources import prepare

        prep = prepare(cfg)
        if prep.fingerprint != fingerprint:
            raise BioragError(f"{socket.gethostname()} sees other task items, indexes or adapters than the driver "
                              f"(cell fingerprint {prep.fingerprint}, driver's {fingerprint}): share the folders")
        main = cell_cache(cfg, prep)
        examples, cache = prep.examples, None
        if shards > 1:
            lo, hi = shard_bounds(len(examples), shards)[shard]
            done = main.load_records()  # an earlier unsharded run's predictions count
            examples = [e for e in examples[lo:hi] if e.id not in done]
            cache = PredictionCache(shard_path(main.path, shard, shards))
        got = predict_cell(cfg, prep, self.models, examples, cache)
        if shard == 0:  # one writer of the cell's info
            write_json(info_path(main.path), got.info)
        r = got.retriever
        return {"items": len(examples), "resumed": got.resumed, "wall": got.wall, "info": got.info,
                "reused": r.reused if r else 0, "searched": r.searched if r else 0,
                "retriever": r.fingerprint if r else None, "host": socket.gethostname()}


def _worker_env(cells: Sequence[RunConfig]) -> dict[str, str]:
    import torch

    named = {c.model.api_key_env for c in cells}
    env = {k: v for k, v in os.environ.items() if k.startswith(WORKER_ENV) or k in named}
    env[THREADS_ENV] = str(torch.get_num_threads())
    return env


def _absolute(cfg: RunConfig) -> RunConfig:
    """The cell with its folders as absolute paths (a worker's working folder may differ)."""
    return replace(cfg, cache_dir=str(cache_root(cfg).resolve()), index_root=str(index_root_of(cfg).resolve()),
                   adapters_dir=str(Path(cfg.adapters_dir).resolve()))


# -- the driver -----------------------------------------------------------------------------


@dataclass
class _Cell:
    index: int
    cfg: RunConfig  # as planned: what is logged (the worker gets its folders made absolute)
    prep: PreparedCell
    name: str
    cpus: float
    gpus: float
    shards: int
    why: str
    left: int = 0  # shards still out
    summaries: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    before: int = 0  # items in the cell's cache before its shards ran


def run_on_ray(cells: Sequence[RunConfig], prepared: Sequence[PreparedCell], result: Any,
               log_cell: Callable[[RunConfig, PreparedCell, Predicted], Any],
               on_cell_done: Callable[[Any], None] | None) -> None:
    """Predict every cell on Ray, then score and log each one here (`log_cell`: into its child
    run, as the local launcher does) as it finishes; the results go to `result.cells` in plan
    order, a cell that fails to `result.failures`. Runs inside the active parent run."""
    from biorag.tracking.runs import set_tags

    launcher = cells[0].launcher
    ray = start_ray(launcher)
    gpus_here = ray.cluster_resources().get("GPU", 0) > 0
    plan = []
    for i, (cfg, prep) in enumerate(zip(cells, prepared, strict=True)):
        cpus, gpus, why_res = cell_resources(cfg.model, gpus_here)
        k, why = cell_shards(launcher, cfg.model, len(prep.examples))
        name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
        plan.append(_Cell(i, cfg, prep, name, cpus, gpus, k, f"{why_res}; shards: {why}"))
    if ray_address(launcher) is not None:
        sent = [_absolute(c.cfg) for c in plan]
        folders = {os.getcwd()} | {c.cache_dir for c in sent} | {c.index_root for c in sent} | {
            c.adapters_dir for c in sent if c.arm.adapter}
        for c in sent:
            Path(c.cache_dir).mkdir(parents=True, exist_ok=True)
        check_shared_paths(ray, sorted(str(f) for f in folders))
    set_tags({**cluster_tags(ray, launcher), keys.LAUNCHER_CELLS: json.dumps(
        {c.name: {"cpus": c.cpus, "gpus": c.gpus, "shards": c.shards, "why": c.why} for c in plan})})
    done: dict[int, Any] = {}
    failed: dict[int, CellFailure] = {}

    def finish(c: _Cell) -> None:
        try:
            done[c.index] = _log(c, log_cell)
        except BioragError as e:
            failed[c.index] = CellFailure(c.name, c.prep.fingerprint, str(e))
            log.error("failed %s: %s", c.name, e)
            return
        cell = done[c.index]
        new = cell.n - cell.resumed
        secs = max((s["wall"] for s in c.summaries), default=0.0)
        log.info("done %s: %d items%s%s", c.name, cell.n, f" ({cell.resumed} from cache)" if cell.resumed else "",
                 f", {new / max(secs, 1e-9):.1f} items/s" if new else "")
        if on_cell_done:
            on_cell_done(cell)

    todo = []
    for c in plan:
        cache = cell_cache(c.cfg, c.prep)
        have = cache.load_records()
        c.before = sum(1 for e in c.prep.examples if e.id in have)
        if c.before == len(c.prep.examples) and info_path(cache.path).is_file():
            c.summaries = [{"items": 0, "resumed": c.before, "wall": 0.0, "reused": 0, "searched": 0,
                            "info": json.loads(info_path(cache.path).read_text()), "retriever": None}]
            finish(c)  # predicted by an earlier run: no worker, no model
        else:
            todo.append(c)
    _predict(ray, launcher, todo, cells, finish, failed)
    result.cells.extend(done[i] for i in sorted(done))
    result.failures.extend(failed[i] for i in sorted(failed))
    if result.failures:
        set_tags({keys.FAILED_CELLS: json.dumps({f.name: f.error[:500] for f in result.failures})})


def _predict(ray: Any, launcher: LauncherConfig, todo: list[_Cell], cells: Sequence[RunConfig],
             finish: Callable[[_Cell], None], failed: dict[int, Any]) -> None:
    """One actor per model replica; every cell's shards as calls on them; `finish` each cell as
    its last shard returns."""
    groups: dict[str, list[_Cell]] = {}
    for c in todo:
        groups.setdefault(json.dumps(asdict(c.cfg.model), sort_keys=True, default=str), []).append(c)
    remote = ray.remote(CellWorker)
    env, cwd = _worker_env(cells), os.getcwd()
    calls: dict[Any, tuple[_Cell, Any]] = {}
    queues: dict[Any, list[_Cell]] = {}
    for group in groups.values():
        replicas = max(c.shards for c in group)
        actors = [remote.options(num_cpus=group[0].cpus, num_gpus=group[0].gpus, max_restarts=launcher.max_retries,
                                 max_task_retries=launcher.max_retries).remote(cwd, env) for _ in range(replicas)]
        load = [0] * replicas
        for c in group:
            c.left = c.shards
            targets = range(c.shards) if c.shards > 1 else [load.index(min(load))]
            sent = _absolute(c.cfg)  # the driver's folders, wherever the worker starts
            for shard, a in enumerate(targets):
                load[a] += len(c.prep.examples) // c.shards
                ref = actors[a].predict.remote(sent, c.prep.fingerprint, shard, c.shards)
                calls[ref] = (c, actors[a])
                queues.setdefault(actors[a], []).append(c)
            log.info("queued %s: %d items%s, %g GPU(s) each", c.name, len(c.prep.examples),
                     f" in {c.shards} shards" if c.shards > 1 else "", c.gpus)
    running: set[int] = set()

    def heads() -> None:
        for q in queues.values():
            if q and q[0].index not in running:
                running.add(q[0].index)
                q[0].started = q[0].started or time.perf_counter()
                log.info("running %s", q[0].name)

    heads()
    last = time.monotonic()
    while calls:
        ready, _ = ray.wait(list(calls), num_returns=1, timeout=5.0)
        if not ready:
            if time.monotonic() - last > PROGRESS_EVERY_S:
                last = time.monotonic()
                log.info("progress: %s", "; ".join(_progress(c) for c in todo if c.index in running and c.left))
            continue
        c, actor = calls.pop(ready[0])
        queues[actor].remove(c)
        if not queues[actor]:
            ray.kill(actor, no_restart=True)  # its resources go to the next model
        try:
            c.summaries.append(ray.get(ready[0]))
        except Exception as e:  # the cell fails alone, with its error
            if c.index not in failed:
                failed[c.index] = CellFailure(c.name, c.prep.fingerprint, _reason(e))
                log.error("failed %s: %s", c.name, failed[c.index].error)
        c.left -= 1
        if c.left == 0 and c.index not in failed:
            finish(c)
        heads()


def _reason(e: Exception) -> str:
    """The cell's own error (a BioragError's message), not Ray's wrapping of it."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, Exception):
        return f"{type(cause).__name__}: {cause}"
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def _progress(c: _Cell) -> str:
    main = cell_cache(c.cfg, c.prep).path
    files = [shard_path(main, i, c.shards) for i in range(c.shards)] if c.shards > 1 else [main]
    made = sum(sum(1 for _ in PredictionCache(f).lines()) for f in files if f.exists())
    made += c.before if c.shards > 1 else 0
    secs = time.perf_counter() - c.started
    return f"{c.name} {made}/{len(c.prep.examples)} ({max(made - c.before, 0) / max(secs, 1e-9):.1f} items/s)"


def merge_shards(cache: PredictionCache, examples: Sequence[Any], shards: int) -> None:
    """The shards' records into the cell's cache, in item order; the shard files then go."""
    paths = [shard_path(cache.path, i, shards) for i in range(shards)]
    found: dict[str, Any] = {}
    for p in paths:
        found.update(PredictionCache(p).load_records())
    with cache.lock():
        have = cache.load_records()
        cache.append_records([found[e.id] for e in examples if e.id not in have and e.id in found])
    for p in paths:  # with the locks their writers left
        for f in (p, p.with_name(f".{p.name}.lock"), p.with_name(f".{p.name}.lock.holder")):
            f.unlink(missing_ok=True)


def _log(c: _Cell, log_cell: Callable[[RunConfig, PreparedCell, Predicted], Any]) -> Any:
    """Score and log a predicted cell (`log_cell`), here on the driver."""
    cache = cell_cache(c.cfg, c.prep)
    if c.shards > 1:
        merge_shards(cache, c.prep.examples, c.shards)
    have = cache.load_records()
    missing = [e.id for e in c.prep.examples if e.id not in have]
    if missing:
        raise BioragError(f"{len(missing)} item(s) missing from {cache.path} after prediction "
                          f"(first: {missing[0]}); run the command again to predict them")
    retriever = cell_retrieval_cache(c.cfg, c.prep)
    if retriever is not None:  # the workers searched; the driver only reads the cache
        retriever.reused = sum(s["reused"] for s in c.summaries)
        retriever.searched = sum(s["searched"] for s in c.summaries)
        retriever.fingerprint = next((s["retriever"] for s in c.summaries if s["retriever"]), retriever.fingerprint)
    resumed = c.before if c.shards > 1 else 0
    return log_cell(c.cfg, c.prep, Predicted([have[e.id] for e in c.prep.examples],
                                             resumed + sum(s["resumed"] for s in c.summaries),
                                             max(s["wall"] for s in c.summaries), c.summaries[0]["info"], retriever))
