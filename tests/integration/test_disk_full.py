"""A full disk (issue 39, findings 4 and 5): a build that runs out of space while writing a
shard, or the next build in that folder, stops with one message naming the folder, what was
needed and what is free; nothing half-written stays; finished shards are kept, and the same
command finishes the build once there is space. On a real tmpfs (root), else skipped."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from biorag.errors import DiskFullError
from biorag.indexing.build import build_index, load_build_config


@pytest.fixture
def small_disk(tmp_path):
    """A 384 KB tmpfs (grown with .grow(size)); skipped where mounting is not allowed."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")

    class Disk:
        path = mnt

        @staticmethod
        def grow(size: str) -> None:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield Disk
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _corpus(tmp_path: Path, n: int = 400) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "notes.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"n{i}", "title": f"note {i}", "text": f"Patient {i} with fever {i % 7}."}) + "\n")
    return path


def _leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*.tmp")]


def test_a_full_disk_while_writing_shards_is_one_message_and_the_build_resumes(tmp_path, small_disk):
    cfg = load_build_config(["corpus=sample", f"corpus.path={_corpus(tmp_path)}", "shard_size=50",
                             "index.bm25=false", "name=ix", f"root={small_disk.path}"])
    with pytest.raises(DiskFullError) as e:
        build_index(cfg)
    message = str(e.value)
    assert str(small_disk.path) in message and "needed about" in message and "free there" in message
    partial = small_disk.path / ".ix.partial"
    assert _leftovers(small_disk.path) == []  # no half-written shard or state file
    kept = sorted(p.name for p in (partial / "shards").glob("*.npy"))
    assert kept and len(kept) < 8  # some shards finished before the disk filled, not all
    # the next build in the full folder: the same message, nothing left behind
    with pytest.raises(DiskFullError):
        build_index(load_build_config(["corpus=sample", f"corpus.path={_corpus(tmp_path / 'b')}",
                                       "index.bm25=false", "name=other", f"root={small_disk.path}"]))
    assert _leftovers(small_disk.path) == []
    small_disk.grow("8m")
    done = build_index(cfg)
    assert done.resumed_shards == len(kept) and done.manifest.counts.chunks == 400


def test_a_full_disk_while_caching_predictions_keeps_every_whole_line(small_disk):
    from biorag.atomic import RecordLog

    log = RecordLog(small_disk.path / "cache" / "cell.jsonl")
    written = 0
    with pytest.raises(DiskFullError, match=r"appending to cell\.jsonl"):
        for i in range(10_000):
            log.append([{"id": f"e{i}", "output": "x" * 500}])
            written = i + 1
    assert written and len(log.load()) >= written  # every whole record before the failure stays
    small_disk.grow("8m")
    again = RecordLog(log.path)
    again.append([{"id": "after", "output": "y"}])  # the torn tail, if any, is cut first
    loaded = again.load()
    assert "after" in loaded and all(f"e{i}" in loaded for i in range(written))


def test_no_space_for_the_on_disk_merge_is_an_error_before_it_starts(tmp_path, small_disk):
    """Finding 6: faiss writes the merged lists through a memory map, so a full disk killed the
    build with SIGBUS and left a half-written index.ivfdata; the space is now reserved first."""
    import faiss
    import numpy as np

    from biorag.indexing.assemble import assemble_faiss
    from biorag.indexing.faiss_index import IndexConfig
    from biorag.indexing.manifest import IVFDATA_FILE

    rng = np.random.default_rng(0)
    paths = []
    (tmp_path / "vec").mkdir()
    for k in range(4):
        v = rng.standard_normal((2_500, 32)).astype(np.float32)
        paths.append(tmp_path / "vec" / f"{k:05d}.npy")
        np.save(paths[-1], v / np.linalg.norm(v, axis=1, keepdims=True))
    cfg = IndexConfig(type="ivf", nlist=32, nprobe=4, train_size=5_000, on_disk=True)
    out = small_disk.path / "out"  # the merged lists need 10,000 x (128 + 8) bytes: 1.3 MB
    out.mkdir()
    with pytest.raises(DiskFullError, match=r"merging into index\.ivfdata"):
        assemble_faiss(cfg, paths, 10_000, 32, False, out, tmp_path / "work")
    assert sorted(p.name for p in out.iterdir()) == []  # no lists, no reservation left
    small_disk.grow("8m")
    merged = assemble_faiss(cfg, paths, 10_000, 32, False, out, tmp_path / "work")
    assert merged.ntotal == 10_000
    code = faiss.extract_index_ivf(merged).code_size
    assert (out / IVFDATA_FILE).stat().st_size <= 10_000 * (code + 8)  # what was reserved suffices
