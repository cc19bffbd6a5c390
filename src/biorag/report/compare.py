"""Compare a study's arms: every arm against the baseline arm of the same model, and each
general model against its biomedical counterpart, with paired tests on the same examples
(`biorag.scoring.stats`); logged metrics checked against the logged predictions."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.report.factorial import Factorial, factorials
from biorag.report.protocols import (
    UNPARSED_WARN,
    ProtocolDelta,
    Verdict,
    is_answer_metric,
    parse_warnings,
    protocol_deltas,
    verdicts,
)
from biorag.report.strata import Stratum, study_strata
from biorag.report.study import Cell, Study
from biorag.scoring.metrics import aggregate, headline_rank, metric_info
from biorag.scoring.stats import PairedTest, holm, paired_test
from biorag.tracking import keys

log = logging.getLogger(__name__)


def headline_metric(metrics: dict[str, float], task: str) -> str:
    """The metric a task is summarised by: the logged metric whose scorer ranks first for
    heading a table (log-likelihood accuracy when present), else the first logged one."""
    logged = [keys.split_metric(k)[1] for k in metrics
              if keys.split_metric(k)[0] == task and not keys.is_interval(k)]
    ranked = sorted((r, k) for k in logged if (r := headline_rank(k)) is not None)
    if ranked:
        return ranked[0][1]
    return logged[0] if logged else keys.N


# -- checks: logged numbers against the logged predictions -----------------------------------


def recompute(cell: Cell) -> dict[str, tuple[float, float, float]]:
    """Metrics recomputed from the cell's per-example scores: every metric that is a mean of
    them (accuracy, exact match, ROUGE, ...), with the interval the runner's seed gives.
    Corpus-level metrics (macro-F1, micro code-F1) are not means and are left out."""
    out = {}
    for metric in cell.quality_metrics():
        values = [p["scores"][metric] for p in cell.predictions if metric in p.get("scores", {})]
        if values and len(values) == len(cell.predictions) and not _is_corpus_level(metric):
            out[metric] = aggregate(values, seed=cell.seed)
    return out


def _is_corpus_level(metric: str) -> bool:
    return metric_info(metric).corpus_level


def check(cell: Cell, tol: float = 1e-9) -> list[str]:
    """Where a logged metric differs from the one recomputed from predictions.jsonl."""
    problems = []
    for metric, got in recompute(cell).items():
        logged = cell.value(metric)
        if any(not (abs(a - b) <= tol) for a, b in zip(logged, got, strict=True)):
            problems.append(f"{cell.name} {metric}: logged {_triple(logged)}, "
                            f"recomputed from predictions.jsonl {_triple(got)}")
    return problems


def _triple(t: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in t) + ")"


# -- comparisons ----------------------------------------------------------------------------


@dataclass
class Row:
    """One metric of one cell, with its 95% interval."""

    arm: str
    model: str
    family: str
    task: str
    metric: str
    value: float
    lo: float
    hi: float
    n: int
    run_id: str
    protocol: str = "task"


@dataclass
class Delta:
    """`treatment - reference` on one metric of one task, with a paired test.

    kind "arm": another arm against the baseline arm of the same model; kind "family": a
    biomedical model against its general counterpart, in the same arm.
    """

    kind: str
    task: str
    metric: str
    treatment: str  # "rag/smollm2"
    reference: str  # "base/smollm2"
    model: str
    arm: str
    delta: float  # difference of the logged metric values
    lo: float  # paired-bootstrap 95% interval (NaN for corpus-level metrics)
    hi: float
    p: float
    test: str
    n: int
    b: int = 0
    c: int = 0
    headline: bool = False
    p_holm: float = math.nan  # Holm-adjusted over the report's headline comparisons
    protocol: str = "task"


@dataclass
class Report:
    study: Study
    headline: dict[str, str]  # task -> metric
    rows: list[Row]
    deltas: list[Delta]
    costs: list[dict[str, Any]]
    problems: list[str]
    strata: list[Stratum] = field(default_factory=list)  # rag arms split by what retrieval did
    protocol_deltas: list[ProtocolDelta] = field(default_factory=list)  # one cell, two protocols
    verdicts: list[Verdict] = field(default_factory=list)  # each comparison under each protocol
    warnings: list[str] = field(default_factory=list)  # cells with too many unparsed answers
    unparsed_threshold: float = UNPARSED_WARN
    factorials: list[Factorial] = field(default_factory=list)  # RAG x fine-tune, per model and task


def compare(reference: Cell, treatment: Cell, kind: str, headline: str) -> list[Delta]:
    """Paired deltas on every metric both cells logged with per-example scores."""
    out = []
    for metric in treatment.quality_metrics():
        if metric not in reference.quality_metrics() or not is_answer_metric(metric):
            continue
        r, t = reference.scores(metric), treatment.scores(metric)
        ids = [i for i in r if i in t]
        if not ids:
            continue
        if len(ids) < max(len(r), len(t)):
            log.warning("%s vs %s: %d of %d examples are shared; the test uses those",
                        treatment.name, reference.name, len(ids), max(len(r), len(t)))
        test: PairedTest = paired_test([r[i] for i in ids], [t[i] for i in ids], seed=treatment.seed)
        corpus = _is_corpus_level(metric)
        # the logged values' difference, unless only some examples pair up (then the paired one)
        logged = treatment.value(metric)[0] - reference.value(metric)[0]
        delta = logged if corpus or len(ids) == len(r) == len(t) else test.delta
        out.append(Delta(
            kind=kind, task=treatment.label, metric=metric, protocol=treatment.protocol,
            treatment=f"{treatment.arm}/{treatment.model}", reference=f"{reference.arm}/{reference.model}",
            model=treatment.model, arm=treatment.arm, delta=delta,
            lo=math.nan if corpus else test.lo, hi=math.nan if corpus else test.hi,
            p=test.p, test=test.test, n=test.n, b=test.b, c=test.c, headline=metric == headline,
        ))
    return out


def model_pairs(cells: Sequence[Cell]) -> list[tuple[str, str]]:
    """(general, biomedical) model pairs of the study, from the models' `counterpart`s."""
    family = {c.model: c.family for c in cells}
    pairs = set()
    for c in cells:
        other = c.counterpart
        if other in family and {family[c.model], family[other]} == {"general", "biomedical"}:
            pairs.add((c.model, other) if family[c.model] == "general" else (other, c.model))
    return sorted(pairs)


