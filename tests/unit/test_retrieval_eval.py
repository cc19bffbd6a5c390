"""Retrieval measures on hand-made qrels and runs, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from biorag.retrieval.evidence import (
    evidence_in_prompt,
    exclude_sources,
    score_retrieval,
    source_in_index,
    trec_qrels,
    trec_run,
)
from biorag.types import Chunk, Example, Hit


def _ex(i: str, evidence: tuple[str, ...] = (), source: tuple[str, ...] = ()) -> Example:
    return Example(id=i, task="t", input="q", gold="A", options=("a", "b"), evidence=evidence,
                   source_docs=source)


def test_measures_equal_hand_computed_values() -> None:
    # q1: gold {d1, d3}; ranking d2 d1 d4 d3 -> R@1 0, R@3 1/2, R@5 1, RR 1/2,
    #     nDCG@10 = (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3))
    # q2: gold {d9}; ranking d9 -> everything 1
    # q3: gold {d5}; nothing retrieved -> 0 everywhere (not dropped)
    # q4: no gold -> left out
    examples = [_ex("q1", ("d1", "d3")), _ex("q2", ("d9",)), _ex("q3", ("d5",)), _ex("q4")]
    ranked = [["d2", "d1", "d4", "d3"], ["d9"], [], ["d1"]]
    prompts = [["d2"], ["d9"], [], ["d1"]]
    s = score_retrieval(examples, ranked, prompts)
    assert s.judged == 3
    m = {k: v.value for k, v in s.metrics.items()}
    assert m["retrieval_recall_at_1"] == pytest.approx((0 + 1 + 0) / 3)
    assert m["retrieval_recall_at_3"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["retrieval_recall_at_5"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["retrieval_mrr_at_10"] == pytest.approx((0.5 + 1 + 0) / 3)
    ndcg1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["retrieval_ndcg_at_10"] == pytest.approx((ndcg1 + 1 + 0) / 3)
    assert m["retrieval_evidence_in_prompt"] == pytest.approx(1 / 3)  # only q2's gold is in its prompt
    assert s.per_example["retrieval_recall_at_3"] == {"q1": 0.5, "q2": 1.0, "q3": 0.0}
    r = s.metrics["retrieval_recall_at_5"]
    assert r.lo <= r.value <= r.hi and r.n == 3


def test_no_gold_evidence_means_no_measures() -> None:
    s = score_retrieval([_ex("a"), _ex("b")], [["d1"], []], [["d1"], []])
    assert s.metrics == {} and s.judged == 0
    assert evidence_in_prompt(_ex("a"), ["d1"]) is None


def test_exclusion_and_source_flags() -> None:
    hits = [Hit(Chunk(f"{d}#0", d, "x"), 1.0 - i / 10, i + 1) for i, d in enumerate(["own", "d2", "own", "d3"])]
    kept = exclude_sources(_ex("a", source=("own",)), hits)
    assert [h.chunk.doc_id for h in kept] == ["d2", "d3"] and [h.rank for h in kept] == [1, 2]
    flags = source_in_index([_ex("a", source=("own",)), _ex("b", source=("gone",)), _ex("c")], {"own", "d2"})
    assert flags.per_example["leak_source_in_index"] == {"a": 1.0, "b": 0.0}


def test_trec_files() -> None:
    assert trec_run({"q1": [("d1", 2.0), ("d2", 1.0)]}, "tag") == "q1 Q0 d1 1 2 tag\nq1 Q0 d2 2 1 tag\n"
    assert trec_qrels({"q1": {"d1": 1}}) == "q1 0 d1 1\n"
