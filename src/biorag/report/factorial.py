"""The RAG x fine-tune factorial: does fine-tuning add anything once retrieval is there?

Per model and task, the cells of a study are placed by their levels: retrieval (the arm's
retriever settings, or none) and fine-tune (the arm's adapter, or none). Four cells that
share one retriever and one adapter — base (neither), rag (retrieval), lora (fine-tune) and
lora_rag (both) — form a 2x2, and on the items all four scored, per item:

- retrieval main effect:  ((rag - base) + (lora_rag - lora)) / 2
- fine-tune main effect:  ((lora - base) + (lora_rag - rag)) / 2
- interaction:            (lora_rag - lora) - (rag - base)

An adapter seen only with retrieval (raft: fine-tuned *for* retrieval) is an alternative
fine-tune level: raft - rag (its effect given retrieval) and raft - lora_rag (against the
plain fine-tune given retrieval). Each effect is the mean of its per-item contrasts, with a
95% paired bootstrap interval over items (as every interval of the report) and a two-sided
sign-flip permutation test (`biorag.scoring.stats.sign_flip`); the report Holm-adjusts them
with its other headline tests. Beside each effect stands its cost: index build seconds for
retrieval, fine-tuning seconds and tokens for an adapter, eval seconds per item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from biorag.report.study import Cell
from biorag.report.tables import Table, fmt_ci, fmt_p
from biorag.scoring.metrics import aggregate
from biorag.scoring.stats import paired_test, sign_flip

NONE = "none"  # the fine-tune level of an arm without an adapter


@dataclass
class Effect:
    """One contrast of the factorial: its mean over items, interval and test."""

    model: str
    task: str
    metric: str
    effect: str  # "retrieval", "fine-tune A", "interaction A", "A given retrieval", "A vs B"
    contrast: str  # how it is computed from the cells' arms
    value: float
    lo: float
    hi: float
    p: float  # sign-flip permutation test, two-sided
    n: int  # items scored by every cell of the contrast
    cost: str = ""  # what the level costs, once
    eval_per_item: str = ""  # eval seconds per item, level off -> on
    p_holm: float = math.nan


@dataclass
class Best:
    """Which cell of a model's factorial is best on a task, and whether it beats the next."""

    model: str
    task: str
    metric: str
    best: str  # arm
    best_value: float
    best_ci: tuple[float, float]
    runner_up: str
    runner_up_value: float
    delta: float
    lo: float
    hi: float
    p: float
    test: str
    n_cells: int
    p_holm: float = math.nan

    def sentence(self, alpha: float = 0.05) -> str:
        p = self.p_holm if not math.isnan(self.p_holm) else self.p
        verdict = "significant" if p < alpha else "not significant"
        lead = (f"{self.model} on {self.task}: {self.best} is the best of the {self.n_cells} cells "
                f"({self.metric} {self.best_value:.3f} [{self.best_ci[0]:.3f}, {self.best_ci[1]:.3f}])")
        if self.delta == 0:
            return lead + f", tied with {self.runner_up} ({self.runner_up_value:.3f}): no difference to test."
        return (lead + f"; ahead of {self.runner_up} ({self.runner_up_value:.3f}) by {self.delta:+.3f} "
                f"[{self.lo:+.3f}, {self.hi:+.3f}], {self.test} p={self.p:.3g} (Holm {p:.3g}): {verdict}.")


@dataclass
class Factorial:
    """A model's cells on one task placed in the design: arm names by (retriever, adapter)."""

    model: str
    task: str
    metric: str
    base: Cell
    rag: Cell
    tuned: dict[str, tuple[Cell | None, Cell]] = field(default_factory=dict)  # adapter -> (off, on)
    effects: list[Effect] = field(default_factory=list)
    best: Best | None = None

    def cells(self) -> list[Cell]:
        return [self.base, self.rag, *(c for off, on in self.tuned.values() for c in (off, on) if c is not None)]


def contrast(values: dict[str, dict[str, float]], weights: dict[str, float]) -> tuple[list[str], list[float]]:
    """Per-item sums of weighted cell scores over the items every weighted cell scored:
    (item ids, contrasts); `values` maps a cell to its {item: score}."""
    cells = [c for c, w in weights.items() if w]
    ids = [i for i in values[cells[0]] if all(i in values[c] for c in cells[1:])]
    return ids, [sum(w * values[c][i] for c, w in weights.items() if w) for i in ids]


def estimate(values: dict[str, dict[str, float]], weights: dict[str, float], seed: int = 0
             ) -> tuple[float, float, float, float, int]:
    """(mean contrast, 95% bootstrap lo, hi, sign-flip p, n items) of a weighted contrast."""
    ids, xs = contrast(values, weights)
    if not xs:
        return math.nan, math.nan, math.nan, math.nan, 0
    value, lo, hi = aggregate(xs, seed=seed)
    return value, lo, hi, sign_flip(xs, seed=seed), len(ids)


def place(cells: Sequence[Cell], headline: dict[str, str]) -> list[Factorial]:
    """Every factorial the cells hold: per model, task and retriever, the closed-book base
    (no adapter), its rag cell, and each adapter's cells with and without that retriever."""
    out = []
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.label), []).append(c)
    for (model, task), group in groups.items():
        by = {}
        for c in sorted(group, key=lambda c: c.arm):  # the first arm of a level, by name
            by.setdefault((c.retriever, c.adapter), c)
        base = by.get((None, None))
        retrievers = list(dict.fromkeys(c.retriever for c in group if c.retriever is not None))
        for r in retrievers:
            rag = by.get((r, None))
            if base is None or rag is None:
                continue
            f = Factorial(model, task, headline.get(task, ""), base, rag)
            for c in group:
                if c.retriever == r and c.adapter is not None:
                    f.tuned[c.adapter] = (by.get((None, c.adapter)), c)
            if f.tuned:
                out.append(f)
    return out