def build_report(study: Study, unparsed_threshold: float = UNPARSED_WARN) -> Report:
    """Tables, paired deltas, cost and checks of a study's cells."""
    cells = study.cells
    headline: dict[str, str] = {}
    for c in cells:  # per task and protocol: `medqa`, `medqa@cot`
        headline.setdefault(c.label, headline_metric(c.metrics, c.task))
    rows = [Row(c.arm, c.model, c.family, c.label, m, *c.value(m), len(c.predictions), c.run_id, c.protocol)
            for c in cells for m in c.quality_metrics() if is_answer_metric(m)]
    by = {(c.arm, c.model, c.label): c for c in cells}
    deltas: list[Delta] = []
    for c in cells:
        ref = by.get((study.baseline, c.model, c.label))
        if ref is not None and c.arm != study.baseline:
            deltas += compare(ref, c, "arm", headline[c.label])
    for general, bio in model_pairs(cells):
        for c in cells:
            if c.model == bio and (g := by.get((c.arm, general, c.label))) is not None:
                deltas += compare(g, c, "family", headline[c.label])
    if study.baseline not in {c.arm for c in cells}:
        log.warning("baseline arm '%s' is not in this study (arms: %s): no deltas against it",
                    study.baseline, ", ".join(sorted({c.arm for c in cells})))
    designs = factorials(cells, headline)
    # one Holm family: the headline deltas, the factorial effects and each best-cell test
    family = [*(d for d in deltas if d.headline), *(e for f in designs for e in f.effects),
              *(f.best for f in designs if f.best is not None)]
    for x, p in zip(family, holm([x.p for x in family]), strict=True):
        x.p_holm = p
    costs = [{"arm": c.arm, "model": c.model, "task": c.label, "n": len(c.predictions),
              headline[c.label]: c.value(headline[c.label])[0], **c.cost()} for c in cells]
    problems = [p for c in cells for p in check(c)]
    for p in problems:
        log.warning("metric check: %s", p)
    warnings = parse_warnings(cells, unparsed_threshold)
    for w in warnings:
        log.warning("%s", w)
    return Report(study, headline, rows, deltas, costs, problems,
                  study_strata(cells, study.baseline, headline),
                  protocol_deltas(cells, headline), verdicts(deltas), warnings, unparsed_threshold, designs)


def report_dir(study: Study, out: str | Path | None = None) -> Path:
    """`reports/<experiment>-<parent run id prefix>/` under the working directory, or `out`."""
    if out is not None:
        return Path(out)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study.experiment).lstrip(".") or "study"
    return Path("reports") / f"{safe}-{study.parent_run_id[:8]}"


def log_to_parent(report: Report, folder: Path, artifact_path: str = keys.REPORT_DIR) -> None:
    """Log the report folder as artifacts of the study's parent run."""
    from biorag.tracking.runs import log_folder

    log_folder(folder, artifact_path, run_id=report.study.parent_run_id)
