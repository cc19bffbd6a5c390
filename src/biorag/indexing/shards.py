"""A build's shards: the unit a killed build resumes from.

Shard k is `shards/0000k.parquet` (its chunks) and `shards/0000k.npy` (their vectors, float32,
row for row; not written for precomputed vectors, which are read where they lie), each written to a temporary name and renamed, so a shard is there whole or not
at all. At the end the chunk shards are merged into the index's `chunks.parquet`, in row groups
the lazy chunk store reads one at a time (`biorag.indexing.chunkstore`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from biorag.atomic import writing
from biorag.indexing.chunkstore import ROW_GROUP_ROWS
from biorag.indexing.manifest import CHUNKS_FILE
from biorag.types import Chunk

SHARDS_DIR = "shards"

T = TypeVar("T")


def batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_groups(texts: list[Any], batch_size: int) -> list[list[int]]:
    """Row numbers of a shard's texts in the groups one `embed_passages` call encodes: longest
    first across the whole shard, as sentence-transformers sorts within one encode call, so
    batches of like lengths pad least. Every engine encodes these groups, so their vectors agree."""
    order = np.argsort([-(len(t) if isinstance(t, str) else sum(map(len, t))) for t in texts],
                       kind="stable").tolist()
    step = max(batch_size * 16, 256)  # a group a bar step: the bar advances within a shard too
    return [order[start : start + step] for start in range(0, len(order), step)]


def shard_paths(partial: Path, shard_no: int) -> tuple[Path, Path]:
    base = partial / SHARDS_DIR / f"{shard_no:05d}"
    return base.with_suffix(".parquet"), base.with_suffix(".npy")


def chunk_table(chunks: list[Chunk]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "id": [c.id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "title": [c.title for c in chunks],
            "text": [c.text for c in chunks],
            "start": pa.array([c.start for c in chunks], pa.int64()),
            "end": pa.array([c.end for c in chunks], pa.int64()),
            "ordinal": pa.array([c.ordinal for c in chunks], pa.int32()),
        }
    )


def write_shard(partial: Path, shard_no: int, chunks: list[Chunk], vectors: np.ndarray | None) -> None:
    """Shard `shard_no`'s chunks and vectors; `vectors` None: the chunks only (precomputed
    vectors, read in place when the index is assembled)."""
    import pyarrow.parquet as pq

    table_path, vec_path = shard_paths(partial, shard_no)
    tmps = (table_path.with_suffix(".parquet.tmp"), vec_path.with_suffix(".npy.tmp"))
    table = chunk_table(chunks)
    needed = table.nbytes + (vectors.shape[0] * vectors.shape[1] * 4 if vectors is not None else 0)
    with writing(partial, needed, f"writing shard {shard_no}", *tmps):
        pq.write_table(table, tmps[0])
        if vectors is not None:
            with open(tmps[1], "wb") as f:
                np.save(f, np.ascontiguousarray(vectors, dtype=np.float32))
    os.replace(tmps[0], table_path)
    if vectors is not None:
        os.replace(tmps[1], vec_path)


def merge_chunk_shards(partial: Path, n_shards: int) -> None:
    import pyarrow.parquet as pq

    tmp, writer = partial / f"{CHUNKS_FILE}.tmp", None
    needed = sum(shard_paths(partial, k)[0].stat().st_size for k in range(n_shards))
    with writing(partial, needed, f"writing {CHUNKS_FILE}", tmp):
        try:
            for shard_no in range(n_shards):
                table = pq.read_table(shard_paths(partial, shard_no)[0])
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, write_statistics=False)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)  # the unit a search reads
        finally:
            if writer is not None:
                writer.close()
    os.replace(tmp, partial / CHUNKS_FILE)
