"""What a rerank stage costs per query, and what it buys in recall, on the embedded tasks.

    python benchmarks/rerank.py                  # 10 latency queries, 50 items a task for recall (~25 min, 2 cores)
    python benchmarks/rerank.py --queries 5 --n 20 --candidates 20,50
    python benchmarks/rerank.py --cross-encoder ncbi/MedCPT-Cross-Encoder   # a real one (needs the hub)

Part 1, latency per query over hpo-minilm (built on first use): the dense first stage alone,
then the first stage plus reranking 20 / 50 / 100 candidates with (a) a cross-encoder through
sentence-transformers' CrossEncoder (a tiny random 2-layer BERT built here unless
--cross-encoder names one) and (b) the LM reranker (UPR) on the embedded SmolLM2. The first
stage runs in each timing, so the ratio is what a rag cell's retrieval becomes.

Part 2, recall before and after reranking: `biorag retrieval eval`'s function over the
embedded tasks, dense first stage vs the same plus the LM reranker at --recall-candidates.

On a GPU machine the cross-encoder is timed there too (pairs/s in fp16); MedCPT itself needs
the hub, so it runs only where --cross-encoder can load it.
Run it in an empty folder, or with BIORAG_INDEX_DIR pointing at built indexes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_line, table

TASKS = ("hpo-term-mcq", "icd10-code-mcq")


def _first_stage():
    from biorag.experiment.plan import plan
    from biorag.experiment.resources import cell_retriever
    from biorag.tasks import load_examples

    _, cells, _ = plan(["arm=rag", "model=fake", "task=hpo-term-mcq"])
    return cell_retriever(cells[0]), load_examples(cells[0].task)


def _per_query(retriever, queries: list[str], k: int = 5) -> float:
    retriever.retrieve(queries[0], k)  # warm: weights loaded, first kernels compiled
    times = []
    for q in queries:
        t0 = time.perf_counter()
        retriever.retrieve(q, k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part1(n_queries: int, candidates: list[int], cross: str | None) -> None:
    from biorag.retrieval.open import reranked
    from biorag.retrieval.rerank import (
        CrossEncoderReranker,
        LMReranker,
        RerankerConfig,
        load_reranker_config,
    )
    from biorag.retrieval.spec import search_query

    first, examples = _first_stage()
    queries = [search_query(e, "query") for e in examples[:n_queries]]
    if cross is None:
        from tests.helpers.tiny_bert import build_tiny_bert

        cross = str(build_tiny_bert(Path(tempfile.mkdtemp()) / "cross", seed=3, cross_encoder=True))
        label = "tiny random BERT cross-encoder"
    else:
        label = cross
    rerankers = {label: CrossEncoderReranker(RerankerConfig(name="bench", model=cross)),
                 "LM reranker (smollm2, UPR)": LMReranker(load_reranker_config("lm"))}
    base = _per_query(first, queries)
    rows = [["dense first stage", "-", f"{1000 * base:.1f}", "1.00x", "-"]]
    for name, reranker in rerankers.items():
        for c in candidates:
            stage = reranked(first, reranker, c)
            t = _per_query(stage, queries)
            rows.append([name, str(c), f"{1000 * t:.1f}", f"{t / base:.1f}x", f"{c / max(t - base, 1e-9):.0f}"])
    print(f"\nPart 1: latency per query (median of {n_queries}, hpo-minilm, top 5 kept)")
    print(table(["retriever", "candidates", "ms/query", "vs first stage", "pairs/s"], rows))


def part2(n: int, candidates: int) -> None:
    from biorag.experiment.retrieval_eval import evaluate_retrieval

    common = [f"task={','.join(TASKS)}", f"task.n={n}"]
    before = evaluate_retrieval(common, ["dense"], log_run=False)
    after = evaluate_retrieval([*common, "arm.retriever.rerank=lm", f"arm.retriever.candidates={candidates}"],
                               ["dense"], log_run=False)
    keys = ["retrieval_recall_at_1", "retrieval_recall_at_3", "retrieval_recall_at_5", "retrieval_mrr_at_10"]
    rows = []
    for b, a in zip(before, after, strict=True):
        for label, r in (("dense", b), (f"dense + lm rerank@{candidates}", a)):
            rows.append([r.task, label, *(f"{r.metrics[k].value:.3f}" if k in r.metrics else "-" for k in keys),
                         f"{1000 * r.seconds / max(r.queries, 1):.0f}"])
    print(f"\nPart 2: retrieval against gold evidence before and after reranking, {n} items a task")
    print(table(["task", "retriever", *[k.removeprefix("retrieval_") for k in keys], "ms/query"], rows))


def part_gpu(cross: str | None) -> None:
    import torch

    if not torch.cuda.is_available():
        print("\nGPU: none here; cross-encoder pairs/s and MedCPT fp16 throughput need one")
        return
    from sentence_transformers import CrossEncoder

    if cross is None:
        from tests.helpers.tiny_bert import build_tiny_bert

        cross = str(build_tiny_bert(Path(tempfile.mkdtemp()) / "cross", seed=3, cross_encoder=True))
    model = CrossEncoder(cross, device="cuda", model_kwargs={"dtype": torch.float16})
    pairs = [("which term means a small head", "Microcephaly is a head circumference below the mean " * 8)] * 4096
    model.predict(pairs[:256], batch_size=256)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.predict(pairs, batch_size=256)
    torch.cuda.synchronize()
    print(f"\nGPU ({torch.cuda.get_device_name()}): {cross}: {len(pairs) / (time.perf_counter() - t0):,.0f} pairs/s fp16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=10, help="queries timed in part 1")
    ap.add_argument("--candidates", default="20,50,100", help="candidate counts of part 1")
    ap.add_argument("--n", type=int, default=50, help="items a task in part 2 (0: skip it)")
    ap.add_argument("--recall-candidates", type=int, default=20, help="candidates the LM reranker sees in part 2")
    ap.add_argument("--cross-encoder", default=None, help="a cross-encoder hub id or folder (default: tiny random)")
    args = ap.parse_args()
    os.environ.setdefault("BIORAG_PROGRESS", "0")
    print(machine_line())
    part1(args.queries, [int(c) for c in args.candidates.split(",")], args.cross_encoder)
    if args.n:
        part2(args.n, args.recall_candidates)
    part_gpu(args.cross_encoder)


if __name__ == "__main__":
    main()
