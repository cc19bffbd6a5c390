"""From embedded shards to a FAISS index: in memory, or IVF with its lists on disk.

In memory (the default) the trained index takes every shard's vectors in turn. With
`index.on_disk` (ivf, ivfpq), as faiss's billion-scale demos do: the trained, empty index is
saved once; each shard goes into a copy of it saved as its own small index (the unit of
resumption: a killed build keeps the shards it finished); then `biorag.indexing.merge` merges
their inverted lists, in batches that give their pages back, into one `index.ivfdata` beside
`index.faiss` (the file faiss's `merge_ondisk` writes); ivfpq's sq8 refine codes go to a matrix
file beside them (`biorag.indexing.refine`). Memory stays bounded by the training sample and one
shard, whatever the corpus size, and a search maps the lists (`index.open_faiss`) instead of
reading them into RAM.

The vectors come from a `Vectors` source: the build's own float32 shards (`ShardFiles`), or
precomputed vectors read where they lie (`biorag.indexing.precomputed.InPlaceVectors`), so a
build from precomputed vectors writes no copy of them. Every pass can feed an `ExactTopK`
(`biorag.indexing.tuning`), the exact neighbours the recommended search setting is checked on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from biorag import progress
from biorag.atomic import writing
from biorag.errors import BioragError
from biorag.indexing.faiss_index import IndexConfig, new_index, on_disk_lists, to_gpu
from biorag.indexing.manifest import IVFDATA_FILE
from biorag.indexing.merge import merge_lists
from biorag.indexing.refine import REFINE_QUANTIZER_FILE, CodeWriter, new_quantizer
from biorag.indexing.tuning import ExactTopK

log = logging.getLogger(__name__)

TRAINED_FILE = "trained.faiss"


class Vectors(Protocol):
    """Where the assembly reads the vectors: shard by shard (float32), or sampled rows."""

    shard_rows: list[int]

    def shard(self, k: int) -> np.ndarray: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...


class ShardFiles:
    """A build's own vector shards (.npy, float32, in row order), memory-mapped."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.shard_rows = [int(np.load(p, mmap_mode="r").shape[0]) for p in self.paths]

    def shard(self, k: int) -> np.ndarray:
        return np.ascontiguousarray(np.load(self.paths[k], mmap_mode="r"), dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        parts, offset = [], 0
        for path, count in zip(self.paths, self.shard_rows, strict=True):
            mine = rows[(rows >= offset) & (rows < offset + count)] - offset
            if len(mine):
                parts.append(np.asarray(np.load(path, mmap_mode="r")[mine]))
            offset += count
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def as_vectors(vectors: Vectors | Sequence[Path]) -> Vectors:
    return ShardFiles(vectors) if isinstance(vectors, list | tuple) else vectors  # type: ignore[arg-type]


def assemble_faiss(cfg: IndexConfig, vector_files: Vectors | Sequence[Path], n: int, dim: int, gpu: bool,
                   out_dir: Path, work_dir: Path, truth: ExactTopK | None = None) -> Any:
    """The index over the vectors (`vector_files`: a `Vectors` source, or the build's .npy
    shards in row order). An on-disk index writes its lists to `out_dir/index.ivfdata` and its
    per-shard indexes to `work_dir`. `truth`, when given, sees every vector once."""
    source = as_vectors(vector_files)
    if cfg.on_disk:
        return _on_disk(cfg, source, n, dim, out_dir, work_dir, truth)
    index = new_index(cfg, dim, n)
    if gpu:
        index = to_gpu(index)
    if not index.is_trained:
        index.train(training_sample(cfg, source, n))
    with progress.bar("adding to faiss", total=n) as bar:
        offset = 0
        for k, count in enumerate(source.shard_rows):
            vectors = source.shard(k)
            index.add(vectors)
            if truth is not None:
                truth.add(offset, vectors)
            offset += count
            bar.advance(count)
    return index


def training_sample(cfg: IndexConfig, vector_files: Vectors | Sequence[Path], n: int) -> np.ndarray:
    """A seeded sample of at most `train_size` vectors, read shard by shard (memory-mapped)."""
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n, size=min(cfg.train_size, n), replace=False))
    return np.ascontiguousarray(as_vectors(vector_files).take(rows), dtype=np.float32)


