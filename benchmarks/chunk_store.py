"""The lazy chunk store against reading chunks.parquet whole, at a size a laptop can write.

    python benchmarks/chunk_store.py            # 1M chunks (about 225 MB, a minute to write)
    python benchmarks/chunk_store.py --n 4000000

Writes a store as a build does (`ROW_GROUP_ROWS`-row groups, no column statistics) with
PubMed-snippet-sized texts (about 750 characters), then, each in a fresh process: the time and
resident memory to open it, the memory after 100 queries of 10 random hits, the time per
query, then the time to find the rows of 500 chunk ids (what a rag arm's retrieval cache and
evidence measures ask; the first lookup reads the id column) and the memory after it — for
`ChunkStore` with `rows_where` (one Arrow pass), `ChunkStore` with a Python dict from id to row
(what biorag did before) and `pyarrow.parquet.read_table` with that dict (before the lazy store).
It prints the footer size, which sets the open time of a larger store (linear in row groups).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine_line, rss_mb, run_child, table


def write(path: Path, n: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biorag.indexing.chunkstore import ROW_GROUP_ROWS

    rng = np.random.default_rng(0)
    words = np.array(["patient", "renal", "cardiac", "fever", "insulin", "tumor", "acute", "chronic", "biopsy", "therapy", "dose", "trial"])
    writer = None
    for start in range(0, n, ROW_GROUP_ROWS):
        m = min(ROW_GROUP_ROWS, n - start)
        texts = [" ".join(words[rng.integers(0, len(words), 110)]) for _ in range(m)]
        ids = [f"pmid{start + i}" for i in range(m)]
        t = pa.table({"id": ids, "doc_id": ids, "text": texts, "title": [f"title {i}" for i in ids],
                      "start": pa.array([0] * m, pa.int64()), "end": pa.array([len(x) for x in texts], pa.int64()),
                      "ordinal": pa.array([0] * m, pa.int32())})
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema, write_statistics=False)
        writer.write_table(t, row_group_size=ROW_GROUP_ROWS)
    writer.close()


def child(mode: str, path: Path, n: int) -> None:
    import pyarrow.parquet as pq

    before = rss_mb()
    start = time.perf_counter()
    if mode != "whole":
        from biorag.indexing.chunkstore import ChunkStore

        store = ChunkStore(path)
        get = store.chunk
    else:
        table = pq.read_table(path, memory_map=True)
        text = table.column("text")
        get = lambda row: text[row].as_py()  # noqa: E731
    opened, at_open = time.perf_counter() - start, rss_mb()
    rows = random.Random(0).sample(range(n), 1000)
    start = time.perf_counter()
    for row in rows:
        get(row)
    query_ms, after_mb = (time.perf_counter() - start) / 100 * 1000, rss_mb() - before
    ids = [f"pmid{r}" for r in random.Random(1).sample(range(n), 500)]
    if mode == "lazy":
        def find(wanted):
            rows = store.rows_where("id", wanted)
            return [rows[c][0] for c in wanted]
    else:  # a dict from every id to its row, from the store's id column or the whole table's
        by_id: dict[str, int] = {}

        def find(wanted):
            if not by_id:
                every = store.column("id") if mode == "lazy-dict" else table.column("id").to_pylist()
                by_id.update({c: i for i, c in enumerate(every)})
            return [by_id[c] for c in wanted]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        found = find(ids)
        times.append(time.perf_counter() - start)
    assert found == [int(c[4:]) for c in ids]
    emit({"open_s": round(opened, 3), "open_mb": round(at_open - before), "after_mb": round(after_mb),
          "query_ms": round(query_ms, 2), "first_lookup_s": round(times[0], 3),
          "lookup_ms": round(min(times[1:]) * 1000, 1), "lookup_mb": round(rss_mb() - before)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="chunks in the store")
    ap.add_argument("--dir", default=None, help="where to write the store (default: a temporary folder)")
    ap.add_argument("--child", choices=["lazy", "lazy-dict", "whole"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.path), args.n)
        return
    if not sys.platform.startswith("linux"):
        raise SystemExit("reads resident memory from /proc: Linux only")
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "chunks.parquet"
        start = time.perf_counter()
        write(path, args.n)
        print(f"wrote {args.n:,} chunks, {os.path.getsize(path) / 2**20:.0f} MB, in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
        meta = pq.ParquetFile(path).metadata
        rows = []
        for mode in ("lazy", "lazy-dict", "whole"):
            r = run_child([__file__, "--child", mode, "--path", str(path), "--n", str(args.n)])
            rows.append([{"lazy": "ChunkStore, rows_where", "lazy-dict": "ChunkStore, id dict (before)",
                          "whole": "read_table, id dict (before)"}[mode], r["open_s"],
                         r["open_mb"], r["after_mb"], r["query_ms"], r["first_lookup_s"], r["lookup_ms"],
                         r["lookup_mb"]])
    print(f"{args.n:,} chunks, {meta.num_row_groups:,} row groups, footer {meta.serialized_size / 2**20:.2f} MB")
    print(machine_line())
    print(table(["store", "open s", "RSS at open MB", "RSS after 1,000 hits MB", "ms per 10 hits",
                 "first 500-id lookup s", "next lookup ms", "RSS after lookups MB"], rows))
    per_group = meta.serialized_size / meta.num_row_groups
    groups_24m = 24_000_000 / (args.n / meta.num_row_groups)
    print(f"at 24M chunks: {groups_24m:,.0f} row groups, a footer of about {per_group * groups_24m / 2**20:.0f} MB "
          f"(open time grows with it; the whole-table read would hold about "
          f"{rows[2][3] * 24_000_000 / args.n / 1024:.0f} GB; the id lookups would add about "
          f"{(rows[0][7] - rows[0][3]) * 24_000_000 / args.n / 1024:.1f} GB with rows_where against "
          f"{(rows[1][7] - rows[1][3]) * 24_000_000 / args.n / 1024:.1f} GB with an id dict, and one "
          f"lookup take about {rows[0][6] * 24_000_000 / args.n / 1000:.2f} s against none)")


if __name__ == "__main__":
    main()
