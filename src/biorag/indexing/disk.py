"""The disk a build needs, said before it starts.

`estimate_disk` counts, from the number of vectors, their dimension and the index settings, the
files a finished index holds (the vectors or codes and ids of the lists, the coarse quantiser,
PQ tables, refine codes, the chunk store, BM25) and what the build holds beside them until it
finishes (the embedded vectors' shards, the per-shard indexes an on-disk merge reads, the chunk
shards). `plan_build` finds those counts for a build config without building: exact for
precomputed vectors (the files' headers), approximate for a corpus of files (their size), none
for a packaged corpus. `check_space` compares the peak with what the index root's filesystem
has free and refuses a build that does not fit, naming how much is missing.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.errors import DiskFullError
from biorag.indexing.faiss_index import IndexConfig, default_nlist

CHUNK_CHARS_PER_TOKEN = 4.5  # characters a chunk of chunk_size tokens holds, roughly (English, WordPiece)
_PARQUET_OF_TEXT = 0.55  # chunk store bytes per byte of source text (snappy Parquet), measured on notes
_BM25_OF_TEXT = 0.6  # bm25s's sparse scores, vocabulary and ids per byte of chunk store, roughly


@dataclass
class DiskEstimate:
    """Bytes a build writes: the finished index's files and what the build holds beside them."""

    rows: int
    dimension: int
    basis: str  # how the counts were found
    final: dict[str, int] = field(default_factory=dict)
    temporary: dict[str, int] = field(default_factory=dict)

    @property
    def final_bytes(self) -> int:
        return sum(self.final.values())

    @property
    def peak_bytes(self) -> int:
        """The most the build holds at once: the whole index and its working files, just before
        the finish drops the working files."""
        return self.final_bytes + sum(self.temporary.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {gb(v)}" for k, v in self.final.items() if v)
        temp = ", ".join(f"{k} {gb(v)}" for k, v in self.temporary.items() if v)
        return (f"{self.rows:,} x {self.dimension}-d ({self.basis}): index {gb(self.final_bytes)} ({parts}); "
                f"peak while building {gb(self.peak_bytes)}" + (f" (+ {temp})" if temp else ""))


def gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def estimate_disk(cfg: IndexConfig, rows: int, dim: int, chunk_bytes: int, *, bm25: bool | None = None,
                  vectors_copied: bool = True, shard_size: int = 4096, basis: str = "given counts") -> DiskEstimate:
    """The files of an index of `rows` `dim`-d vectors under `cfg` whose chunk store is about
    `chunk_bytes`; `vectors_copied`: the build writes float32 shards of the vectors (an embedded
    build), not read in place (precomputed)."""
    est = DiskEstimate(rows, dim, basis)
    n, f32 = rows, 4 * dim
    nlist = cfg.nlist or default_nlist(n)
    n_shards = max(math.ceil(n / shard_size), 1)
    quantizer = nlist * f32
    if cfg.type == "flat":
        est.final["vectors"] = n * f32
    elif cfg.type == "hnsw":
        est.final["vectors"] = n * f32
        est.final["graph links"] = int(n * cfg.hnsw_m * 2 * 4 * 1.05 + n * 16)  # level 0 holds 2M links
    else:
        code = f32 if cfg.type == "ivf" else math.ceil(cfg.pq_m * cfg.pq_nbits / 8)
        lists = n * (code + 8) + nlist * 16  # codes and int64 ids, and each list's header
        tables = 0 if cfg.type == "ivf" else (1 << cfg.pq_nbits) * f32
        est.final["inverted lists"] = lists
        est.final["quantizer"] = quantizer + tables
        if cfg.type == "ivfpq" and cfg.refine != "none":
            est.final["refine codes"] = n * (dim if cfg.refine == "sq8" else f32) + 2 * f32
        if cfg.on_disk:  # each shard's lists saved as an index of their own, read by the merge
            est.temporary["per-shard indexes"] = lists + n_shards * (tables + 4096)  # without the quantizer
    est.final["chunk store"] = chunk_bytes
    if cfg.bm25 if bm25 is None else bm25:
        est.final["bm25"] = int(chunk_bytes * _BM25_OF_TEXT)
    est.temporary["chunk shards"] = chunk_bytes
    if vectors_copied:
        est.temporary["vector shards"] = n * f32
    return est


def plan_build(cfg: Any) -> DiskEstimate | None:
    """The estimate for a `BuildConfig`, without building; None when the counts cannot be known
    before the corpus is read (a packaged corpus, a hub dataset)."""
    if cfg.vectors.path:
        from biorag.indexing.precomputed import PrecomputedVectors

        source = PrecomputedVectors(cfg.vectors)
        return estimate_disk(cfg.index, source.rows, source.dimension, int(source.meta_bytes() * _PARQUET_OF_TEXT),
                             vectors_copied=False, shard_size=cfg.shard_size,
                             basis=f"{len(source.parts)} {source.format} files, exact counts")
    text = _corpus_bytes(cfg.corpus)
    dim = model_dimension(cfg.embedder)
    if text is None or dim is None:
        return None
    rows = max(int(text / (cfg.chunking.chunk_size * CHUNK_CHARS_PER_TOKEN)), 1)
    if cfg.corpus.limit:
        rows = min(rows, cfg.corpus.limit * 8)
    return estimate_disk(cfg.index, rows, dim, int(text * _PARQUET_OF_TEXT), shard_size=cfg.shard_size,
                         basis="rows estimated from the corpus files' size")


def _corpus_bytes(corpus: Any) -> int | None:
    if not corpus.path:
        return None
    path = Path(corpus.path).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def model_dimension(embedder: Any) -> int | None:
    """The embedding dimension a local sentence-transformers folder declares, without loading it."""
    from biorag.indexing.embedding import resolve_model_path

    try:
        folder = Path(resolve_model_path(embedder.model))
    except Exception:  # a missing package: the build says so itself
        return None
    for name, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        try:
            return int(json.loads((folder / name).read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def free_space(folder: Path) -> int:
    """Bytes free on the filesystem that holds (or will hold) `folder`."""
    probe = folder.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def check_space(estimate: DiskEstimate, root: Path, partial: Path) -> tuple[int, int]:
    """(needed, free) for the build still to do (what an unfinished build already wrote is
    counted as written); DiskFullError naming the missing bytes when it does not fit."""
    needed = max(estimate.peak_bytes - folder_bytes(partial), 0)
    free = free_space(root)
    if needed > free:
        raise DiskFullError(
            f"{root}: this build needs about {gb(needed)} of disk and {gb(free)} is free there: "
            f"{gb(needed - free)} missing ({estimate.describe()}). Free some space, build elsewhere "
            "(root=FOLDER), or proceed anyway with --ignore-disk (check_disk=false).")
    return needed, free
