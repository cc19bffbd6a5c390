"""What a report says of its judges: who judged each cell, how far each judge agreed with human
labels when last checked (or that it never was), how far a jury agreed with itself, how often a
verdict could not be read, and the pairwise arenas logged to the study."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from biorag.report.study import Cell, Study
from biorag.report.tables import Table, fmt

UNPARSED_KEY = "judge_unparsed_rate"


def judges_table(cells: Sequence[Cell]) -> Table | None:
    judged = [c for c in cells if c.judge_tags.get("judges")]
    if not judged:
        return None
    t = Table("Judges: agreement with human labels (last check), within the jury, and parse failures",
              ["cell", "judges", "check against human labels", "jury agreement", "unparsed", "judge cost"],
              note="check: `biorag judge check NAME --labels FILE`; jury agreement: Krippendorff's alpha "
                   "(nominal for verdicts, interval for 1-5 scales) and Cohen's kappa per pair; unparsed "
                   "verdicts are missing, never scored")
    for c in judged:
        names = c.judge_tags["judges"].split(",")
        checks = "\n".join(f"{n}: {c.judge_tags.get(f'judge.{n}.check', 'never checked')}"
                           + (" (judges its own model's answers)" if f"judge.{n}.self_preference" in c.judge_tags
                              else "") for n in names)
        agreement = []
        for level in ("binary", "scale"):
            raw = c.judge_tags.get(f"judge.agreement.{level}")
            if raw:
                a = json.loads(raw)
                kappas = ", ".join(f"{k} {fmt(v, 2)}" for k, v in a.get("kappa", {}).items())
                agreement.append(f"{level}: alpha {fmt(a.get('alpha', math.nan), 2)} on {a.get('n_units', 0)} units"
                                 + (f"; kappa {kappas}" if kappas else ""))
        unparsed = c.value(UNPARSED_KEY)[0]
        cost = c.cost()
        t.rows.append([c.name, ", ".join(names), checks, "\n".join(agreement) or "- (one judge)",
                       "-" if math.isnan(unparsed) else f"{unparsed:.1%}",
                       "-" if math.isnan(cost["judge_questions"]) else
                       f"{cost['judge_questions']:.0f} questions, {cost['judge_seconds']:.1f} s"])
    return t


def study_arena_tables(study: Study) -> list[Table]:
    out = []
    for arena in study.arenas:
        out += arena_tables(arena.get("groups", []), arena.get("judge", ""))
    return out


def judge_warnings(cells: Sequence[Cell], threshold: float) -> list[str]:
    out = []
    for c in cells:
        rate = c.value(UNPARSED_KEY)[0]
        if not math.isnan(rate) and rate > threshold:
            out.append(f"{c.name}: {rate:.1%} of the judge's verdicts could not be read (over {threshold:.0%}); "
                       "those items have no judged score. A judge read by log-likelihood has none")
        for name in c.judge_tags.get("judges", "").split(","):
            if name and "never checked" in c.judge_tags.get(f"judge.{name}.check", "never checked"):
                out.append(f"{c.name}: judge {name} was never checked against human labels")
    return list(dict.fromkeys(out))


def fmt_rate(v: Sequence[float]) -> str:
    value, lo, hi = v
    return "-" if value is None or math.isnan(value) else f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def arena_tables(groups: Sequence[dict[str, Any]], judge: str = "") -> list[Table]:
    """Per (model, task): each arm's win rate against each other arm, and the Bradley-Terry
    ranking, from the groups of an arena as logged (`biorag.report.arena`)."""
    out = []
    for g in groups:
        model, task, stats = g["model"], g["task"], g["stats"]
        strength = stats.get("strength", {})
        ranking = stats.get("ranking", [])
        rows = []
        for arm in ranking:
            wins = [f"{other}: {fmt_rate(stats['win_rate'][f'{arm}>{other}'])}" for other in ranking
                    if other != arm and f"{arm}>{other}" in stats["win_rate"]]
            rows.append([arm, f"{strength.get(arm, math.nan):+.2f}", "\n".join(wins)])
        n = sum(stats.get("n", {}).values())
        ties = stats.get("tie_rate", {})
        note = (f"{n} item pairs judged in both orders; a pick that flips with the order is a tie "
                f"(ties: {', '.join(f'{k} {v:.0%}' for k, v in ties.items())})")
        if stats.get("missing"):
            note += f"; {stats['missing']} pair(s) without a readable verdict left out"
        out.append(Table(f"pairwise arena{f' ({judge})' if judge else ''}: {model} on {task}, best first",
                         ["arm", "Bradley-Terry strength", "win rate against (95% CI)"], rows, note))
    return out
