"""On-disk IVF indexes: merged inverted lists on disk, memory-mapped at search."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from biorag.errors import BioragError, ConfigError, DiskFullError
from biorag.indexing.assemble import assemble_faiss
from biorag.indexing.build import build_index, load_build_config
from biorag.indexing.faiss_index import IndexConfig, open_faiss, set_search_params
from biorag.indexing.manifest import IVFDATA_FILE
from biorag.retrieval.open import open_index_retriever


def _shards(folder: Path, n: int, dim: int, shard: int, seed: int = 0) -> list[Path]:
    """Clustered unit vectors, written shard by shard as a build writes them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        v = centres[rng.integers(0, 50, m)] + 0.3 * rng.standard_normal((m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        paths.append(folder / f"{k:05d}.npy")
        np.save(paths[-1], v)
    return paths


def _queries(paths: list[Path], n: int = 50) -> np.ndarray:
    return np.ascontiguousarray(np.load(paths[0])[:n])


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_on_disk_merge_gives_the_in_memory_index_results(tmp_path: Path, kind: str) -> None:
    paths = _shards(tmp_path / "vec", 10_000, 32, 1_500)
    settings = {"type": kind, "nlist": 64, "nprobe": 8, "pq_m": 8, "refine": "none", "train_size": 5_000}
    memory = assemble_faiss(IndexConfig(**settings), paths, 10_000, 32, False, tmp_path, tmp_path / "w0")
    out = tmp_path / "disk"
    out.mkdir()
    merged = assemble_faiss(IndexConfig(**settings, on_disk=True), paths, 10_000, 32, False, out, tmp_path / "w1")
    faiss.write_index(merged, str(out / "index.faiss"))
    moved = tmp_path / "renamed"  # a build renames its folder into place: lists follow by name
    os.replace(out, moved)
    opened = open_faiss(moved / "index.faiss", on_disk=True)
    for index in (memory, opened):
        faiss.extract_index_ivf(index).nprobe = 8
    q = _queries(paths)
    d0, i0 = memory.search(q, 10)
    d1, i1 = opened.search(q, 10)
    assert opened.ntotal == 10_000 and np.array_equal(i0, i1) and np.allclose(d0, d1)
    assert isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(opened).invlists), faiss.OnDiskInvertedLists)


