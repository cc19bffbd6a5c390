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

from biorag.errors import BioragError
from biorag.report.checks import adapter_warnings
from biorag.report.factorial import Factorial, factorials
from biorag.report.labels import arm_key, base_metric
from biorag.report.protocol_effects import (
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


def headline_metric(metrics: dict[str, float], task: str, listed: Sequence[str] = (),
                    continuation: str = "") -> str:
    """The metric a task is summarised by: the first metric its config lists (`listed`) that
    was logged — the metric itself, else its log-likelihood variants (`_ll` first when the
    continuations were letters, where length normalisation changes nothing); without such a
    list, the logged metric whose scorer ranks first for heading a table; else the first logged."""
    logged = [keys.split_metric(k)[1] for k in metrics
              if keys.split_metric(k)[0] == task and not keys.is_interval(k)]
    suffixes = ("", "_ll", "_ll_norm") if continuation == "letter" else ("", "_ll_norm", "_ll")
    for name in listed:
        for suffix in suffixes:
            if name + suffix in logged:
                return name + suffix
    ranked = sorted((r, k) for k in logged if (r := headline_rank(k)) is not None)
    if ranked:
        top = ranked[0][1]
        base, suffix = base_metric(top)
        return base + "_ll" if suffix == "_ll_norm" and continuation == "letter" and base + "_ll" in logged else top
    return logged[0] if logged else keys.N


def measured(cells: Sequence[Cell]) -> dict[str, list[str]]:
    """Per task (label): the answer metrics its cells logged with an interval."""
    out: dict[str, list[str]] = {}
    for c in cells:
        got = out.setdefault(c.label, [])
        got += [m for m in c.quality_metrics() if is_answer_metric(m) and m not in got]
    return out


def choose_headlines(cells: Sequence[Cell], metric: str | None = None) -> tuple[dict[str, str], list[str]]:
    """Per task (label): its headline metric, `metric` where the task measured it; and a
    warning per task that did not. A metric no task measured is an error naming those measured."""
    headline: dict[str, str] = {}
    for c in cells:  # per task and protocol: `medqa`, `medqa@cot`
        headline.setdefault(c.label, headline_metric(c.metrics, c.task, c.task_info.metrics,
                                                     c.task_info.continuation))
    if metric is None:
        return headline, []
    found = measured(cells)
    if not any(metric in ms for ms in found.values()):
        raise BioragError(f"metric '{metric}' was not measured in this study; measured: "
                          + "; ".join(f"{t}: {', '.join(sorted(ms)) or 'none'}" for t, ms in found.items()))
    warnings = []
    for task, ms in found.items():
        if metric in ms:
            headline[task] = metric
        else:
            warnings.append(f"task {task} did not measure {metric}: its headline stays {headline[task]}")
    return headline, warnings


def chance_levels(cells: Sequence[Cell]) -> dict[str, float]:
    """Per task (label): the accuracy of a uniform guess, where its cells know it."""
    out: dict[str, list[float]] = {}
    for c in cells:
        if not math.isnan(c.task_info.chance):
            out.setdefault(c.label, []).append(c.task_info.chance)
    return {t: sum(xs) / len(xs) for t, xs in out.items()}


# -- checks: logged numbers against the logged predictions -----------------------------------


def recompute(cell: Cell) -> dict[str, tuple[float, float, float]]:
    """Metrics recomputed from the cell's per-example scores: every metric that is a mean of
    them (accuracy, exact match, ROUGE, ...), with the interval the runner's seed gives.
    Corpus-level metrics (macro-F1, micro code-F1) are not means and are left out."""
    out = {}
    for metric in cell.quality_metrics():
        values = [p.scores[metric] for p in cell.predictions if metric in p.scores]
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
    chance: dict[str, float] = field(default_factory=dict)  # task -> accuracy of a uniform guess


def compare(reference: Cell, treatment: Cell, kind: str, headline: str) -> list[Delta]:
    """Paired deltas on every metric both cells logged with per-example scores."""
    out = []
    for metric in treatment.quality_metrics():
        if metric not in reference.quality_metrics() or not is_answer_metric(metric):
            continue
        r, t = reference.scores(metric), treatment.scores(metric)
        # an item without a value in either cell (a judge's missing verdict) is not paired
        ids = [i for i in r if i in t and not math.isnan(r[i]) and not math.isnan(t[i])]
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


def build_report(study: Study, unparsed_threshold: float = UNPARSED_WARN, metric: str | None = None) -> Report:
    """Tables, paired deltas, cost and checks of a study's cells; `metric` heads the tables
    of every task that measured it (default: each task's own, `headline_metric`)."""
    study.cells.sort(key=lambda c: arm_key(c.arm))  # the design's order wherever cells are listed
    cells = study.cells
    headline, metric_warnings = choose_headlines(cells, metric)
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
    design = adapter_warnings(cells, study.baseline)
    from biorag.report.judges import judge_warnings

    warnings = [*design, *metric_warnings, *parse_warnings(cells, unparsed_threshold),
                *judge_warnings(cells, unparsed_threshold)]
    for w in warnings:
        log.warning("%s", w)
    return Report(study, headline, rows, deltas, costs, problems,
                  study_strata(cells, study.baseline, headline),
                  protocol_deltas(cells, headline), verdicts(deltas), [*study.notes, *warnings],
                  unparsed_threshold, designs, chance_levels(cells))


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
