"""Answer protocols side by side: how a cell's parsing went, the same cell under two
protocols (paired on the same items), and whether each comparison's verdict survives a
change of protocol.

A verdict is read from the headline delta's paired test: "better" or "worse" when p < 0.05,
else "no difference". Two protocols agree on a comparison when their verdicts are equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from biorag.report.study import Cell
from biorag.report.tables import Table, fmt, fmt_ci, fmt_p
from biorag.retrieval.evidence import is_retrieval_metric
from biorag.scoring.evaluate import PARSE_KEYS, TRUNCATED, UNPARSED
from biorag.scoring.stats import paired_test
from biorag.tracking import keys

UNPARSED_WARN = 0.05  # a cell whose unparsed rate exceeds this is flagged
ALPHA = 0.05


# what a RAG method did (biorag.augment.measures) and how often a judge's verdict went unread:
# measured per item with intervals, but not answer quality
PROCESS_KEYS = ("filter_kept", "evidence_before_filter", "generated_passages", "judge_unparsed_rate")


def is_answer_metric(key: str) -> bool:
    """A metric of answer quality: not of the retrieval, the parsing or a method's process."""
    return not is_retrieval_metric(key) and key not in PARSE_KEYS and key.split(".")[0] not in PROCESS_KEYS


def parse_warnings(cells: Sequence[Cell], threshold: float = UNPARSED_WARN) -> list[str]:
    out = []
    for c in cells:
        rate = c.value(UNPARSED)[0]
        if not math.isnan(rate) and rate > threshold:
            out.append(f"{c.name}: {rate:.1%} of the outputs have no answer that can be read "
                       f"(over {threshold:.0%}); they count as wrong. Check the outputs in "
                       f"predictions.json before trusting its score")
    return out


@dataclass
class ProtocolDelta:
    """One (arm, model, task) under two protocols, paired on the same items."""

    task: str
    arm: str
    model: str
    reference: str  # protocol
    treatment: str
    reference_metric: str
    treatment_metric: str
    reference_value: float
    treatment_value: float
    delta: float
    lo: float
    hi: float
    p: float
    test: str
    n: int


def protocol_deltas(cells: Sequence[Cell], headline: dict[str, str]) -> list[ProtocolDelta]:
    """Every other protocol of a cell against the first one the study ran it under."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.arm, c.model, c.task), []).append(c)
    out = []
    for (arm, model, task), group in groups.items():
        ref = group[0]
        for other in group[1:]:
            mr, mt = headline[ref.label], headline[other.label]
            r, t = ref.scores(mr), other.scores(mt)
            ids = [i for i in r if i in t]
            if not ids:
                continue
            test = paired_test([r[i] for i in ids], [t[i] for i in ids], seed=other.seed)
            out.append(ProtocolDelta(task, arm, model, ref.protocol, other.protocol, mr, mt,
                                     ref.value(mr)[0], other.value(mt)[0], test.delta, test.lo,
                                     test.hi, test.p, test.test, test.n))
    return out


def verdict(delta: float, p: float) -> str:
    if math.isnan(p) or p >= ALPHA:
        return "no difference"
    return "better" if delta > 0 else "worse"


@dataclass
class Verdict:
    """One comparison (an arm against the baseline, or a biomedical model against its
    general counterpart) under each protocol the study ran."""

    kind: str
    task: str
    treatment: str
    reference: str
    by_protocol: dict[str, str] = field(default_factory=dict)  # protocol -> verdict

    @property
    def agree(self) -> bool:
        return len(set(self.by_protocol.values())) <= 1


def verdicts(deltas: Sequence[Any]) -> list[Verdict]:
    """The headline deltas' verdicts, per comparison, where it ran under two protocols or more."""
    found: dict[tuple[str, str, str, str], Verdict] = {}
    for d in deltas:
        if not d.headline:
            continue
        task = d.task.removesuffix(f"@{d.protocol}")
        v = found.setdefault((d.kind, task, d.treatment, d.reference), Verdict(d.kind, task, d.treatment, d.reference))
        v.by_protocol[d.protocol] = verdict(d.delta, d.p)
    return [v for v in found.values() if len(v.by_protocol) > 1]


# -- tables ---------------------------------------------------------------------------------


def parsing_table(report: Any) -> Table | None:
    """Cells that generated answers: how many could not be read, and how many ran out of budget."""
    cells = [c for c in report.study.cells if not math.isnan(c.value(UNPARSED)[0])]
    if not cells:
        return None
    t = Table("Parsing: generated answers that could not be read (counted wrong)",
              ["arm", "model", "task", "headline", "unparsed rate [95% CI]", "truncated outputs",
               "generated tokens / item", "flag"],
              note=f"unparsed: no answer, or two different ones, in the output; truncated: the output "
                   f"reached max_new_tokens before an answer; flagged over {report.unparsed_threshold:.0%}")
    for c in cells:
        head = report.headline[c.label]
        rate = c.value(UNPARSED)[0]
        t.rows.append([c.arm, c.model, c.label, f"{head} {fmt(c.value(head)[0])}", fmt_ci(*c.value(UNPARSED)),
                       fmt(c.value(TRUNCATED)[0]), fmt(c.metrics.get(keys.metric(c.task, keys.GENERATED_TOKENS),
                                                                     math.nan), 1),
                       "over threshold" if rate > report.unparsed_threshold else ""])
    return t


def protocol_tables(report: Any) -> list[Table]:
    out = []
    if report.protocol_deltas:
        t = Table("The same cells under two answer protocols (same items, paired)",
                  ["task", "arm", "model", "protocols", "reference", "treatment", "delta [95% CI]",
                   "test", "p", "n"],
                  note="each protocol's headline metric: log-likelihood cells are ranked options, "
                       "generated cells the answers read from the outputs")
        for d in report.protocol_deltas:
            t.rows.append([d.task, d.arm, d.model, f"{d.treatment} vs {d.reference}",
                           f"{d.reference_metric} {fmt(d.reference_value)}", f"{d.treatment_metric} {fmt(d.treatment_value)}",
                           fmt_ci(d.delta, d.lo, d.hi, sign=True), d.test, fmt_p(d.p), str(d.n)])
        out.append(t)
    if report.verdicts:
        protocols = list(dict.fromkeys(p for v in report.verdicts for p in v.by_protocol))
        t = Table("Do the verdicts survive a change of protocol?",
                  ["task", "comparison", *protocols, "agree"],
                  note=f"verdict of the headline delta's paired test: better / worse at p < {ALPHA}, "
                       "else no difference")
        for v in report.verdicts:
            t.rows.append([v.task, f"{v.treatment} vs {v.reference}",
                           *(v.by_protocol.get(p, "-") for p in protocols), "yes" if v.agree else "NO"])
        out.append(t)
    return out