def _on_disk(cfg: IndexConfig, source: Vectors, n: int, dim: int, out_dir: Path, work_dir: Path,
             truth: ExactTopK | None) -> Any:
    import faiss

    work_dir.mkdir(parents=True, exist_ok=True)
    trained_path = work_dir / TRAINED_FILE
    if not trained_path.exists():  # trained once; a resumed build reuses it
        index = new_index(replace(cfg, refine="none"), dim, n)
        sample = training_sample(cfg, source, n)
        index.train(sample)
        if cfg.disk_refine:  # trained on the same sample as IndexRefine trains its sq8
            quantizer = new_quantizer(dim)
            quantizer.train(sample)
            _write_atomic(quantizer, work_dir / REFINE_QUANTIZER_FILE)
        _write_atomic(index, trained_path)
    # the refine codes are rewritten whole, the shards' lists only where a shard is missing
    codes = CodeWriter(work_dir / REFINE_QUANTIZER_FILE, n, out_dir) if cfg.disk_refine else None
    try:
        shard_files = _add_shards(trained_path, source, work_dir, n, codes, truth)
    except BaseException:
        if codes is not None:
            codes.abort()  # the codes are rewritten whole by the next run: none half-written stays
        raise
    ivfdata = out_dir / IVFDATA_FILE
    ivfdata.unlink(missing_ok=True)  # a merge that was killed starts again from the shards
    merged = faiss.read_index(str(trained_path))
    log.info("merging %d shards' inverted lists into %s", len(shard_files), ivfdata)
    if merge_lists(merged, shard_files, ivfdata) != n:
        raise BioragError(f"the on-disk merge holds {merged.ntotal} vectors, not {n}; rebuild with --force")
    return merged


def _add_shards(trained_path: Path, source: Vectors, work_dir: Path, n: int, codes: CodeWriter | None,
                truth: ExactTopK | None) -> list[str]:
    """Each shard's vectors into a copy of the trained index saved as its own small index
    (skipped where one is saved already), their refine codes and the recall check's exact
    neighbours; the saved indexes' paths."""
    import faiss

    shard_files, offset = [], 0
    with progress.bar("adding to on-disk lists", total=n) as bar:
        for shard_no, count in enumerate(source.shard_rows):
            target = work_dir / f"{shard_no:05d}.faiss"
            if codes is not None or truth is not None or not target.exists():  # read only when needed
                vectors = source.shard(shard_no)
                if codes is not None:
                    codes.add(offset, vectors)
                if truth is not None:
                    truth.add(offset, vectors)
                if not target.exists():
                    shard = faiss.read_index(str(trained_path))
                    shard.add_with_ids(vectors, np.arange(offset, offset + count, dtype=np.int64))
                    _write_lists(shard, target)
                    del shard
                del vectors
            shard_files.append(str(target))
            offset += count
            bar.advance(count)
    if codes is not None:
        codes.close()
    return shard_files


def write_index_for(index: Any, path: Path, final_dir: Path) -> None:
    """Write `index` to `path`; an on-disk index records its lists as `index.ivfdata` in
    `final_dir`, the folder the build is moved to, not the build's own folder, which is gone
    when it is read: plain `faiss.read_index` then opens it where it was built (biorag's
    `open_faiss` maps the lists of whatever folder the index is in)."""
    import faiss

    on_disk = on_disk_lists(index)
    if on_disk is None:
        faiss.write_index(index, str(path))
        return
    built_at = on_disk.filename
    on_disk.filename = str((final_dir / IVFDATA_FILE).resolve())
    try:
        faiss.write_index(index, str(path))
    finally:
        on_disk.filename = built_at  # the open lists keep working from where they are


def _write_lists(shard: Any, path: Path) -> None:
    """A shard's index as the merge reads it, for its inverted lists alone: saved with an empty
    coarse quantiser, not the trained one (4096 x 768-d: 12.6 MB a shard, 4.6 GB over 24M
    vectors' 366 shards of disk the build would hold only to be ignored by the merge)."""
    import faiss

    ivf = faiss.extract_index_ivf(shard)
    trained, empty = ivf.quantizer, faiss.IndexFlat(ivf.d, ivf.metric_type)
    ivf.quantizer = empty  # ownership unchanged: the trained one is freed with the shard
    try:
        _write_atomic(shard, path)
    finally:
        ivf.quantizer = trained


def _write_atomic(index: Any, path: Path) -> None:
    import faiss

    tmp = path.with_name(path.name + ".tmp")
    with writing(path.parent, int(index.ntotal) * int(getattr(index, "code_size", 0) or 0), f"writing {path.name}", tmp):
        faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
