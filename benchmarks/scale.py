"""PubMed scale on one machine: an on-disk IVF-PQ index (sq8 re-ranking codes on disk too) built
by `biorag index build` from precomputed vectors, at sizes up to what this machine holds, and the
fitted law projected to MedRAG's PubMed (23.9M snippets) at 768-d.

    python benchmarks/scale.py                        # 1M, 2M, 4M x 768 + the real MiniLM rung
    python benchmarks/scale.py --sizes 250000 1000000 --real-index indexes/icd10cm-minilm
    python benchmarks/scale.py --sizes 24000000 --no-real --ray-limit 0  # the real size: ~1 h, 60 GB of disk

The sources are float16 `.npy` read in place by the build (no float32 copies); peak_disk is the
source plus the most the build held at once (the filesystem's use, sampled every second), beside
the build's own estimate of it; build_peak_anon and build_peak_file are the peaks of the build's
own memory (RssAnon) and of the mapped files' pages in its resident set (RssFile), sampled every
second, beside its peak RSS; qps and recall@10 are at k_factor 8, qps_k16 and recall@10_k16 at 16;
recommended is the search setting the build's
recall check chose (biorag.indexing.tuning). A rung that does not fit the free disk is refused
before it writes.

For each rung: synthetic clustered unit vectors (1,000 Gaussian clusters in a 32-d latent
space mapped into 768-d, written file by file as
float16 `.npy` with their ids, never held whole) go through `biorag index build vectors.path=...
index=ivfpq index.on_disk=true` in a fresh process (build seconds and that process's peak RSS);
then, in another fresh process, the index is opened (seconds), searched one query at a time
(QPS) and its RSS read after the searches; recall@10 is against exact inner-product neighbours
computed block by block from the same files. The real rung re-indexes the MiniLM vectors of a
built flat index (ICD-10-CM, built here with `biorag index build corpus=icd10cm` if none is
given) the same way. Each cost is fitted as a*N^b over the synthetic rungs and projected to 24M.
search RSS is the whole resident set after the searches; search_anon the part of it that is
the process's own memory (RssAnon), the rest being pages of the memory-mapped inverted lists,
which the kernel drops under memory pressure. The sq8 refine codes are read by id with pread,
so they stay in the page cache, not in the resident set. engine=ray is timed against one process at the end.
Page cache: the "cold" open is a fresh process; the files may still be in the OS page cache
(dropping it needs root)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from _common import (
    _proc_status_mb,
    cpu_count,
    emit,
    machine_line,
    peak_rss_mb,
    rss_mb,
    run_child,
    table,
    verdict,
)

DIM = 768
LATENT = 32
FILE_ROWS = 250_000
PUBMED = 23_900_000
QUERIES = 200
SETTINGS = ["index=ivfpq", "index.on_disk=true", "index.refine=sq8", "index.nlist=4096", "index.pq_m=64",
            "index.train_size=160000", "index.bm25=false", "index.nprobe=32", "index.k_factor=8",
            "shard_size=65536", "vectors.verify=0"]


def _space(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """1,000 cluster centres in a 32-d latent space and its random map into `dim` dimensions:
    like text embeddings, the data has a low intrinsic dimension, so neighbours are not ties
    (isotropic 768-d clusters make every member of a cluster an equal neighbour, which no index
    and no retriever faces in practice)."""
    rng = np.random.default_rng(12345)
    return (rng.standard_normal((1000, LATENT)).astype(np.float32),
            (rng.standard_normal((LATENT, dim)) / math.sqrt(LATENT)).astype(np.float32))


def _points(rng: np.random.Generator, space: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    centres, lift = space
    z = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, LATENT), np.float32)
    v = z @ lift + 0.05 * rng.standard_normal((n, lift.shape[1]), np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_synthetic(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    space = _space(DIM)
    for k, start in enumerate(range(0, n, FILE_ROWS)):
        m = min(FILE_ROWS, n - start)
        np.save(folder / f"part{k:04d}.npy", _points(np.random.default_rng(k), space, m).astype(np.float16))
        (folder / f"part{k:04d}.json").write_text(json.dumps([f"v{start + i}" for i in range(m)]))


def queries(dim: int) -> np.ndarray:
    return _points(np.random.default_rng(999), _space(dim), QUERIES)


def exact_neighbours(folder: Path, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Row ids of the exact top k by inner product, file by file (float16 read as the build
    reads it: float32, normalised)."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    offset = 0
    for path in sorted(folder.glob("*.npy")):
        block = np.load(path).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        s = q @ block.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + offset], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
        offset += len(block)
    return best_i


def child_build(args: list[str]) -> None:
    """The build in this process; its peak disk is the filesystem's use above where it started,
    sampled every second (the source, written before, is added by the caller)."""
    import threading

    from biorag.indexing.build import build_index, load_build_config

    cfg = load_build_config(args)
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    base, peak, done = shutil.disk_usage(root).used, [0], threading.Event()
    peaks = {"RssAnon": 0.0, "RssFile": 0.0}

    def sample() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], shutil.disk_usage(root).used - base)
            for field in peaks:
                peaks[field] = max(peaks[field], _proc_status_mb(field) or 0.0)

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    result = build_index(cfg, force=True)
    done.set()
    peak[0] = max(peak[0], shutil.disk_usage(root).used - base)
    emit({"s": round(time.perf_counter() - start, 1), "path": str(result.path), "peak_rss_mb": round(peak_rss_mb(), 1),
          "anon_mb": _proc_status_mb("RssAnon"), "peak_anon_mb": round(peaks["RssAnon"], 1),
          "peak_file_mb": round(peaks["RssFile"], 1), "peak_disk_bytes": peak[0],
          "estimate_peak_bytes": result.disk.peak_bytes if result.disk else None,
          "recommended": result.manifest.index.recommended})


def child_search(path: str, queries_file: str, nprobe: int, k_factor: int) -> None:
    from biorag.indexing.faiss_index import SearchSettings
    from biorag.indexing.index import BioragIndex

    q = np.load(queries_file)
    base = rss_mb()
    start = time.perf_counter()
    index = BioragIndex(Path(path), search=SearchSettings(nprobe=nprobe, k_factor=k_factor))
    open_s = time.perf_counter() - start
    open_rss = rss_mb()
    index.search(q[:5], 10)  # first touch
    start = time.perf_counter()
    rows = np.vstack([index.search(q[i:i + 1], 10)[1] for i in range(len(q))])
    qps = len(q) / (time.perf_counter() - start)
    chunks = [index.chunk(int(r)).id for r in rows[:20, 0]]  # texts by row, read lazily
    emit({"open_s": round(open_s, 3), "open_rss_mb": round(open_rss - base, 1), "search_rss_mb": round(rss_mb(), 1),
          "search_anon_mb": _proc_status_mb("RssAnon"),
          "qps": round(qps, 1), "rows": rows.tolist(), "chunk_ids": chunks})


def tiny_embedder(work: Path, dim: int) -> Path:
    """A random 768-d BERT (the build checks the vectors' dimension against its embedder and
    records it; the synthetic vectors are not re-encoded: vectors.verify=0)."""
    path = work / f"bert-{dim}"
    if not (path / "config.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers.tiny_bert import build_tiny_bert

        build_tiny_bert(path, hidden_size=dim)
    return path


def _size_gb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9


def rung(name: str, source: Path, n: int, embedder: list[str], q: np.ndarray, truth: np.ndarray, work: Path,
         nprobe: int, settings: list[str] = SETTINGS) -> dict:
    args = ["corpus=sample", f"corpus.name={name}", f"name={name}", f"root={work / 'indexes'}",
            f"vectors.path={source}", *embedder, *settings]
    built = run_child([__file__, "--child-build", json.dumps(args)], timeout=3 * 3600)
    np.save(work / "queries.npy", q)
    found, wider = (run_child([__file__, "--child-search", built["path"], str(work / "queries.npy"), str(nprobe),
                               str(k_factor)]) for k_factor in (8, 16))

    def recall_of(run: dict) -> float:
        return float(np.mean([len(set(r) & set(t)) / 10 for r, t in zip(np.array(run["rows"]), truth, strict=True)]))

    recall = recall_of(found)
    source_gb = _size_gb(source)
    return {"rung": name, "N": n, "build_s": built["s"], "build_peak_rss_gb": built["peak_rss_mb"] / 1024,
            "build_anon_gb": (built["anon_mb"] or float("nan")) / 1024,
            "build_peak_anon_gb": built["peak_anon_mb"] / 1024, "build_peak_file_gb": built["peak_file_mb"] / 1024,
            "source_gb": source_gb, "peak_disk_gb": source_gb + built["peak_disk_bytes"] / 1e9,
            "estimated_peak_gb": (built["estimate_peak_bytes"] or float("nan")) / 1e9 + source_gb,
            "recommended": json.dumps({k: v for k, v in built["recommended"].items() if k in ("k_factor", "nprobe")}),
            "disk_gb": _size_gb(Path(built["path"])), "open_s": found["open_s"],
            "search_rss_gb": found["search_rss_mb"] / 1024,
            "search_anon_gb": (found["search_anon_mb"] or float("nan")) / 1024, "qps": found["qps"], "recall@10": recall,
            "qps_k16": wider["qps"], "recall@10_k16": recall_of(wider)}


def fit(ns: list[int], ys: list[float]) -> tuple[float, float]:
    """y = a * N^b, least squares in log-log."""
    b, log_a = np.polyfit(np.log(ns), np.log(np.maximum(ys, 1e-9)), 1)
    return float(math.exp(log_a)), float(b)


def real_rung(work: Path, real_index: str | None, nprobe: int) -> dict:
    import faiss
    import pyarrow.parquet as pq

    from biorag.indexing.build import build_index, load_build_config

    if real_index is None:
        real_index = str(build_index(load_build_config(["corpus=icd10cm", f"root={work / 'indexes'}",
                                                        "name=icd10cm-flat", "index.bm25=false"])).path)
    flat = faiss.read_index(str(Path(real_index) / "index.faiss"))
    vectors = flat.reconstruct_n(0, flat.ntotal)
    table_ = pq.read_table(Path(real_index) / "chunks.parquet", columns=["id", "title", "text"]).to_pylist()
    source = work / "real-src"
    source.mkdir(parents=True, exist_ok=True)
    np.save(source / "real.npy", vectors)
    (source / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table_))
    q = vectors[np.random.default_rng(7).choice(len(vectors), QUERIES, replace=False)]
    truth = exact_neighbours(source, q)
    nlist = int(4 * math.sqrt(len(vectors)))
    settings = [s for s in SETTINGS if not s.startswith(("index.nlist", "index.pq_m", "index.train_size",
                                                         "vectors.verify"))]
    settings += [f"index.nlist={nlist}", "index.pq_m=48", "index.train_size=50000", "vectors.verify=64"]
    row = rung("real-minilm", source, len(vectors), ["embedder=minilm"], q, truth, work, nprobe, settings)
    shutil.rmtree(source)
    return row


def child_embed(args: list[str]) -> None:
    import faiss

    from biorag.indexing.build import build_index, load_build_config

    result = build_index(load_build_config(args), force=True)
    index = faiss.read_index(str(result.path / "index.faiss"))
    np.save(result.path / "vectors.npy", index.reconstruct_n(0, index.ntotal))
    emit({"embed_s": result.manifest.embed_seconds, "chunks": result.manifest.counts.chunks,
          "path": str(result.path)})


def ray_ratio(work: Path, limit: int) -> None:
    """engine=ray against the single-process build on this machine's CPUs: the same corpus,
    model and dtype, each in a fresh process (Ray's start and its actor's model load included)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print("\nengine=ray: skipped (pip install 'biorag[ray]')")
        return
    common = ["corpus=hpo", f"corpus.limit={limit}", "index.bm25=false", f"root={work / 'indexes'}"]
    local = run_child([__file__, "--child-embed", json.dumps([*common, "name=hpo-local"])])
    ray_ = run_child([__file__, "--child-embed", json.dumps([*common, "name=hpo-ray", "engine=ray"])])
    same = np.array_equal(np.load(Path(local["path"]) / "vectors.npy"), np.load(Path(ray_["path"]) / "vectors.npy"))
    print(f"\nengine=ray vs one process, {local['chunks']:,} HPO chunks, MiniLM, {cpu_count()} CPUs: "
          f"{ray_['embed_s']:.1f}s vs {local['embed_s']:.1f}s embedding = {local['embed_s'] / ray_['embed_s']:.2f}x "
          f"the single-process speed; vectors identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000])
    ap.add_argument("--work", default="bench-scale", help="working folder (sources are deleted after each rung)")
    ap.add_argument("--real-index", help="a built flat MiniLM index to re-index as the real rung; "
                                         "default: build corpus=icd10cm here")
    ap.add_argument("--no-real", action="store_true", help="skip the real MiniLM rung")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ray-limit", type=int, default=3000, help="HPO terms for engine=ray vs one process; 0: skip")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    embedder = ["embedder=minilm", "embedder.name=bert768", f"embedder.model={tiny_embedder(work, DIM)}",
                "embedder.pooling=mean"]
    rows = []
    q = queries(DIM)
    for n in a.sizes:
        source = work / f"src-{n}"
        t0 = time.perf_counter()
        write_synthetic(source, n)
        truth = exact_neighbours(source, q)
        print(f"  {n:,}: vectors written and exact neighbours found in {time.perf_counter() - t0:.0f}s", flush=True)
        rows.append(rung(f"synthetic-{n // 1000}k", source, n, embedder, q, truth, work, a.nprobe))
        shutil.rmtree(source)
        shutil.rmtree(work / "indexes" / f"synthetic-{n // 1000}k")
        print("  " + json.dumps(rows[-1]), flush=True)
    if not a.no_real:
        rows.append(real_rung(work, a.real_index, a.nprobe))
        print("  " + json.dumps(rows[-1]), flush=True)
    cols = ["rung", "N", "build_s", "build_peak_rss_gb", "build_peak_anon_gb", "build_peak_file_gb", "source_gb",
            "peak_disk_gb", "estimated_peak_gb", "disk_gb", "open_s", "search_rss_gb", "search_anon_gb", "qps",
            "recall@10", "qps_k16", "recall@10_k16", "recommended"]
    print(f"\non-disk ivfpq (nlist 4096, pq_m 64, sq8 refine on disk, nprobe {a.nprobe}, k_factor 8 and 16), "
          f"{QUERIES} queries one at a time")
    print(table(cols, [[r[c] for c in cols] for r in rows]))
    synth = [r for r in rows if r["rung"].startswith("synthetic")]
    if len(synth) >= 2:
        ns = [r["N"] for r in synth]
        print(f"\nfitted a*N^b over {len(synth)} synthetic rungs, projected to {PUBMED / 1e6:.1f}M x {DIM}:")
        proj = []
        for key in ("build_s", "build_peak_rss_gb", "peak_disk_gb", "disk_gb", "open_s", "search_rss_gb",
                    "search_anon_gb", "qps"):
            a_, b_ = fit(ns, [r[key] for r in synth])
            proj.append([key, f"{a_:.3g} * N^{b_:.3f}", a_ * PUBMED ** b_])
        print(table(["cost", "law", "at 23.9M"], proj))
        flat = synth[-1]["build_peak_rss_gb"] / synth[0]["build_peak_rss_gb"]
        search_24m = next(p[2] for p in proj if p[0] == "search_rss_gb")
        print(f"\nbuild peak RSS {synth[0]['N']:,} -> {synth[-1]['N']:,}: x{flat:.3f} "
              f"[{verdict(abs(flat - 1) <= 0.10)} within 10%]")
        print(f"projected search RSS at 23.9M: {search_24m:.2f} GB [{verdict(search_24m < 16)} < 16 GB]")
        print(f"recall@10, every rung >= 0.9: [{verdict(all(r['recall@10'] >= 0.9 for r in rows))}]")
    if a.ray_limit:
        ray_ratio(work, a.ray_limit)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-build":
        child_build(json.loads(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-embed":
        child_embed(json.loads(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-search":
        child_search(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
