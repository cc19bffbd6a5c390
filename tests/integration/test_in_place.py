"""PubMed scale within the disk it needs (issue 44): precomputed vectors read where they lie (no
shard copies; a killed build resumes to the same bytes; a changed source is refused by name), the
disk a build needs estimated and checked before it starts, and the search setting the build
found for the index's size recorded and used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from biorag.errors import BioragError, DiskFullError
from biorag.indexing import assemble as assemble_mod
from biorag.indexing import disk as disk_mod
from biorag.indexing.build import build_index, load_build_config
from biorag.indexing.disk import folder_bytes, plan_build
from biorag.indexing.faiss_index import SearchSettings
from biorag.indexing.index import BioragIndex

N, DIM = 4000, 384
TOPICS = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]


class Killed(BaseException):
    """Stands for the process dying at that point."""


def _source(folder: Path, n: int = N, files: int = 2, dtype: type = np.float16) -> Path:
    """Clustered vectors in `files` .npy files (float16: as the scale benchmark writes them)
    with id, title and text per row beside them."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(np.array_split(np.arange(n), files)):
        v = centres[rng.integers(0, 40, len(rows))] + 0.6 * rng.standard_normal((len(rows), DIM)).astype(np.float32)
        np.save(folder / f"part{k}.npy", (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(dtype))
        (folder / f"part{k}.jsonl").write_text("".join(json.dumps(
            {"id": f"p{r}", "title": f"{TOPICS[r % 8]} abstract {r}",
             "text": f"Patient {r} with {TOPICS[r % 8]} was treated and followed for {r % 13} months."}) + "\n"
            for r in rows))
    return folder


def _cfg(tmp_path: Path, source: Path, *extra: str, name: str = "ix"):
    return load_build_config(["corpus=sample", "index.bm25=false", "shard_size=1000", "vectors.verify=0",
                              f"vectors.path={source}", f"root={tmp_path / 'root'}", f"name={name}", *extra])


IVFPQ = ("index=ivfpq", "index.on_disk=true", "index.nlist=32", "index.pq_m=16", "index.train_size=4000")


def test_in_place_build_writes_no_vector_copies_and_peaks_under_source_plus_index(tmp_path, monkeypatch):
    source = _source(tmp_path / "src")
    root, seen = tmp_path / "root", {"peak": 0, "npy": []}
    real = os.replace

    def measuring(a, b, *args, **kw):  # every file of the build appears by a rename: measure there
        real(a, b, *args, **kw)
        seen["peak"] = max(seen["peak"], folder_bytes(root))
        seen["npy"] += [str(p) for p in root.rglob("shards/*.npy*")]

    monkeypatch.setattr(os, "replace", measuring)
    result = build_index(_cfg(tmp_path, source, *IVFPQ, "shard_size=2000"))
    monkeypatch.setattr(os, "replace", real)
    src, final = folder_bytes(source), folder_bytes(result.path)
    assert seen["npy"] == []  # the partial folder never held a vector shard
    # float32 shard copies of these float16 files alone would hold twice the source's vectors
    vectors = sum(p.stat().st_size for p in source.glob("*.npy"))
    assert seen["peak"] - final < vectors, (seen["peak"], final, vectors)
    print(f"\nsource {src:,} B ({vectors:,} B of vectors), final index {final:,} B, peak in the index root "
          f"{seen['peak']:,} B: source + peak = {(src + seen['peak']) / (src + final):.2f} x (source + index)")
    origin = result.manifest.embedder["vectors"]
    assert origin["read_in_place"] and origin["dtypes"] == ["float16"]
    assert [Path(f["file"]).name for f in origin["sources"]] == ["part0.npy", "part0.jsonl", "part1.npy",
                                                                  "part1.jsonl"]
    assert all(f["size"] > 0 and len(f["sampled"]) == 16 for f in origin["sources"])
    # the estimate said the peak before the build, within 20%
    assert result.disk is not None and abs(result.disk.peak_bytes - seen["peak"]) <= 0.2 * seen["peak"]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def test_a_killed_in_place_build_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    source = _source(tmp_path / "src")
    reference = _bytes(build_index(_cfg(tmp_path, source, *IVFPQ)).path)
    build_index(_cfg(tmp_path, source, *IVFPQ), force=True)  # warm, then killed below at the same path
    import shutil

    shutil.rmtree(tmp_path / "root" / "ix")
    real, calls = assemble_mod._write_atomic, []

    def dying(index, path):
        calls.append(path.name)
        if path.name == "00002.faiss":  # trained, two shards' lists written: killed on the third
            raise Killed
        return real(index, path)

    with monkeypatch.context() as m:
        m.setattr(assemble_mod, "_write_atomic", dying)
        with pytest.raises(Killed):
            build_index(_cfg(tmp_path, source, *IVFPQ))
    work = tmp_path / "root" / ".ix.partial" / "shards" / "ivf"
    kept = {p.name: p.stat().st_mtime_ns for p in work.glob("0000*.faiss")}
    assert sorted(kept) == ["00000.faiss", "00001.faiss"]
    written: list[str] = []
    monkeypatch.setattr(assemble_mod, "_write_atomic", lambda index, path: written.append(path.name) or real(index, path))
    done = build_index(_cfg(tmp_path, source, *IVFPQ))
    assert written == ["00002.faiss", "00003.faiss"]  # the finished shards' lists were not added again
    assert done.resumed_shards == 4 and _bytes(done.path) == reference


def test_a_source_changed_under_an_unfinished_build_is_refused_by_name(tmp_path):
    source = _source(tmp_path / "src")

    def stop(shard_no: int) -> None:
        if shard_no == 1:
            raise Killed

    with pytest.raises(Killed):
        build_index(_cfg(tmp_path, source, *IVFPQ), on_shard_done=stop)
    v = np.load(source / "part1.npy")
    v[500:1500] = v[500:1500][::-1].copy()  # re-exported in another order: same size, other contents
    np.save(source / "part1.npy", v)
    with pytest.raises(BioragError, match=r"part1\.npy has other contents .* --force"):
        build_index(_cfg(tmp_path, source, *IVFPQ))
    assert build_index(_cfg(tmp_path, source, *IVFPQ), force=True).manifest.counts.chunks == N


@pytest.mark.parametrize("settings", [("index=flat",), ("index=ivf", "index.nlist=32"),
                                      ("index=ivf", "index.nlist=32", "index.on_disk=true"), IVFPQ,
                                      ("index=ivfpq", "index.nlist=32", "index.on_disk=false")])
def test_disk_estimate_is_within_20_percent_of_the_built_index(tmp_path, settings):
    source = _source(tmp_path / "src", dtype=np.float32)
    cfg = _cfg(tmp_path, source, *settings)
    estimate = plan_build(cfg)
    built = folder_bytes(build_index(cfg).path)
    assert abs(estimate.final_bytes - built) <= 0.2 * built, (estimate.final, built)


def test_a_build_that_does_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
    source = _source(tmp_path / "src")
    monkeypatch.setattr(disk_mod, "free_space", lambda folder: 1_000_000)
    with pytest.raises(DiskFullError, match=r"needs about [\d.]+ MB of disk and 1\.0 MB is free there: [\d.]+ MB missing"):
        build_index(_cfg(tmp_path, source, *IVFPQ))
    root = tmp_path / "root"
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []  # nothing written
    assert build_index(_cfg(tmp_path, source, *IVFPQ, "check_disk=false")).manifest.counts.chunks == N


@pytest.mark.parametrize(("settings", "key", "target"), [
    (("index=ivfpq", "index.on_disk=true", "index.nlist=32", "index.pq_m=8", "index.k_factor=1", "index.nprobe=32"),
     "k_factor", 0.9),
    (("index=ivf", "index.nlist=32", "index.nprobe=1"), "nprobe", 0.99),
])
def test_the_recommended_search_setting_is_recorded_used_and_overridable(tmp_path, settings, key, target):
    source = _source(tmp_path / "src")
    result = build_index(_cfg(tmp_path, source, *settings, f"index.target_recall={target}"))
    found = result.manifest.index.recommended
    assert found[key] > 1 and found["recall@10"] >= target and found["queries"] == 100, found
    assert found["tried"]["1"] < target  # the configured value alone fell short
    assert result.manifest.index.params[key] == 1  # as configured: the recommendation is beside it
    opened = BioragIndex(result.path)
    assert getattr(opened.config, key) == found[key]
    assert getattr(BioragIndex(result.path, search=SearchSettings(**{key: 2})).config, key) == 2
    off = build_index(_cfg(tmp_path, source, *settings, "index.target_recall=null", name="off"))
    assert BioragIndex(off.path).config.__dict__[key] == 1
    assert off.manifest.index.recommended == {} and off.manifest.fingerprint == result.manifest.fingerprint
