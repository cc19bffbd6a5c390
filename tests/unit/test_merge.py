"""The batched on-disk merge (biorag.indexing.merge) against faiss's own `merge_ondisk`."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from faiss.contrib.ondisk import merge_ondisk

from biorag.errors import BioragError
from biorag.indexing import merge
from biorag.indexing.faiss_index import open_faiss


def _shards(folder: Path, kind: str, sizes: list[int], nlist: int, dim: int = 16) -> tuple[Path, list[str], np.ndarray]:
    """A trained, empty index and shard indexes of `sizes` vectors each (ids global, in order),
    clustered so that some lists are long and some empty."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, dim)).astype(np.float32)
    x = centres[rng.integers(0, 6, sum(sizes))] + 0.05 * rng.standard_normal((sum(sizes), dim)).astype(np.float32)
    quantizer = faiss.IndexFlatL2(dim)
    index = (faiss.IndexIVFPQ(quantizer, dim, nlist, 4, 4) if kind == "ivfpq"
             else faiss.IndexIVFFlat(quantizer, dim, nlist))
    index.train(np.concatenate([x, rng.standard_normal((40 * nlist, dim)).astype(np.float32)]))
    trained = folder / "trained.faiss"
    faiss.write_index(index, str(trained))
    files, at = [], 0
    for k, size in enumerate(sizes):
        shard = faiss.read_index(str(trained))
        shard.add_with_ids(x[at:at + size], np.arange(at, at + size, dtype=np.int64))
        files.append(str(folder / f"{k:05d}.faiss"))
        faiss.write_index(shard, files[-1])
        at += size
    return trained, files, x


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_the_merge_writes_faiss_s_file_byte_for_byte_in_small_batches(tmp_path: Path, monkeypatch, kind: str) -> None:
    trained, files, x = _shards(tmp_path, kind, [300, 0, 457, 120], nlist=32)
    reference = faiss.read_index(str(trained))
    merge_ondisk(reference, files, str(tmp_path / "faiss.ivfdata"))

    ref_ivf = faiss.extract_index_ivf(reference)
    sizes = [ref_ivf.invlists.list_size(j) for j in range(32)]
    longest = max(sizes) * (ref_ivf.code_size + 8)
    budget = longest // 2  # a list longer than a batch: alone in its batch
    assert 0 in sizes  # and empty lists

    written: list[int] = []
    real = merge.write_batch
    monkeypatch.setattr(merge, "write_batch", lambda fd, buf, off: (written.append(len(buf)), real(fd, buf, off)))
    ours = faiss.read_index(str(trained))
    assert merge.merge_lists(ours, files, tmp_path / "index.ivfdata", batch_bytes=budget) == 877
    assert (tmp_path / "index.ivfdata").read_bytes() == (tmp_path / "faiss.ivfdata").read_bytes()

    ivf = faiss.extract_index_ivf(ours)
    assert [ivf.invlists.list_size(j) for j in range(32)] == sizes
    assert len(written) > 5 and max(written) <= max(budget, longest) and sum(written) == sum(sizes) * (ivf.code_size + 8)

    ivf.nprobe = faiss.extract_index_ivf(reference).nprobe = 8
    expected = reference.search(x[:40], 10)
    got = ours.search(x[:40], 10)
    assert np.array_equal(got[1], expected[1]) and np.array_equal(got[0], expected[0])
    faiss.write_index(ours, str(tmp_path / "index.faiss"))  # as the build saves it, then opened as a search does
    opened = open_faiss(tmp_path / "index.faiss", True)
    faiss.extract_index_ivf(opened).nprobe = 8
    assert np.array_equal(opened.search(x[:40], 10)[1], expected[1])


def test_batches_are_runs_of_lists_within_the_budget() -> None:
    sizes = np.array([1, 1, 1, 10, 0, 0, 2, 1])
    batches = merge._batches(sizes, 8, 32)  # 16 bytes an entry
    assert batches == [(0, 2), (2, 3), (3, 4), (4, 7), (7, 8)]
    assert merge._batches(np.array([], dtype=np.int64), 8, 32) == []


def test_a_shard_of_another_index_is_refused(tmp_path: Path) -> None:
    trained, files, _ = _shards(tmp_path, "ivf", [100], nlist=16)
    (tmp_path / "other").mkdir()
    _, others, _ = _shards(tmp_path / "other", "ivf", [100], nlist=8)
    with pytest.raises(BioragError, match="not a shard of this index"):
        merge.merge_lists(faiss.read_index(str(trained)), [files[0], others[0]], tmp_path / "index.ivfdata")
