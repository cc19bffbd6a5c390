"""Retrieval measured against gold evidence: what the retriever found, and what reached the
prompt.

An example's `evidence` names the corpus documents that answer it. A retrieved list of
chunks becomes a ranking of documents (each document at the rank of its first chunk), and
the measures are trec_eval's, through ir-measures (pytrec_eval underneath): recall@1/3/5/10,
nDCG@10 and MRR@10 (`RR@10`). Evidence-in-prompt is biorag's own and the one a RAG study
needs: whether a gold document is among the passages that went into the prompt after packing
under `context_tokens` — a passage retrieved but left out by the budget does not count (one
cut short but kept, at least `MIN_PARTIAL_TOKENS` of it, does).

Examples without evidence are left out (their measures are absent, not zero); a judged
example that retrieved nothing scores 0 (trec_eval would drop it and flatter the mean).
Metric names use `_at_` because MLflow does not allow `@`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from biorag.scoring.metrics import N_RESAMPLES, MetricResult, aggregate
from biorag.tracking import keys
from biorag.types import Example, Hit

RECALL_AT = (1, 3, 5, 10)
NDCG_AT = 10
MRR_AT = 10
DEPTH = max(*RECALL_AT, NDCG_AT, MRR_AT)  # a rag cell retrieves at least this deep
PREFIX = "retrieval_"
EVIDENCE_IN_PROMPT = f"{PREFIX}evidence_in_prompt"
SOURCE_IN_INDEX = "leak_source_in_index"  # the item's own source document is in the index
EXCLUDE_MODES = ("none", "gold_source")
RECALL_KEYS = tuple(f"{PREFIX}recall_at_{k}" for k in RECALL_AT)
NDCG_KEY = f"{PREFIX}ndcg_at_{NDCG_AT}"
MRR_KEY = f"{PREFIX}mrr_at_{MRR_AT}"
# what every cell logs (NaN where there is nothing to measure: closed-book, no gold evidence)
CELL_KEYS = (*RECALL_KEYS, NDCG_KEY, MRR_KEY, EVIDENCE_IN_PROMPT, SOURCE_IN_INDEX)


def is_retrieval_metric(key: str) -> bool:
    """A metric of the retrieval rather than of the answers."""
    return key.startswith((PREFIX, "leak_"))


def measures(recall_at: Sequence[int] = RECALL_AT) -> dict[str, object]:
    """Logged metric key -> ir-measures measure."""
    import ir_measures as irm

    out: dict[str, object] = {f"{PREFIX}recall_at_{k}": irm.R @ k for k in recall_at}
    out[NDCG_KEY] = irm.nDCG @ NDCG_AT
    out[MRR_KEY] = irm.RR @ MRR_AT
    return out


def first_per_doc(ranked: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(document id, score) pairs of ranked chunks, each document once, at its first chunk."""
    first: dict[str, float] = {}
    for doc, score in ranked:
        first.setdefault(doc, score)
    return list(first.items())


def doc_ranking(hits: Sequence[Hit]) -> list[str]:
    """Document ids in rank order, each at the rank of its first chunk."""
    return [doc for doc, _ in first_per_doc((h.chunk.doc_id, h.score) for h in hits)]


def qrels_of(examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    """TREC qrels (relevance 1) of the examples that have gold evidence."""
    return {e.id: dict.fromkeys(e.evidence, 1) for e in examples if e.evidence}


def per_query(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]],
              wanted: Mapping[str, object] | None = None) -> dict[str, dict[str, float]]:
    """Each measure's value per judged query: {key: {qid: value}}. `run` gives each query's
    documents in rank order; the TREC scores are made from the ranks so trec_eval's sort by
    score keeps that order."""
    import ir_measures as irm

    wanted = dict(wanted or measures())
    by_measure = {m: k for k, m in wanted.items()}
    trec_run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)}
                for q, docs in run.items() if q in qrels and docs}
    out: dict[str, dict[str, float]] = {k: dict.fromkeys(qrels, 0.0) for k in wanted}
    if trec_run:
        for m in irm.iter_calc(list(wanted.values()), {q: dict(r) for q, r in qrels.items()}, trec_run):
            out[by_measure[m.measure]][m.query_id] = float(m.value)
    return out


def evidence_in_prompt(example: Example, prompt_docs: Sequence[str]) -> float | None:
    """1.0 when a gold document is among the prompt's passages, 0.0 when none is, None
    without gold evidence."""
    if not example.evidence:
        return None
    return float(bool(set(example.evidence) & set(prompt_docs)))


@dataclass
class RetrievalScores:
    """Aggregates (with 95% intervals) and each example's values, by metric key."""

    metrics: dict[str, MetricResult] = field(default_factory=dict)
    per_example: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> {id: value}
    judged: int = 0

    def add(self, key: str, by_id: dict[str, float], seed: int, n_resamples: int = N_RESAMPLES) -> None:
        """One measure from its per-example values (in example order), with its interval."""
        xs = list(by_id.values())
        value, lo, hi = aggregate(xs, seed=seed, n_resamples=n_resamples)
        self.metrics[key] = MetricResult(key, value, lo, hi, len(xs), tuple(xs))
        self.per_example[key] = by_id


