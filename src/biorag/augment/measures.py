"""What the RAG methods did, per item, as metrics beside the retrieval measures:

- `filter_kept`: the share of the judged passages the filter kept;
- `evidence_before_filter`: a gold document among the judged passages (items with gold
  evidence), to read against `evidence_in_prompt` after the filter: what filtering cost in
  recall, beside what it gained in precision (`filter_kept`);
- `generated_passages`: passages the model wrote into the context (never evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from biorag.scoring.metrics import MetricResult, aggregate
from biorag.types import CellRecord, Example

FILTER_KEPT, EVIDENCE_BEFORE_FILTER, GENERATED_PASSAGES = "filter_kept", "evidence_before_filter", "generated_passages"


def method_scores(examples: Sequence[Example], records: Sequence[CellRecord],
                  seed: int = 0) -> tuple[dict[str, MetricResult], dict[str, dict[str, float]]]:
    """The methods' measures ({key: result}) and each item's values ({key: {item: value}});
    empty for an arm without filter or generated passages."""
    per: dict[str, dict[str, float]] = {}
    for e, r in zip(examples, records, strict=True):
        if r.candidate_docs is not None:
            per.setdefault(FILTER_KEPT, {})[e.id] = r.kept / len(r.candidate_docs) if r.candidate_docs else math.nan
            if e.evidence:
                per.setdefault(EVIDENCE_BEFORE_FILTER, {})[e.id] = float(bool(set(e.evidence) & set(r.candidate_docs)))
        if r.generated:
            per.setdefault(GENERATED_PASSAGES, {})[e.id] = float(sum(bool(g) for g in r.generated))
    out = {}
    for key, values in per.items():
        finite = [v for v in values.values() if not math.isnan(v)]
        if finite:
            mean, lo, hi = aggregate(finite, seed)
            out[key] = MetricResult(key, mean, lo, hi, len(finite), tuple(values.values()))
    return out, per
