"""`engine=ray`: a build's passages embedded on Ray Data, by an actor pool of the embedder.

The driver chunks the corpus and cuts each shard into the groups the local build encodes
(`shards.encode_groups`); each group is one row of a Ray Dataset, which `map_batches` sends to
an actor holding the same model with the same settings and backend. The vectors come back with
their shard and row numbers and are put in place by them, so the shards written are the local
build's, row for row (resume, the manifest's fingerprint and the index do not depend on the
engine). On a cluster (`RAY_ADDRESS` set) the workers need biorag and the model installed."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from biorag.errors import BioragError
from biorag.indexing.shards import batched, encode_groups
from biorag.types import Chunk

log = logging.getLogger(__name__)

# shards embedded by one Dataset (one actor pool): the pool's start, a model load per actor,
# is paid once per this many shards; the driver holds their chunks meanwhile
SHARDS_PER_DATASET = 8
# CPU actors: one per 2 cores. Measured on 2 cores (300 MiniLM passages, bf16, the actors'
# start included, beside another benchmark): 1 actor x 2 threads 12.1 s, 2 actors x 1 thread
# 11.9 s: the same within noise, and one actor holds one copy of the model, not two
CPUS_PER_ACTOR = 2


class EmbedActor:
    """One embedder, loaded once per actor; encodes a group of passages per call."""

    def __init__(self, embedder: dict[str, Any], backend: str, threads: int) -> None:
        import torch

        from biorag.indexing.embedding import EmbedderConfig, load_embedder

        if threads > 0:
            torch.set_num_threads(threads)  # the actors together use the CPUs Ray gives them
        self.embedder = load_embedder(EmbedderConfig(**embedder), backend)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, rows, vectors = [], [], []
        for shard, group, texts in zip(batch["shard"], batch["rows"], batch["texts"], strict=True):
            inputs = [t if isinstance(t, str) else [str(p) for p in t] for t in texts.tolist()]
            vectors.append(self.embedder.embed_passages(inputs))
            rows.append(np.asarray(group, dtype=np.int64))
            shards.append(np.full(len(group), shard, dtype=np.int64))
        return {"shard": np.concatenate(shards), "row": np.concatenate(rows),
                "vector": np.concatenate(vectors).astype(np.float32, copy=False)}


def embedded_shards(cfg: Any, embedder: Any, chunks: Iterator[Chunk], skip: int,
                    bar: Any) -> Iterator[tuple[int, list[Chunk] | None, np.ndarray | None]]:
    """As `build._embedded_shards` for `cfg`, a BuildConfig (not imported: build imports this
    module): (rows, chunks, vectors) per shard, the first `skip` as
    (rows, None, None); the new shards embedded on Ray, SHARDS_PER_DATASET at a time."""
    ray = start_ray(cfg.ray_cpus)
    window: list[list[Chunk]] = []
    for shard_no, shard in enumerate(batched(chunks, cfg.shard_size)):
        if shard_no < skip:
            bar.advance(len(shard))
            yield len(shard), None, None
            continue
        window.append(shard)
        if len(window) == SHARDS_PER_DATASET:
            yield from _embed_window(ray, cfg, embedder, window, bar)
            window = []
    if window:
        yield from _embed_window(ray, cfg, embedder, window, bar)


def start_ray(num_cpus: int | None = None) -> Any:
    """Ray, initialised once: the cluster at RAY_ADDRESS, else a local Ray of `num_cpus`."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BioragError("engine=ray needs Ray: pip install 'biorag[ray]'") from e
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address="auto", log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                     ignore_reinit_error=True, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the rows are put in place by number anyway
    ctx.enable_progress_bars = False  # the build's own bar counts the passages
    return ray


def _pool(ray: Any, workers: int | None, on_gpu: bool) -> tuple[int, int, int]:
    """(actors, CPUs per actor, GPUs per actor) for the resources Ray has."""
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    if on_gpu and int(resources.get("GPU", 0)) > 0:
        actors = workers or int(resources["GPU"])
        return actors, 1, 1
    actors = workers or max(1, cpus // CPUS_PER_ACTOR)
    return actors, max(1, cpus // actors), 0


def _embed_window(ray: Any, cfg: Any, embedder: Any, shards: list[list[Chunk]],
                  bar: Any) -> Iterator[tuple[int, list[Chunk], np.ndarray]]:
    vectors = [np.empty((len(s), embedder.dimension), dtype=np.float32) for s in shards]
    left = [len(s) for s in shards]
    items = []
    for k, shard in enumerate(shards):
        texts = embedder.passage_inputs(shard, cfg.chunking.include_title)
        for rows in encode_groups(texts, cfg.embedder.batch_size):
            group = [texts[i] for i in rows]
            if embedder.backend is None:  # `backend: auto` decides on the first passages, here
                vectors[k][rows] = embedder.embed_passages(group)
                left[k] -= len(rows)
                bar.advance(len(rows))
                continue
            items.append({"shard": k, "rows": rows, "texts": group})
    done = 0
    if items:
        actors, cpus, gpus = _pool(ray, cfg.ray_workers, embedder.device == "cuda")
        actors = min(actors, len(items))
        log.info("embedding %d shard(s) on Ray: %d actor(s), %d CPU(s) and %d GPU(s) each",
                 len(shards), actors, cpus, gpus)
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EmbedActor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
            num_gpus=gpus, fn_constructor_kwargs={"embedder": asdict(cfg.embedder),
                                                  "backend": embedder.backend_label, "threads": cpus})
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for k in np.unique(batch["shard"]).tolist():
                mine = batch["shard"] == k
                vectors[k][batch["row"][mine]] = batch["vector"][mine]
                left[k] -= int(mine.sum())
            bar.advance(len(batch["row"]))
            while done < len(shards) and left[done] == 0:  # whole shards, in order, as they finish
                yield len(shards[done]), shards[done], vectors[done]
                done += 1
    for k in range(done, len(shards)):
        if left[k] != 0:
            raise BioragError(f"Ray returned {len(shards[k]) - left[k]} of shard {k}'s {len(shards[k])} vectors")
        yield len(shards[k]), shards[k], vectors[k]