def effects(f: Factorial, seed: int = 0) -> list[Effect]:
    """The factorial's effects on its headline metric (see the module docstring)."""
    m = f.metric
    cells = f.cells()
    values = {c.arm: c.scores(m) for c in cells}
    b, r = f.base.arm, f.rag.arm
    out = []

    def add(name: str, how: str, weights: dict[str, float], cost: str, per_item: str) -> None:
        value, lo, hi, p, n = estimate(values, weights, seed)
        out.append(Effect(f.model, f.task, m, name, how, value, lo, hi, p, n, cost, per_item))

    full = [(a, off, on) for a, (off, on) in f.tuned.items() if off is not None]
    for a, off, on in full:
        add("retrieval" if len(full) == 1 else f"retrieval ({a})", f"(({r} - {b}) + ({on.arm} - {off.arm})) / 2",
            {r: .5, b: -.5, on.arm: .5, off.arm: -.5}, index_cost(f.rag), per_item_cost([f.base, off], [f.rag, on]))
        add(f"fine-tune {a}", f"(({off.arm} - {b}) + ({on.arm} - {r})) / 2",
            {off.arm: .5, b: -.5, on.arm: .5, r: -.5}, adapter_cost(on), per_item_cost([f.base, f.rag], [off, on]))
        add(f"interaction {a}", f"({on.arm} - {off.arm}) - ({r} - {b})",
            {on.arm: 1, off.arm: -1, r: -1, b: 1}, "", "")
    for a, (off, on) in f.tuned.items():
        if off is not None:
            continue
        add(f"fine-tune {a} given retrieval", f"{on.arm} - {r}", {on.arm: 1, r: -1}, adapter_cost(on),
            per_item_cost([f.rag], [on]))
        for other, _, other_on in full:
            add(f"{a} vs {other}", f"{on.arm} - {other_on.arm}", {on.arm: 1, other_on.arm: -1},
                adapter_cost(on), per_item_cost([other_on], [on]))
    return out


def best_cell(f: Factorial) -> Best | None:
    """The best of the factorial's cells on its headline metric, and its test against the next."""
    cells = sorted(f.cells(), key=lambda c: (-c.value(f.metric)[0], c.arm))
    cells = [c for c in cells if not math.isnan(c.value(f.metric)[0])]
    if len(cells) < 2:
        return None
    top, second = cells[0], cells[1]
    a, b = top.scores(f.metric), second.scores(f.metric)
    ids = [i for i in a if i in b]
    if not ids:
        return None
    t = paired_test([b[i] for i in ids], [a[i] for i in ids], seed=top.seed)
    v, lo, hi = top.value(f.metric)
    delta = v - second.value(f.metric)[0]
    return Best(f.model, f.task, f.metric, top.arm, v, (lo, hi), second.arm, second.value(f.metric)[0],
                delta, t.lo, t.hi, t.p, t.test, len(cells))


def factorials(cells: Sequence[Cell], headline: dict[str, str]) -> list[Factorial]:
    """Every factorial of a study with its effects and best cell."""
    out = place(cells, headline)
    for f in out:
        f.effects = effects(f, seed=f.base.seed)
        f.best = best_cell(f)
    return out


# -- cost ------------------------------------------------------------------------------------


def index_cost(cell: Cell) -> str:
    s = cell.cost()["index_build_seconds"]
    return f"index {s:.0f} s" if not math.isnan(s) else "index: not recorded"


def adapter_cost(cell: Cell) -> str:
    m = cell.adapter_manifest or {}
    s = cell.cost()["finetune_seconds"]
    if math.isnan(s):
        return "training: not recorded"
    r = m.get("results") or {}
    tokens = f", {int(r['tokens']):,} tok" if isinstance(r.get("tokens"), int | float) else ""
    device = f", {m['device']}" if m.get("device") else ""
    return f"train {s:.0f} s{tokens}{device}"


def per_item_cost(off: Sequence[Cell], on: Sequence[Cell]) -> str:
    """Mean eval seconds per item of the cells without the level, then with it."""
    def mean(cells: Sequence[Cell]) -> float:
        xs = [c.cost()["eval_seconds"] / max(len(c.predictions), 1) for c in cells]
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan

    a, b = mean(off), mean(on)
    return "-" if math.isnan(a) or math.isnan(b) else f"{a:.3f} -> {b:.3f}"


# -- tables ----------------------------------------------------------------------------------


def factorial_tables(designs: Sequence[Factorial]) -> list[Table]:
    """The effects with their costs, and a sentence per model and task on the best cell."""
    if not designs:
        return []
    t = Table("RAG x fine-tune factorial: effects on the headline metric (paired over items)",
              ["model", "task", "effect", "contrast", "estimate [95% CI]", "p (sign-flip)", "p (Holm)", "n",
               "one-off cost", "eval s/item (off -> on)"],
              note="each effect is the mean per-item contrast; 95% paired bootstrap interval over items; "
                   "two-sided sign-flip permutation test; Holm over every headline test of the report")
    for f in designs:
        for e in f.effects:
            t.rows.append([e.model, e.task, e.effect, e.contrast, fmt_ci(e.value, e.lo, e.hi, sign=True),
                           fmt_p(e.p), fmt_p(e.p_holm), str(e.n), e.cost or "-", e.eval_per_item or "-"])
    best = Table("Which cell is best", ["model", "task", "finding"],
                 note="the best cell against the next best, paired (McNemar for 0/1 scores, else bootstrap); "
                      "significant: Holm-adjusted p < 0.05")
    best.rows = [[f.model, f.task, f.best.sentence()] for f in designs if f.best is not None]
    return [t, best]
