"""IVF-PQ's sq8 re-ranking with the 8-bit codes on disk, read by id.

faiss's `IndexRefine` keeps every refine code in RAM (24M x 768-d sq8: 18 GB). An on-disk
`ivfpq` index (`index.on_disk`, `index.refine=sq8`) instead keeps them in `refine.sq8.npy`, a
plain (n, d) uint8 matrix written shard by shard, memory-mapped at search: a query's PQ
shortlist of `k_factor * k` ids is read from it (in id order), decoded by the trained scalar
quantiser (`refine.sq8.faiss`, an empty `IndexScalarQuantizer`) and re-ranked by inner product,
as `IndexRefine` does. A search reads k_factor * k * d bytes of codes per query.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

REFINE_CODES_FILE = "refine.sq8.npy"
REFINE_QUANTIZER_FILE = "refine.sq8.faiss"


def new_quantizer(dim: int) -> Any:
    import faiss

    return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)


def write_codes(quantizer: Any, vector_files: list[Path], n: int, out_dir: Path) -> None:
    """The trained quantiser and every vector's sq8 code, shard by shard (one shard in RAM)."""
    import faiss

    tmp = out_dir / (REFINE_CODES_FILE + ".tmp")
    codes = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, quantizer.sa_code_size()))
    offset = 0
    for path in vector_files:
        vectors = np.ascontiguousarray(np.load(path, mmap_mode="r"), dtype=np.float32)
        codes[offset : offset + len(vectors)] = quantizer.sa_encode(vectors)
        offset += len(vectors)
    codes.flush()
    del codes
    os.replace(tmp, out_dir / REFINE_CODES_FILE)
    faiss.write_index(quantizer, str(out_dir / (REFINE_QUANTIZER_FILE + ".tmp")))
    os.replace(out_dir / (REFINE_QUANTIZER_FILE + ".tmp"), out_dir / REFINE_QUANTIZER_FILE)


class DiskRefined:
    """An IVF-PQ index whose shortlist is re-ranked with sq8 codes read from disk by id."""

    def __init__(self, base: Any, folder: Path, k_factor: int = 8) -> None:
        import faiss

        self.base, self.k_factor = base, k_factor
        self.quantizer = faiss.read_index(str(folder / REFINE_QUANTIZER_FILE))
        self.codes = np.load(folder / REFINE_CODES_FILE, mmap_mode="r")
        self.d, self.ntotal = base.d, base.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, shortlist = self.base.search(queries, k * self.k_factor)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, ids in enumerate(shortlist):
            ids = np.unique(ids[ids >= 0])  # sorted: the reads go through the file in order
            if not len(ids):
                continue
            vectors = self.quantizer.sa_decode(np.ascontiguousarray(self.codes[ids]))
            s = vectors @ queries[i]
            top = np.argsort(-s, kind="stable")[:k]
            scores[i, : len(top)], rows[i, : len(top)] = s[top], ids[top]
        return scores, rows
