"""The RAG methods against plain dense retrieval, side by side on the same embedded items.

    python benchmarks/rag_methods.py                    # 24 items a task, HPO and ICD-10-CM
    python benchmarks/rag_methods.py --n 40 --k 3 --tasks hpo-term-mcq

Per method (arm.retriever options as the shipped arms set them) on the embedded tasks with the
embedded SmolLM2-135M writing rewrites, follow-ups and passages and judging relevance:
recall@k of the gold evidence in the ranked list the method searched, the gold evidence among
the passages it would pack (evidence in prompt), passages packed, the model calls it made per
item, and seconds per item with its ratio to plain dense retrieval. No cache is reused (a fresh
method cache a row). The indexes (hpo-minilm, icd10cm-minilm) are built on first use, or read
from $BIORAG_INDEX_DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_count, machine_line, set_threads, table

METHODS = {
    "dense (plain rag)": {},
    "hyde": {"rewrite": "hyde"},
    "multi (3 rewrites, RRF)": {"rewrite": "multi", "rewrites": 3},
    "rationale": {"rewrite": "rationale"},
    "filter lm (top 10, P>=0.5)": {"filter": "lm", "filter_candidates": 10},
    "iterative (1 round, 2 follow-ups)": {"rounds": 2, "followups": 2},
    "genread (3 passages)": {"retrieve": False, "generate": 3},
    "rag + genread (2 passages)": {"generate": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="items a task")
    ap.add_argument("--k", type=int, default=3, help="passages packed (the embedded study's k)")
    ap.add_argument("--tasks", default="hpo-term-mcq,icd10-code-mcq")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("BIORAG_PROGRESS", "0")
    print(machine_line(set_threads(cpu_count())))

    from biorag.augment.run import Augmenter, MethodCache
    from biorag.experiment.plan import plan_run
    from biorag.experiment.resources import cell_retriever
    from biorag.models.loading import load_generator
    from biorag.retrieval.evidence import doc_ranking, retrieve_ranked
    from biorag.retrieval.spec import search_query
    from biorag.tasks import load_examples

    rows = []
    generator = None
    for task in args.tasks.split(","):
        cfg = plan_run(["arm=rag", "model=smollm2", f"task={task}", f"task.n={args.n}",
                        f"arm.retriever.k={args.k}"]).cells[0]
        examples = [e for e in load_examples(cfg.task) if e.evidence]
        retriever = cell_retriever(cfg)
        generator = generator or load_generator(cfg.model)
        queries = [search_query(e, cfg.arm.retriever.query) for e in examples]
        t = time.perf_counter()  # the raw library path: faiss search through biorag's retriever
        retrieve_ranked(retriever, examples, queries, args.k)
        raw = (time.perf_counter() - t) / len(examples)
        dense_s = None
        for name, opts in METHODS.items():
            spec = dataclasses.replace(cfg.arm.retriever, **opts)
            with tempfile.TemporaryDirectory() as d:
                aug = Augmenter(spec, generator, "bench", MethodCache(Path(d) / "m.jsonl"))
                found, t = [], time.perf_counter()
                for i in range(0, len(examples), args.batch_size):
                    batch = examples[i:i + args.batch_size]
                    found += aug.contexts(batch, queries[i:i + args.batch_size], retriever, args.k)
                s = (time.perf_counter() - t) / len(examples)
            dense_s = dense_s or s
            recall = [bool(set(e.evidence) & set(doc_ranking(c.ranked[:args.k]))) for e, c in zip(examples, found,
                                                                                                   strict=True)]
            in_prompt = [bool(set(e.evidence) & set(doc_ranking(c.hits))) for e, c in zip(examples, found, strict=True)]
            searched = any(c.ranked for c in found)
            rows.append([task, name, f"{sum(recall) / len(recall):.2f}" if searched else "-",
                         f"{sum(in_prompt) / len(in_prompt):.2f}", f"{sum(len(c.hits) for c in found) / len(found):.1f}",
                         f"{sum(c.calls for c in found) / len(found):.1f}", f"{s:.3f}", f"{s / dense_s:.1f}x"])
        rows.append([task, "(faiss search alone, no wrapper)", "", "", "", "0", f"{raw:.3f}", f"{raw / dense_s:.2f}x"])
    print(f"\n{args.n} items a task (those with gold evidence), k={args.k}, batch {args.batch_size}")
    print(table(["task", "method", f"recall@{args.k}", "evidence in prompt", "passages", "model calls", "s/item",
                 "vs dense"], rows))


if __name__ == "__main__":
    main()
