"""The on-disk build's last step: every shard's inverted lists merged into one `index.ivfdata`,
in bounded batches that give their pages back.

faiss's own `merge_ondisk` maps every shard's file and the whole output and lets the kernel
page them in and out: the build's resident set then grows with the corpus (1.25 GB of file
pages at 8M vectors, about 3.5 GB at PubMed's 24M), and a write into the mapped output on a
full disk kills the process (SIGBUS) instead of raising. This merge writes the file faiss's
does, byte for byte, with plain reads and writes: the lists are taken in batches of
consecutive lists of at most `batch_bytes`; for a batch, each shard's part (consecutive in its
file) is read with one `pread`, copied into place and dropped from the page cache
(`posix_fadvise(DONTNEED)`), and the batch is written with one `pwrite`, synced and dropped
too. Memory is one batch whatever the corpus size. The output's space is allocated first
(`posix_fallocate`), so a full disk is a `DiskFullError` before anything is merged.

The lists are laid out as `OnDiskInvertedLists.merge_from_multiple` lays them out (list by
list, each list's codes from every shard in shard order, then its ids), and the index gets an
`OnDiskInvertedLists` over the file with the same sizes, capacities and offsets, so search,
`write_index` and `open_faiss` see what they saw after `merge_ondisk`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biorag import progress
from biorag.atomic import writing
from biorag.errors import BioragError
from biorag.indexing.faiss_index import on_disk_lists

BATCH_BYTES = 64 * 2**20
_IDS = 8  # faiss's idx_t


@dataclass
class ShardLists:
    """Where one shard's lists lie in its file (an index saved with its `ArrayInvertedLists`):
    list j is `sizes[j]` codes then `sizes[j]` ids, from byte `offsets[j]`."""

    path: str
    sizes: np.ndarray
    offsets: np.ndarray


def shard_lists(path: str, nlist: int, code_size: int) -> ShardLists:
    """The layout of a shard's lists, read through faiss (`IO_FLAG_MMAP` maps the file without
    touching its pages; the map is gone when this returns)."""
    import faiss

    index = faiss.read_index(path, faiss.IO_FLAG_MMAP)
    lists = on_disk_lists(index)
    if lists is None or lists.nlist != nlist or lists.code_size != code_size:
        raise BioragError(f"{path} is not a shard of this index (its lists do not match the trained index); "
                          "rebuild with --force")
    sizes, offsets = np.empty(nlist, np.int64), np.empty(nlist, np.int64)
    for j in range(nlist):
        one = lists.lists.at(j)
        sizes[j], offsets[j] = one.size, one.offset
    return ShardLists(path, sizes, offsets)


def merge_lists(trained: Any, shard_files: Sequence[str], ivfdata: Path, *, batch_bytes: int = BATCH_BYTES) -> int:
    """Merge the shards' lists into `ivfdata` and give `trained` (an empty trained IVF index)
    on-disk lists over it; the number of vectors merged."""
    import faiss

    ivf = faiss.extract_index_ivf(trained)
    if trained.ntotal != 0:
        raise BioragError("the on-disk merge needs an empty trained index")
    nlist, code_size = int(ivf.nlist), int(ivf.code_size)
    shards = [shard_lists(p, nlist, code_size) for p in shard_files]
    sizes = np.sum([s.sizes for s in shards], axis=0, dtype=np.int64) if shards else np.zeros(nlist, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes * (code_size + _IDS))]).astype(np.int64)
    total = int(starts[-1])
    what = f"merging into {ivfdata.name}"
    with writing(ivfdata.parent, total, what, ivfdata):  # a full disk: one message, no torn file left
        fd = os.open(ivfdata, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            if total and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, total)  # the space, for real, before the first byte
            with progress.bar("merging on-disk lists", total=nlist) as bar:
                for first, last in _batches(sizes, code_size, batch_bytes):
                    buffer = _gather(shards, sizes, starts, first, last, code_size)
                    write_batch(fd, buffer, int(starts[first]))
                    bar.advance(last - first)
        finally:
            os.close(fd)
    lists = faiss.OnDiskInvertedLists(nlist, code_size, str(ivfdata))
    lists.lists.resize(0)
    for j in range(nlist):
        one = faiss.OnDiskOneList()
        one.size = one.capacity = int(sizes[j])
        one.offset = int(starts[j])
        lists.lists.push_back(one)
    lists.totsize = total
    if total:
        lists.do_mmap()
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    trained.ntotal = ivf.ntotal = int(sizes.sum())
    return int(trained.ntotal)


def _batches(sizes: np.ndarray, code_size: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Runs of consecutive lists [first, last) of at most `batch_bytes` (a longer list alone)."""
    out, first, held = [], 0, 0
    for j, size in enumerate(sizes.tolist()):
        nbytes = size * (code_size + _IDS)
        if j > first and held + nbytes > batch_bytes:
            out.append((first, j))
            first, held = j, 0
        held += nbytes
    if len(sizes):
        out.append((first, len(sizes)))
    return out


def _gather(shards: Sequence[ShardLists], sizes: np.ndarray, starts: np.ndarray, first: int, last: int,
            code_size: int) -> bytearray:
    """Lists [first, last) as they lie in the output: each list's codes from every shard in
    shard order, then its ids. Each shard's part is one read, dropped from the cache after."""
    base = int(starts[first])
    buffer = bytearray(int(starts[last]) - base)
    view = memoryview(buffer)
    codes_at = [int(starts[j]) - base for j in range(first, last)]
    ids_at = [at + int(sizes[j]) * code_size for at, j in zip(codes_at, range(first, last), strict=True)]
    for shard in shards:
        begin = int(shard.offsets[first])
        end = int(shard.offsets[last - 1] + shard.sizes[last - 1] * (code_size + _IDS))
        if end == begin:
            continue
        part = memoryview(_read(shard.path, begin, end - begin))
        for i, j in enumerate(range(first, last)):
            n = int(shard.sizes[j])
            if not n:
                continue
            at = int(shard.offsets[j]) - begin
            view[codes_at[i]:codes_at[i] + n * code_size] = part[at:at + n * code_size]
            view[ids_at[i]:ids_at[i] + n * _IDS] = part[at + n * code_size:at + n * (code_size + _IDS)]
            codes_at[i] += n * code_size
            ids_at[i] += n * _IDS
    return buffer


def _read(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise BioragError(f"{path} is shorter than its lists say (a torn shard); rebuild with --force")
        _drop(fd, offset, length)
        return data
    finally:
        os.close(fd)


def write_batch(fd: int, buffer: bytearray, offset: int) -> None:
    """One batch into the output at `offset`, written through to disk and dropped from the page cache."""
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        done += os.pwrite(fd, view[done:], offset + done)
    os.fdatasync(fd)
    _drop(fd, offset, len(buffer))


def _drop(fd: int, offset: int, length: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