def test_on_disk_sq8_refine_reranks_as_faiss_index_refine_does(tmp_path: Path) -> None:
    """The codes on disk, read by id, give IndexRefine(IVF-PQ, sq8)'s neighbours and scores."""
    paths = _shards(tmp_path / "vec", 10_000, 32, 1_500)
    settings = {"type": "ivfpq", "nlist": 64, "nprobe": 8, "pq_m": 8, "refine": "sq8", "k_factor": 4,
                "train_size": 5_000}
    memory = assemble_faiss(IndexConfig(**settings), paths, 10_000, 32, False, tmp_path, tmp_path / "w0")
    assert isinstance(memory, faiss.IndexRefine)
    out = tmp_path / "disk"
    out.mkdir()
    merged = assemble_faiss(IndexConfig(**settings, on_disk=True), paths, 10_000, 32, False, out, tmp_path / "w1")
    faiss.write_index(merged, str(out / "index.faiss"))
    codes = np.load(out / "refine.sq8.npy", mmap_mode="r")
    assert codes.shape == (10_000, 32) and codes.dtype == np.uint8  # one byte a dimension
    opened = open_faiss(out / "index.faiss", on_disk=True, refine=True)
    set_search_params(opened, IndexConfig(**settings))
    set_search_params(memory, IndexConfig(**settings))
    assert opened.k_factor == 4 and faiss.extract_index_ivf(opened.base).nprobe == 8
    q = _queries(paths)
    d0, i0 = memory.search(q, 10)
    d1, i1 = opened.search(q, 10)
    assert [set(a) for a in i0] == [set(b) for b in i1]
    assert np.allclose(np.sort(d0, axis=1), np.sort(d1, axis=1), atol=1e-5)
    unrefined = open_faiss(out / "index.faiss", on_disk=True)  # the PQ distances alone
    faiss.extract_index_ivf(unrefined).nprobe = 8
    exact = faiss.IndexFlatIP(32)
    exact.add(np.concatenate([np.load(p) for p in paths]))
    truth = exact.search(q, 10)[1]
    recall = [np.mean([len(set(a) & set(t)) / 10 for a, t in zip(i, truth, strict=True)])
              for i in (unrefined.search(q, 10)[1], i1)]
    assert recall[1] > recall[0]  # the re-ranking is what lifts recall


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_a_memory_mapped_open_does_not_read_the_lists_into_ram(tmp_path: Path) -> None:
    n, dim = 200_000, 64  # 51 MB of inverted lists
    paths = _shards(tmp_path / "vec", n, dim, 20_000)
    cfg = IndexConfig(type="ivf", nlist=256, train_size=10_000, on_disk=True)
    merged = assemble_faiss(cfg, paths, n, dim, False, tmp_path, tmp_path / "w")
    faiss.write_index(merged, str(tmp_path / "index.faiss"))
    del merged
    lists_mb = (tmp_path / IVFDATA_FILE).stat().st_size / 2**20
    assert lists_mb > 45
    before = _rss_mb()
    opened = open_faiss(tmp_path / "index.faiss", on_disk=True)
    at_open = _rss_mb() - before
    faiss.extract_index_ivf(opened).nprobe = 1
    opened.search(_queries(paths, 1), 10)  # reads one list of 256 (and starts OpenMP's threads)
    after_search = _rss_mb() - before
    assert at_open < 0.1 * lists_mb, (at_open, lists_mb)
    assert after_search < 0.25 * lists_mb, (after_search, lists_mb)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_refine_codes_are_read_by_id_and_do_not_grow_the_resident_set(tmp_path: Path) -> None:
    """Re-ranking thousands of shortlists reads the right codes (runs of adjacent ids in one
    read) and keeps the process's memory far below the codes file, which stays in the page cache."""
    from biorag.indexing.refine import REFINE_CODES_FILE, CodeWriter, DiskRefined, new_quantizer

    n, dim = 100_000, 256  # 25.6 MB of codes
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    quantizer = new_quantizer(dim)
    quantizer.train(vectors[:10_000])
    faiss.write_index(quantizer, str(tmp_path / "q.faiss"))
    writer = CodeWriter(tmp_path / "q.faiss", n, tmp_path)
    for start in range(0, n, 30_000):
        writer.add(start, vectors[start:start + 30_000])
    writer.close()
    base = faiss.IndexFlatIP(dim)
    base.add(vectors)
    base.search(vectors[:512], 80)  # the search's own buffers and threads, before measuring
    codes_mb = (tmp_path / REFINE_CODES_FILE).stat().st_size / 2**20
    before = _rss_mb()
    refined = DiskRefined(base, tmp_path, k_factor=8)
    ids = np.array([0, 1, 2, 7, 50_000, 50_001, n - 1])
    assert np.array_equal(refined.codes(ids), quantizer.sa_encode(vectors[ids]))
    sources = rng.integers(0, n, 4)
    q = vectors[sources] + 0.05 * rng.standard_normal((4, dim)).astype(np.float32)
    scores, rows = refined.search(q, 10)
    exact = base.search(q, 10)[1]
    assert np.array_equal(rows[:, 0], sources) and np.all(np.diff(scores, axis=1) <= 0)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)]) >= 0.9
    for _ in range(6):  # 6 x 512 queries x 80 shortlisted codes: reads most of the file's pages
        refined.search(rng.standard_normal((512, dim)).astype(np.float32), 10)
    assert _rss_mb() - before < 0.25 * codes_mb, (_rss_mb() - before, codes_mb)


def test_a_failed_merge_leaves_nothing_half_written_and_a_rerun_ends_with_the_same_index(tmp_path, monkeypatch) -> None:
    paths = _shards(tmp_path / "vec", 6_000, 16, 1_000)
    cfg = IndexConfig(type="ivf", nlist=32, nprobe=32, train_size=3_000, on_disk=True)
    work = tmp_path / "w"
    import errno

    from biorag.indexing import merge

    def disk_full(fd, buffer, offset):
        os.pwrite(fd, bytes(buffer[:1000]), offset)  # part of the lists, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge, "write_batch", disk_full)
    # a full disk is the one full-disk message (issue 39), not faiss's words
    with pytest.raises(DiskFullError, match=r"no space left on the device while merging into index\.ivfdata"):
        assemble_faiss(cfg, paths, 6_000, 16, False, tmp_path, work)
    assert not (tmp_path / IVFDATA_FILE).exists()
    shard_files = sorted(work.glob("0*.faiss"))
    assert len(shard_files) == 6  # the added shards survive the failure
    stamps = {p: p.stat().st_mtime_ns for p in shard_files}
    monkeypatch.undo()
    merged = assemble_faiss(cfg, paths, 6_000, 16, False, tmp_path, work)
    assert {p: p.stat().st_mtime_ns for p in shard_files} == stamps  # reused, not added again
    memory = assemble_faiss(IndexConfig(type="ivf", nlist=32, nprobe=32, train_size=3_000), paths, 6_000,
                            16, False, tmp_path, tmp_path / "w2")
    faiss.extract_index_ivf(merged).nprobe = faiss.extract_index_ivf(memory).nprobe = 32
    q = _queries(paths)
    assert np.array_equal(merged.search(q, 10)[1], memory.search(q, 10)[1])


