"""The chunk store of an index, read lazily: `chunks.parquet` row by row id, not whole.

Opening reads the Parquet footer only (row counts per row group), so a store of tens of
millions of chunks opens in well under a second. `chunk(row)` decodes the one row group that
holds the row (builds write groups of at most `ROW_GROUP_ROWS` chunks, without column
statistics, which would copy texts into the footer) and keeps the last few decoded; a search
returning k hits reads at most k groups. `rows_where` finds the rows whose id (or document id)
is one of a few values with one vectorised pass over that column, held as an Arrow array
(1M chunks: +55 MB and about 20 ms a pass, where a Python dict from every id to its row added
185 MB); `column` reads a whole column as a Python list (BM25 wants every text) and keeps it.
Reads take a lock: one store may be shared by threads. Groups are read with plain reads, not memory-mapped, so the resident set
holds the decoded groups only (`benchmarks/chunk_store.py`, 1M chunks: 0.015 s and +13 MB to
open, +102 MB after 1,000 random hits, about 1 ms a hit; the whole table, as before: 0.9 s,
+1.1 GB).
The cache is bounded in rows (64 groups of `ROW_GROUP_ROWS`), so an index built before groups
were this small, with shard-sized groups, keeps fewer of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biorag.errors import BioragError
from biorag.types import Chunk

ROW_GROUP_ROWS = 1024  # chunks per Parquet row group in a built store: the unit of a lazy read
COLUMNS = ("id", "doc_id", "text", "title", "start", "end", "ordinal")


def rows_in_order(found: dict[str, int], chunk_ids: Sequence[str]) -> list[int]:
    """The row of each of `chunk_ids` from `found` (KeyError for the first it lacks)."""
    missing = next((c for c in chunk_ids if c not in found), None)
    if missing is not None:
        raise KeyError(missing)
    return [found[c] for c in chunk_ids]


class ChunkStore:
    """Chunks by row number from a Parquet file, decoding only the row groups asked for."""

    def __init__(self, path: Path, *, cached_rows: int = 64 * ROW_GROUP_ROWS) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        try:
            self._file = pq.ParquetFile(self.path)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise BioragError(f"{self.path}: not a readable chunk store ({e}); rebuild the index with --force") from None
        meta = self._file.metadata
        missing = [c for c in COLUMNS if c not in self._file.schema_arrow.names]
        if missing:
            raise BioragError(f"{self.path}: the chunk store lacks column(s) {', '.join(missing)}; "
                              "rebuild the index with --force")
        self.num_rows = meta.num_rows
        # row r lives in group g where starts[g] <= r < starts[g + 1]
        self._starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._cached_rows, self._held = cached_rows, 0
        self._groups: OrderedDict[int, Any] = OrderedDict()  # group number -> its pyarrow table
        self._lock = threading.Lock()  # pyarrow's ParquetFile is not safe to read from threads
        self._columns: dict[str, list[Any]] = {}
        self._arrow: dict[str, Any] = {}  # column name -> its pyarrow ChunkedArray

    def __len__(self) -> int:
        return self.num_rows

    @property
    def row_groups(self) -> int:
        return len(self._starts) - 1

    def chunk(self, row: int) -> Chunk:
        """The chunk at `row` (IndexError outside 0..len-1)."""
        if not 0 <= row < self.num_rows:
            raise IndexError(f"row {row} is outside the chunk store's {self.num_rows} rows")
        group = int(np.searchsorted(self._starts, row, side="right")) - 1
        table, i = self._group(group), row - int(self._starts[group])
        return Chunk(**{name: table.column(name)[i].as_py() for name in COLUMNS})

    def chunks(self, rows: Sequence[int]) -> list[Chunk]:
        return [self.chunk(int(r)) for r in rows]

    def column(self, name: str) -> list[Any]:
        """One whole column as a list, read on first use and kept."""
        with self._lock:
            if name not in self._columns:
                self._columns[name] = self._file.read(columns=[name]).column(name).to_pylist()
            return self._columns[name]

    def rows_where(self, name: str, values: Iterable[str]) -> dict[str, list[int]]:
        """{value: the rows, in order, whose column `name` holds it} for those of `values` found."""
        import pyarrow as pa
        import pyarrow.compute as pc

        wanted = list(dict.fromkeys(values))
        if not wanted:
            return {}
        with self._lock:
            if name not in self._arrow:
                self._arrow[name] = self._file.read(columns=[name]).column(name)
            column = self._arrow[name]
        # one pass: each row's position in `wanted`, null where its value is not wanted
        where = pc.index_in(column, value_set=pa.array(wanted, type=column.type))
        rows = pc.indices_nonzero(pc.is_valid(where))
        out: dict[str, list[int]] = {}
        for row, i in zip(rows.to_pylist(), pc.take(where, rows).to_pylist(), strict=True):
            out.setdefault(wanted[i], []).append(row)
        del where, rows
        pa.default_memory_pool().release_unused()  # the pass's buffers (a row-sized array) go back
        return out

    def _group(self, group: int) -> Any:
        with self._lock:
            if group in self._groups:
                self._groups.move_to_end(group)
                return self._groups[group]
            # one thread: a single small group decodes faster without the pool's hand-offs
            table = self._file.read_row_group(group, columns=list(COLUMNS), use_threads=False)
            self._groups[group] = table
            self._held += table.num_rows
            while self._held > self._cached_rows and len(self._groups) > 1:
                self._held -= self._groups.popitem(last=False)[1].num_rows
            return table
