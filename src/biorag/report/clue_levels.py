"""CLUE in a report: its Level-1 / Level-2 averages, and how much CLUE's quirks move a score.

A protocol with `levels` (experiments/protocol/clue.yaml) groups tasks as a benchmark does:
a level is the mean of its tasks' scores, a task's score the mean over its settings
(LongHealth: settings 1, 2, 3), each from the cell's logged metric. Its 95% interval resamples
every cell's items independently (seeded) and recomputes the level. A level with a task missing
is shown with what it has, and says which are missing.

For a study run under both `clue` and `clue-compat`, each task's score is split into CLUE's
two quirks: the first item counted twice (the compat cell's logged value against the plain mean
of its own per-item scores) and sampling at temperature 1 (that plain mean against the greedy
`clue` cell), with the paired test of the second on the same items.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from biorag.report.study import Cell
from biorag.report.tables import Table, fmt, fmt_ci, fmt_p
from biorag.scoring.stats import paired_test

log = logging.getLogger(__name__)
N_RESAMPLES = 1000


@dataclass
class Level:
    arm: str
    model: str
    protocol: str
    level: str
    value: float
    lo: float
    hi: float
    tasks: list[str]  # the benchmark tasks it averages
    missing: list[str]  # the ones the study has no cell (or metric) for


@dataclass
class Quirks:
    arm: str
    model: str
    task: str
    metric: str
    corrected: float  # protocol clue: greedy, plain mean
    compat: float  # protocol clue-compat, as logged: sampled, first item counted twice
    double_count: float  # compat logged - compat plain mean
    sampling: float  # compat plain mean - corrected
    p_sampling: float  # paired test of the per-item scores, compat vs corrected
    n: int


def protocol_levels(name: str) -> dict[str, dict[str, Any]]:
    """The `levels` of a protocol, or {} (an unknown or user protocol without them)."""
    from biorag.errors import BioragError
    from biorag.tasks.protocols import load_protocol

    if name == "task":
        return {}
    try:
        return load_protocol(name).levels
    except BioragError:
        return {}


def _entries(levels: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list[str]]]:
    """benchmark task -> (metric, the biorag tasks it averages)."""
    return {bench: (spec["metric"], list(spec.get("tasks") or [bench]))
            for entries in levels.values() for bench, spec in entries.items()}


def levels(cells: list[Cell], seed: int = 0, n_resamples: int = N_RESAMPLES) -> list[Level]:
    groups: dict[tuple[str, str, str], dict[str, Cell]] = defaultdict(dict)
    for c in cells:
        groups[(c.arm, c.model, c.protocol)][c.task] = c
    out = []
    rng = np.random.default_rng(seed)
    known = {p: protocol_levels(p) for p in {c.protocol for c in cells}}  # each YAML read once
    for (arm, model, protocol), by_task in sorted(groups.items()):
        for level, entries in known[protocol].items():
            present, missing = [], []
            for bench, (metric, tasks) in _entries({level: entries}).items():
                got = [(by_task[t].value(metric)[0], np.array(list(by_task[t].scores(metric).values())))
                       for t in tasks if t in by_task]
                got = [(v, s) for v, s in got if not math.isnan(v) and len(s)]
                if len(got) < len(tasks):
                    missing.append(bench if not got else f"{bench} ({len(tasks) - len(got)} of {len(tasks)} settings)")
                if got:
                    present.append((bench, got))
            if not present:
                continue
            value = float(np.mean([np.mean([v for v, _ in got]) for _, got in present]))
            boots = [np.mean([np.mean([s[rng.integers(0, len(s), len(s))].mean() for _, s in got])
                              for _, got in present]) for _ in range(n_resamples)]
            lo, hi = np.percentile(boots, [2.5, 97.5])
            out.append(Level(arm, model, protocol, level, value, float(lo), float(hi),
                             [b for b, _ in present], missing))
    return out


def quirks(cells: list[Cell], corrected: str = "clue", compat: str = "clue-compat",
           seed: int = 0) -> list[Quirks]:
    metric_of = {t: m for m, tasks in _entries(protocol_levels(corrected)).values() for t in tasks}
    by = {(c.arm, c.model, c.task, c.protocol): c for c in cells}
    out = []
    for (arm, model, task, protocol), q in sorted(by.items()):
        ref = by.get((arm, model, task, corrected))
        if protocol != compat or ref is None or task not in metric_of:
            continue
        metric = metric_of[task]
        rs, qs = ref.scores(metric), q.scores(metric)
        ids = [i for i in rs if i in qs]
        if not ids:
            continue
        plain = float(np.mean(list(qs.values())))
        test = paired_test([rs[i] for i in ids], [qs[i] for i in ids], seed=seed)
        out.append(Quirks(arm, model, task, metric, ref.value(metric)[0], q.value(metric)[0],
                          q.value(metric)[0] - plain, plain - ref.value(metric)[0], test.p, len(ids)))
    return out


def clue_tables(cells: list[Cell]) -> list[Table]:
    out = []
    found = levels(cells)
    if found:
        t = Table("Benchmark levels (CLUE: Level 1 = MedNLI, MeQSum, Problem Summary; Level 2 = "
                  "MeDiSumQA, MeDiSumCode, LongHealth)",
                  ["arm", "model", "protocol", "level", "mean [95% CI]", "tasks", "missing"],
                  note="a level is the mean of its tasks' headline scores (LongHealth: the mean of its "
                       "three settings); the interval resamples each cell's items")
        for lv in found:
            t.rows.append([lv.arm, lv.model, lv.protocol, lv.level, fmt_ci(lv.value, lv.lo, lv.hi),
                           ", ".join(lv.tasks), ", ".join(lv.missing) or "-"])
        out.append(t)
    effects = quirks(cells)
    if effects:
        t = Table("CLUE's quirks, measured (clue-compat against clue, same items)",
                  ["task", "arm", "model", "metric", "clue", "clue-compat", "first item twice",
                   "sampling (T=1)", "p (sampling)", "n"],
                  note="clue-compat as logged = clue + first-item double count + sampling effect")
        for e in effects:
            t.rows.append([e.task, e.arm, e.model, e.metric, fmt(e.corrected), fmt(e.compat),
                           f"{e.double_count:+.3f}", f"{e.sampling:+.3f}", fmt_p(e.p_sampling), str(e.n)])
        out.append(t)
    return out
