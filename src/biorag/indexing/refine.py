"""IVF-PQ's sq8 re-ranking with the 8-bit codes on disk, read by id.

faiss's `IndexRefine` keeps every refine code in RAM (24M x 768-d sq8: 18 GB). An on-disk
`ivfpq` index (`index.on_disk`, `index.refine=sq8`) instead keeps them in `refine.sq8.npy`, a
plain (n, d) uint8 matrix written shard by shard and read by id at search: a query's PQ
shortlist of `k_factor * k` ids is read from it (in id order, with `pread`), decoded by the trained scalar
quantiser (`refine.sq8.faiss`, an empty `IndexScalarQuantizer`) and re-ranked by inner product,
as `IndexRefine` does. A search reads k_factor * k * d bytes of codes per query.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from biorag.atomic import writing
from biorag.errors import BioragError

REFINE_CODES_FILE = "refine.sq8.npy"
REFINE_QUANTIZER_FILE = "refine.sq8.faiss"


def new_quantizer(dim: int) -> Any:
    import faiss

    return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)


class CodeWriter:
    """Every vector's sq8 code, written into `refine.sq8.npy` shard by shard as the build adds
    the shards to its lists (one pass over the vectors); the file and the trained quantiser
    beside it appear only on `close`."""

    def __init__(self, quantizer_path: Path, n: int, out_dir: Path) -> None:
        import faiss

        self.quantizer, self.out_dir, self.n = faiss.read_index(str(quantizer_path)), out_dir, n
        self._tmp = out_dir / (REFINE_CODES_FILE + ".tmp")
        # plain writes, not a memory map: a map's written pages count in the build's resident
        # set until written back (3 GB at 4M x 768-d), and the build's memory is to stay flat in N
        self._needed = n * self.quantizer.sa_code_size()
        with self._writing():
            self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
            np.lib.format.write_array_header_2_0(
                self._file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                             "shape": (n, self.quantizer.sa_code_size())})
        self._rows = 0

    def _writing(self) -> Any:
        """A full disk while writing the codes: one message, and no half-written file left."""
        return writing(self.out_dir, self._needed, f"writing {REFINE_CODES_FILE}", self._tmp,
                       self.out_dir / (REFINE_QUANTIZER_FILE + ".tmp"))

    def add(self, offset: int, vectors: np.ndarray) -> None:
        if offset != self._rows:
            raise ValueError(f"refine codes are written in row order: row {self._rows} next, not {offset}")
        with self._writing():
            self._file.write(self.quantizer.sa_encode(vectors).tobytes())
        self._rows += len(vectors)

    def abort(self) -> None:
        """Stop writing: the unfinished codes file is removed."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def close(self) -> None:
        import faiss

        with self._writing():
            self._file.close()
        if self._rows != self.n:
            raise ValueError(f"{self._rows} refine codes written for {self.n} vectors")
        os.replace(self._tmp, self.out_dir / REFINE_CODES_FILE)
        with self._writing():
            faiss.write_index(self.quantizer, str(self.out_dir / (REFINE_QUANTIZER_FILE + ".tmp")))
        os.replace(self.out_dir / (REFINE_QUANTIZER_FILE + ".tmp"), self.out_dir / REFINE_QUANTIZER_FILE)


class DiskRefined:
    """An IVF-PQ index whose shortlist is re-ranked with sq8 codes read from disk by id.

    The codes are read with `os.pread`, one read per run of adjacent ids, not through a memory
    map: a mapped file's pages count in the searching process's resident set once touched (the
    kernel maps up to 64 KB around each faulting page already in the page cache), so a map's
    RSS would grow towards the whole 18 GB file at 24M x 768-d. Read pages stay in the page
    cache, shared and reclaimable, and the process keeps only the shortlist's codes."""

    def __init__(self, base: Any, folder: Path, k_factor: int = 8) -> None:
        import faiss

        self.base, self.k_factor = base, k_factor
        self.quantizer = faiss.read_index(str(folder / REFINE_QUANTIZER_FILE))
        path = folder / REFINE_CODES_FILE
        shape, dtype, self._start = _npy_header(path)  # read, not mapped: a short file is a message
        if dtype != np.uint8 or len(shape) != 2 or shape[1] != self.quantizer.sa_code_size():
            raise BioragError(f"{path}: {shape} {dtype} are not sq8 codes of {self.quantizer.d}-d vectors; "
                              "rebuild with --force")
        if shape[0] != base.ntotal:
            raise BioragError(f"{path} holds {shape[0]} codes for an index of {base.ntotal} vectors; "
                              "rebuild with --force")
        need = self._start + shape[0] * shape[1]
        if path.stat().st_size < need:
            raise BioragError(f"{path}: {path.stat().st_size:,} bytes, but the index's {shape[0]:,} codes need "
                              f"{need:,} (a truncated copy?); rebuild with --force")
        self.code_size = int(shape[1])
        self._fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past each code
        self.d, self.ntotal = base.d, base.ntotal

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """The sq8 codes of sorted, unique `ids`, as a (len(ids), code_size) uint8 array."""
        out = np.empty((len(ids), self.code_size), dtype=np.uint8)
        if not len(ids):
            return out
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1  # runs of adjacent ids: one read each
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ids)], strict=True):
            size = int(hi - lo) * self.code_size
            data = os.pread(self._fd, size, self._start + int(ids[lo]) * self.code_size)
            if len(data) != size:
                raise OSError(f"refine codes end early: rows {ids[lo]}..{ids[hi - 1]} not in the file")
            out[lo:hi] = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.code_size)
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, shortlist = self.base.search(queries, k * self.k_factor)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, ids in enumerate(shortlist):
            ids = np.unique(ids[ids >= 0])  # sorted: the reads go through the file in order
            if not len(ids):
                continue
            s = self.quantizer.sa_decode(self.codes(ids)) @ queries[i]
            top = np.argsort(-s, kind="stable")[:k]
            scores[i, : len(top)], rows[i, : len(top)] = s[top], ids[top]
        return scores, rows

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """An .npy file's shape, dtype and data offset, from its header alone."""
    try:
        with path.open("rb") as f:
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            return shape, dtype, f.tell()
    except (OSError, ValueError) as e:
        raise BioragError(f"{path}: not a readable .npy file ({e}); rebuild with --force") from None
