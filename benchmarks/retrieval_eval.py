"""Retrieval against gold evidence on the embedded tasks, and what measuring it costs a rag cell.

    python benchmarks/retrieval_eval.py                  # 200 items a task, smollm2 for the cell (~10 min on 2 cores)
    python benchmarks/retrieval_eval.py --n 50 --model fake

Part 1: recall@1/3/5/10, nDCG@10, MRR@10 and evidence-in-prompt of dense, bm25 and hybrid
retrieval over the embedded indexes (hpo-minilm, icd10cm-minilm; built on first use, which
takes minutes), through `biorag retrieval eval`'s function, no model loaded.

Part 2: one rag cell (hpo-term-mcq) run by the experiment runner, then the retrieval
measurement of its records (`cell_retrieval`: ir-measures, evidence-in-prompt, the
source-in-index flag, the TREC files) timed on its own, and the extra retrieval depth
(10 instead of k=5) timed by searching both ways. Target: together < 5% of the cell's time.
Run it in an empty folder, or with BIORAG_INDEX_DIR pointing at built indexes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, table, verdict

TASKS = ("hpo-term-mcq", "icd10-code-mcq", "icd10-coding")


def part1(n: int) -> None:
    from biorag.experiment.retrieval_eval import evaluate_retrieval, table_columns

    rows = evaluate_retrieval([f"task={','.join(TASKS)}", f"task.n={n}"], ["dense", "bm25", "hybrid"],
                              log_run=False)
    cols = table_columns(rows)
    print(f"\nPart 1: retrieval against gold evidence, {n} items a task (95% CIs in `biorag retrieval eval`)")
    print(table(["index", "mode", "task", *[c.removeprefix("retrieval_") for c in cols], "search s"],
                [[r.index, r.mode, r.task, *(r.metrics[c].value if c in r.metrics else float("nan") for c in cols),
                  r.seconds] for r in rows]))


def part2(n: int, model: str) -> None:
    from biorag.experiment.plan import plan
    from biorag.experiment.predict import predict
    from biorag.experiment.resources import cell_retriever
    from biorag.experiment.retrieval_eval import cell_retrieval
    from biorag.models.loading import load_generator
    from biorag.retrieval.cache import CachedRetriever
    from biorag.tasks import load_examples

    _, (cfg,), _ = plan(["arm=rag", f"model={model}", "task=hpo-term-mcq", f"task.n={n}"])
    cfg.cache_dir = tempfile.mkdtemp(prefix="bench-cache-")
    examples = load_examples(cfg.task)
    retriever = cell_retriever(cfg)
    generator = load_generator(cfg.model, None)
    from biorag.experiment.cache import PredictionCache

    cache = PredictionCache(Path(cfg.cache_dir) / "p.jsonl")
    cached = CachedRetriever(retriever, Path(cfg.cache_dir) / "retrieval")
    t0 = time.perf_counter()
    records, _ = predict(cfg, examples, generator, cached, cache)
    cell_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    found, _files = cell_retrieval(examples, records, cached, cfg.seed)
    metrics_s = time.perf_counter() - t0
    queries = [e.input for e in examples]
    t0 = time.perf_counter()
    retriever.retrieve_batch(queries, 5)
    k5 = time.perf_counter() - t0
    t0 = time.perf_counter()
    retriever.retrieve_batch(queries, 10)
    k10 = time.perf_counter() - t0
    extra = max(k10 - k5, 0.0)
    share = (metrics_s + extra) / cell_s
    print(f"\nPart 2: what measuring retrieval adds to one rag cell ({model}, hpo-term-mcq, {n} items)")
    print(table(["what", "seconds", "share of the cell"],
                [["the rag cell (retrieve, prompt, score)", cell_s, 1.0],
                 ["cell_retrieval (measures, flags, TREC files)", metrics_s, metrics_s / cell_s],
                 ["searching 10 deep instead of 5", extra, extra / cell_s],
                 ["together", metrics_s + extra, share]]))
    print(f"recall@5 {found.metrics['retrieval_recall_at_5'].value:.3f}, evidence in prompt "
          f"{found.metrics['retrieval_evidence_in_prompt'].value:.3f}")
    print(f"target < 5% of the cell's time: {verdict(share < 0.05)} ({share:.2%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="items a task")
    ap.add_argument("--model", default="smollm2", help="model config of the timed rag cell (fake: no model)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    print(machine_line())
    part1(args.n)
    part2(args.n, args.model)


if __name__ == "__main__":
    main()
