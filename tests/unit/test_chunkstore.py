"""The lazy chunk store: chunks by row without reading the whole store."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from biorag.errors import BioragError
from biorag.indexing import shards
from biorag.indexing.chunkstore import ROW_GROUP_ROWS, ChunkStore
from biorag.types import Chunk


def _chunks(n: int, prefix: str = "c") -> list[Chunk]:
    return [Chunk(id=f"{prefix}{i}", doc_id=f"d{i // 3}", text=f"passage {i}: " + "x" * (i % 17),
                  title=f"title {i // 3}", start=10 * (i % 3), end=10 * (i % 3) + 9, ordinal=i % 3)
            for i in range(n)]


@pytest.fixture
def store_file(tmp_path: Path) -> tuple[Path, list[Chunk]]:
    chunks = _chunks(1000)
    path = tmp_path / "chunks.parquet"
    pq.write_table(shards.chunk_table(chunks), path, row_group_size=64)
    return path, chunks


class _Reads:
    """Counts row groups and whole columns that pyarrow is asked to decode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.groups: list[int] = []
        self.columns: list[list[str]] = []
        real_group, real_read = pq.ParquetFile.read_row_group, pq.ParquetFile.read

        def read_row_group(pf, i, *a, **kw):
            self.groups.append(i)
            return real_group(pf, i, *a, **kw)

        def read(pf, *a, columns=None, **kw):
            self.columns.append(list(columns or []))
            return real_read(pf, *a, columns=columns, **kw)

        monkeypatch.setattr(pq.ParquetFile, "read_row_group", read_row_group)
        monkeypatch.setattr(pq.ParquetFile, "read", read)


def test_random_rows_come_back_exactly_as_written(store_file) -> None:
    path, chunks = store_file
    store = ChunkStore(path)
    assert len(store) == 1000 and store.row_groups == 16
    rng = random.Random(0)
    for row in [0, 63, 64, 999, *rng.sample(range(1000), 100)]:
        assert store.chunk(row) == chunks[row]
    assert store.chunks([5, 700, 5]) == [chunks[5], chunks[700], chunks[5]]
    assert store.column("id") == [c.id for c in chunks]
    with pytest.raises(IndexError, match="outside the chunk store's 1000 rows"):
        store.chunk(1000)
    with pytest.raises(IndexError):
        store.chunk(-1)


def test_rows_where_finds_ids_and_documents_in_one_column_read(store_file, monkeypatch) -> None:
    path, chunks = store_file
    reads = _Reads(monkeypatch)
    store = ChunkStore(path)
    rng = random.Random(1)
    rows = rng.sample(range(1000), 50)
    found = store.rows_where("id", [chunks[r].id for r in rows] + ["c-none", chunks[rows[0]].id])
    assert found == {chunks[r].id: [r] for r in rows}  # no entry for an absent id, none twice
    docs = store.rows_where("doc_id", ["d0", "d333", "d-none"])
    assert docs == {"d0": [0, 1, 2], "d333": [999]}  # every chunk of a document, in row order
    assert store.rows_where("id", []) == {}
    store.rows_where("id", ["c7"])
    assert reads.columns == [["id"], ["doc_id"]] and reads.groups == []  # each column read once, as Arrow


def test_opening_reads_no_chunk_and_a_row_reads_only_its_row_group(store_file, monkeypatch) -> None:
    path, _ = store_file
    reads = _Reads(monkeypatch)
    store = ChunkStore(path, cached_rows=4 * 64)  # four of the fixture's 64-row groups
    assert reads.groups == [] and reads.columns == []  # the footer only
    store.chunk(130)  # row group 2 (rows 128..191)
    store.chunk(191)
    assert reads.groups == [2] and reads.columns == []
    for row in range(0, 1000, 64):  # every group once: only the last four stay decoded
        store.chunk(row)
    assert len(store._groups) == 4 and sorted(store._groups) == [12, 13, 14, 15]
    store.chunk(0)
    assert reads.groups.count(0) == 2  # evicted, so read again
    store.column("doc_id")
    store.column("doc_id")
    assert reads.columns == [["doc_id"]]  # one column, once


def test_threads_may_share_a_store(store_file) -> None:
    """pyarrow's ParquetFile crashes when read from several threads at once: the store locks."""
    from concurrent.futures import ThreadPoolExecutor

    path, chunks = store_file
    store = ChunkStore(path, cached_rows=2 * 64)  # constant eviction
    rows = [random.Random(seed).randrange(1000) for seed in range(2000)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(store.chunk, rows))
    assert got == [chunks[r] for r in rows]


def test_the_cache_is_bounded_in_rows_even_for_an_old_store_of_large_groups(tmp_path: Path) -> None:
    path = tmp_path / "chunks.parquet"
    pq.write_table(shards.chunk_table(_chunks(1000)), path, row_group_size=400)  # groups 400, 400, 200
    store = ChunkStore(path, cached_rows=500)
    for row in (0, 450, 950):
        store.chunk(row)
    assert list(store._groups) == [2]  # each new group pushed the one before out
    store = ChunkStore(path, cached_rows=700)
    for row in (0, 450, 950):
        store.chunk(row)
    assert sorted(store._groups) == [1, 2]  # 400 + 200 rows fit, the oldest group went


def test_a_bad_store_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "chunks.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(BioragError, match=r"chunks\.parquet: not a readable chunk store"):
        ChunkStore(bad)
    table = shards.chunk_table(_chunks(5)).drop(["title", "ordinal"])
    pq.write_table(table, bad)
    with pytest.raises(BioragError, match=r"lacks column.*title, ordinal"):
        ChunkStore(bad)


def test_merged_store_is_written_in_small_row_groups(tmp_path: Path) -> None:
    """However large the shards, the merged store's row groups stay at ROW_GROUP_ROWS, so a
    lazy read never decodes more than that many chunks."""
    partial = tmp_path / ".x.partial"
    (partial / shards.SHARDS_DIR).mkdir(parents=True)
    parts = [_chunks(5000, "a"), _chunks(3000, "b")]
    for shard_no, chunks in enumerate(parts):
        pq.write_table(shards.chunk_table(chunks), shards.shard_paths(partial, shard_no)[0])
    shards.merge_chunk_shards(partial, len(parts))
    store = ChunkStore(partial / "chunks.parquet")
    meta = pq.ParquetFile(partial / "chunks.parquet").metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert max(sizes) == ROW_GROUP_ROWS and sum(sizes) == 8000
    flat = parts[0] + parts[1]
    for row in np.random.default_rng(0).integers(0, 8000, 50):
        assert store.chunk(int(row)) == flat[row]