def test_on_disk_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs an IVF index"):
        IndexConfig(type="hnsw", on_disk=True)
    with pytest.raises(ConfigError, match=r"refine codes on disk in 8 bits: set index.refine=sq8"):
        IndexConfig(type="ivfpq", refine="flat", on_disk=True)
    assert IndexConfig(type="ivfpq", on_disk=True).refine == "sq8"


def test_build_and_search_an_on_disk_index_end_to_end(tmp_path: Path, capfd) -> None:
    corpus = tmp_path / "notes.jsonl"
    topics = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]
    corpus.write_text("".join(json.dumps({"id": f"n{i}", "title": f"{topics[i % 8]} note {i}",
                                          "text": f"Patient {i} presents with {topics[i % 8]}."}) + "\n"
                              for i in range(120)))
    common = ["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", f"root={tmp_path}", "shard_size=50",
              "index=ivf", "index.nlist=4", "index.nprobe=4"]
    memory = build_index(load_build_config([*common, "name=mem"]))
    disk = build_index(load_build_config([*common, "name=disk", "index.on_disk=true"]))
    assert {p.name for p in disk.path.iterdir()} == {"index.faiss", IVFDATA_FILE, "chunks.parquet", "manifest.json"}
    assert disk.manifest.files["ivfdata"] == IVFDATA_FILE and disk.manifest.index.params["on_disk"]
    assert "refine" not in disk.manifest.files  # ivf has no refine store
    assert memory.manifest.fingerprint != disk.manifest.fingerprint
    query = "child with fever"
    got = [[h.chunk.id for h in open_index_retriever(r.path, "dense").retrieve(query, 5)] for r in (memory, disk)]
    assert got[0] == got[1] and got[0][0].startswith("n")
    # the lists are recorded where the build ended up, not in its .partial folder (plain faiss
    # opens them there); biorag maps them from the index's own folder, read-only, printing
    # nothing (faiss's IO_FLAG_ONDISK_SAME_DIR prints a line to stdout), and a moved folder
    # still finds its lists
    recorded = faiss.read_index(str(disk.path / "index.faiss"), faiss.IO_FLAG_SKIP_IVF_DATA)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(recorded).invlists)
    assert lists.filename == str((disk.path / IVFDATA_FILE).resolve())
    capfd.readouterr()
    opened = open_faiss(disk.path / "index.faiss", on_disk=True)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(opened).invlists)  # (`opened` owns it)
    assert lists.read_only and lists.filename == str(disk.path / IVFDATA_FILE)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    moved = disk.path.with_name("moved")
    os.replace(disk.path, moved)
    assert [h.chunk.id for h in open_index_retriever(moved, "dense").retrieve(query, 5)] == got[1]
    os.replace(moved, disk.path)
    whole = (disk.path / IVFDATA_FILE).read_bytes()
    (disk.path / IVFDATA_FILE).write_bytes(whole[: len(whole) // 2])  # a truncated copy
    with pytest.raises(BioragError, match=r"index.ivfdata: .* bytes, but the index's lists need"):
        open_faiss(disk.path / "index.faiss", on_disk=True)
    (disk.path / IVFDATA_FILE).write_bytes(whole)
    pq_common = [*common[:-3], "index=ivfpq", "index.nlist=4", "index.nprobe=4", "index.pq_m=8", "index.pq_nbits=4", "index.k_factor=8"]
    refined = [build_index(load_build_config([*pq_common, f"name=pq{i}", *extra]))
               for i, extra in enumerate([[], ["index.on_disk=true"]])]
    assert {"refine.sq8.npy", "refine.sq8.faiss"} <= {p.name for p in refined[1].path.iterdir()}
    assert refined[1].manifest.files["refine"] == "refine.sq8.npy"
    from typer.testing import CliRunner

    from biorag.cli import app

    info = CliRunner().invoke(app, ["index", "info", str(refined[1].path)], terminal_width=200)
    assert info.exit_code == 0 and "on disk: index.ivfdata, refine.sq8.npy" in info.output, info.output
    hits = [[h.chunk.id for h in open_index_retriever(r.path, "dense").retrieve(query, 5)] for r in refined]
    assert set(hits[0]) == set(hits[1])
    codes = refined[1].path / "refine.sq8.npy"
    whole = codes.read_bytes()
    codes.write_bytes(whole[: len(whole) - 10])  # a truncated copy of the refine codes
    with pytest.raises(BioragError, match=r"refine.sq8.npy: .* bytes, but the index's .* codes need .* --force"):
        open_index_retriever(refined[1].path, "dense")
    codes.write_bytes(whole)
    (disk.path / IVFDATA_FILE).unlink()
    with pytest.raises(BioragError, match=r"on-disk index without its index.ivfdata"):
        open_index_retriever(disk.path, "dense")


def test_killing_an_on_disk_build_mid_merge_and_rerunning_ends_with_the_same_index(tmp_path: Path) -> None:
    """A real SIGKILL while the lists merge (a torn index.ivfdata left behind): the same command
    again resumes from the added shards and ends with the index a clean build writes."""
    import subprocess
    import sys

    corpus = tmp_path / "notes.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"n{i}", "title": f"note {i}", "text": f"Patient {i} has fever."})
                              + "\n" for i in range(100)))
    common = ["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", "shard_size=40", "index=ivfpq",
              "index.nlist=4", "index.nprobe=4", "index.pq_m=8", "index.pq_nbits=4", "index.on_disk=true"]
    script = f"""
import os, signal
from pathlib import Path
from biorag.indexing import merge

def killed(fd, buffer, offset):
    os.pwrite(fd, bytes(buffer[:4096]), offset)  # part of the lists written, then the process dies
    os.kill(os.getpid(), signal.SIGKILL)

merge.write_batch = killed
from biorag.indexing.build import build_index, load_build_config
build_index(load_build_config({[*common, "name=killed"]!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    root = Path(os.environ["BIORAG_INDEX_DIR"])
    assert (root / ".killed.partial" / IVFDATA_FILE).exists() and not (root / "killed").exists()  # torn
    resumed = build_index(load_build_config([*common, "name=killed"]))
    clean = build_index(load_build_config([*common, "name=clean"]))
    assert resumed.resumed_shards == 3
    for name in (IVFDATA_FILE, "refine.sq8.npy", "chunks.parquet"):
        assert (resumed.path / name).read_bytes() == (clean.path / name).read_bytes(), name
    hits = [[h.chunk.id for h in open_index_retriever(r.path, "dense").retrieve("fever in patient 7", 5)]
            for r in (resumed, clean)]
    assert hits[0] == hits[1]


def _rss_file_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc (Linux)")
def test_releasing_an_on_disk_index_s_pages_takes_them_out_of_the_resident_set(tmp_path: Path) -> None:
    from biorag.indexing.faiss_index import release_list_pages

    dim, nlist, n = 64, 16, 200_000  # lists of 53 MB
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    index.train(x[:5_000])
    lists = faiss.OnDiskInvertedLists(nlist, index.code_size, str(tmp_path / IVFDATA_FILE))
    index.replace_invlists(lists, True)
    lists.this.disown()
    index.add(x)
    index.nprobe = nlist
    index.search(x[:20], 10)  # every list read through the map
    size_mb = n * (index.code_size + 8) / 2**20  # the lists' bytes (the file is larger: room to grow)
    before = _rss_file_mb()
    release_list_pages(index)
    after = _rss_file_mb()
    assert before - after > 0.5 * size_mb, (before, after, size_mb)
    assert np.array_equal(index.search(x[:20], 10)[1], index.search(x[:20], 10)[1])  # still searchable
    assert index.search(x[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]
    release_list_pages(faiss.IndexFlatL2(dim))  # nothing mapped: nothing to do