def score_retrieval(
    examples: Sequence[Example],
    ranked: Sequence[Sequence[str]],
    prompt_docs: Sequence[Sequence[str]] | None = None,
    *,
    recall_at: Sequence[int] = RECALL_AT,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> RetrievalScores:
    """Retrieval measures of ranked document lists (one per example, in example order) and,
    with `prompt_docs`, evidence-in-prompt; empty when no example has gold evidence."""
    if len(ranked) != len(examples) or (prompt_docs is not None and len(prompt_docs) != len(examples)):
        raise ValueError("one ranking (and one prompt) per example")
    qrels = qrels_of(examples)
    out = RetrievalScores(judged=len(qrels))
    if not qrels:
        return out
    values = per_query(qrels, {e.id: list(r) for e, r in zip(examples, ranked, strict=True)},
                       measures(recall_at))
    if prompt_docs is not None:
        values[EVIDENCE_IN_PROMPT] = {
            e.id: v for e, docs in zip(examples, prompt_docs, strict=True)
            if (v := evidence_in_prompt(e, docs)) is not None
        }
    order = [e.id for e in examples if e.id in qrels]
    for key, by_id in values.items():
        out.add(key, {i: by_id[i] for i in order}, seed, n_resamples)
    return out


def source_in_index(examples: Sequence[Example], doc_ids: set[str], seed: int = 0) -> RetrievalScores:
    """Per example, 1.0 when a document it was made from is in the index (a leak a rag arm
    can retrieve), 0.0 when none is; examples without `source_docs` are left out."""
    judged = [e for e in examples if e.source_docs]
    out = RetrievalScores(judged=len(judged))
    if judged:
        out.add(SOURCE_IN_INDEX, {e.id: float(bool(set(e.source_docs) & doc_ids)) for e in judged}, seed)
    return out


def exclude_sources(example: Example, hits: Sequence[Hit]) -> list[Hit]:
    """The hits without the documents the example was made from, ranked again from 1."""
    banned = set(example.source_docs)
    kept = [h for h in hits if h.chunk.doc_id not in banned]
    return [Hit(h.chunk, h.score, i) for i, h in enumerate(kept, 1)]


def retrieve_ranked(retriever, examples: Sequence[Example], queries: Sequence[str], depth: int,
                    exclude: str = "none") -> list[list[Hit]]:
    """Each example's hits to `depth` (after leaving out its source documents with
    `exclude="gold_source"`, searching deeper until `depth` remain or the index is spent)."""
    if exclude not in EXCLUDE_MODES:
        raise ValueError(f"exclude must be one of {', '.join(EXCLUDE_MODES)}, not {exclude!r}")
    if exclude == "none":
        return [list(h) for h in retriever.retrieve_batch(list(queries), depth)]
    out: list[list[Hit] | None] = [None] * len(examples)
    todo, d, size = list(range(len(examples))), depth + 8, len(retriever.index)
    while todo:
        got = retriever.retrieve_batch([queries[i] for i in todo], min(d, size))
        again = []
        for i, hits in zip(todo, got, strict=True):
            kept = exclude_sources(examples[i], hits)
            if len(kept) >= depth or len(hits) < min(d, size) or d >= size:
                out[i] = kept[:depth]
            else:
                again.append(i)
        todo, d = again, d * 4
    return [h or [] for h in out]


def trec_run(run: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> str:
    """A TREC run file: `qid Q0 docid rank score tag` per line."""
    lines = [f"{q} Q0 {d} {r} {s:.6g} {tag}" for q, docs in run.items()
             for r, (d, s) in enumerate(docs, 1)]
    return "\n".join(lines) + ("\n" if lines else "")


def trec_qrels(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """A TREC qrels file: `qid 0 docid relevance` per line."""
    lines = [f"{q} 0 {d} {rel}" for q, docs in qrels.items() for d, rel in docs.items()]
    return "\n".join(lines) + ("\n" if lines else "")


def trec_files(examples: Sequence[Example], runs: Sequence[Sequence[tuple[str, float]]],
               retriever: Any) -> dict[str, str]:
    """The TREC run (each example's documents, ranked) and qrels files {name: text}; the run is
    tagged with the retriever's mode and fingerprint (a `CachedRetriever`'s)."""
    run = {e.id: list(docs) for e, docs in zip(examples, runs, strict=True)}
    return {keys.RETRIEVAL_RUN_FILE: trec_run(run, f"biorag-{retriever.mode}-{retriever.fingerprint}"),
            keys.QRELS_FILE: trec_qrels(qrels_of(examples))}
