"""Why retrieval helped or did not: a rag arm against its baseline, split by what the
retrieval did for each item.

Two splits, from the rag cell's per-example flags (`biorag.retrieval.evidence`):
- evidence in the prompt or not: "retrieval failed" (the gold document never reached the
  prompt) against "the model ignored the evidence" (it did, and the answer is still wrong);
- the item's own source document in the index or not (leaked vs clean items).
Within each stratum: both cells' headline metric with 95% intervals, and the paired test of
their difference on the same items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from biorag.report.study import Cell
from biorag.retrieval.evidence import EVIDENCE_IN_PROMPT, SOURCE_IN_INDEX
from biorag.scoring.metrics import aggregate
from biorag.scoring.stats import paired_test

SPLITS = {
    EVIDENCE_IN_PROMPT: ("evidence in prompt", "evidence not in prompt"),
    SOURCE_IN_INDEX: ("source in index (leaked)", "source not in index (clean)"),
}


@dataclass
class Stratum:
    """One stratum of one rag cell against its baseline cell."""

    task: str
    model: str
    treatment: str  # the rag arm
    reference: str  # the baseline arm
    split: str  # EVIDENCE_IN_PROMPT | SOURCE_IN_INDEX
    stratum: str  # e.g. "evidence in prompt"
    metric: str
    n: int
    treatment_value: float
    treatment_lo: float
    treatment_hi: float
    reference_value: float
    reference_lo: float
    reference_hi: float
    delta: float
    delta_lo: float
    delta_hi: float
    p: float
    test: str


def strata(reference: Cell, treatment: Cell, metric: str) -> list[Stratum]:
    """Every stratum of `treatment`'s retrieval flags with paired items in both cells."""
    out = []
    r_scores, t_scores = reference.scores(metric), treatment.scores(metric)
    for split, names in SPLITS.items():
        flags = treatment.scores(split)
        if not flags:
            continue
        for value, name in zip((1.0, 0.0), names, strict=True):
            ids = [i for i, f in flags.items() if f == value and i in r_scores and i in t_scores]
            if not ids:
                continue
            t = [t_scores[i] for i in ids]
            r = [r_scores[i] for i in ids]
            test = paired_test(r, t, seed=treatment.seed)
            out.append(Stratum(
                treatment.label, treatment.model, treatment.arm, reference.arm, split, name, metric,
                len(ids), *aggregate(t, seed=treatment.seed), *aggregate(r, seed=treatment.seed),
                test.delta, test.lo, test.hi, test.p, test.test,
            ))
    return out


def study_strata(cells: list[Cell], baseline: str, headline: dict[str, str]) -> list[Stratum]:
    """The strata of every cell that retrieved, against the baseline arm of its model."""
    by = {(c.arm, c.model, c.label): c for c in cells}
    out: list[Stratum] = []
    for c in cells:
        ref = by.get((baseline, c.model, c.label))
        if ref is None or c.arm == baseline:
            continue
        metric = headline[c.label]
        if not c.scores(metric) or not ref.scores(metric):
            continue
        out += strata(ref, c, metric)
    return [s for s in out if not math.isnan(s.treatment_value)]
