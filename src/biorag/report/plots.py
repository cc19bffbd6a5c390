"""The plots of a report: a grouped bar chart with interval whiskers per task, a delta
(forest) plot, and the interaction plot of each RAG x fine-tune factorial; PNG files written
whole or not at all."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biorag.report.tables import fmt_p

if TYPE_CHECKING:
    from biorag.report.compare import Delta, Report
    from biorag.report.factorial import Factorial

BAR_PNG, DELTA_PNG, FACTORIAL_PNG = "bars.png", "deltas.png", "factorial.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def bar_chart(report: Report, path: Path) -> Path:
    """Grouped bars per task (models on the axis, one bar per arm) with 95% interval whiskers."""
    plt = _pyplot()
    tasks = list(report.headline)
    arms = list(dict.fromkeys(r.arm for r in report.rows))
    models = list(dict.fromkeys(r.model for r in report.rows))
    per_task = max(3.5, 1.5 + 0.6 * len(models) * len(arms))
    fig, axes = plt.subplots(1, len(tasks), figsize=(per_task * len(tasks), 4.2), squeeze=False)
    width = 0.8 / max(len(arms), 1)
    for ax, task in zip(axes[0], tasks, strict=True):
        head = report.headline[task]
        rows = {(r.arm, r.model): r for r in report.rows if r.task == task and r.metric == head}
        for i, arm in enumerate(arms):
            xs, ys, err = [], [], [[], []]
            for j, model in enumerate(models):
                r = rows.get((arm, model))
                if r is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(r.value)
                err[0].append(max(r.value - r.lo, 0) if not math.isnan(r.lo) else 0)
                err[1].append(max(r.hi - r.value, 0) if not math.isnan(r.hi) else 0)
            ax.bar(xs, ys, width, yerr=err, capsize=4, label=arm)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(f"{head} (95% CI)")
        ax.set_ylim(0, max(1.0, *(r.hi for r in rows.values() if not math.isnan(r.hi))) * 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(title="arm", fontsize=8)
    fig.suptitle(f"{report.study.experiment}: headline metric by arm", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def delta_plot(report: Report, path: Path) -> Path | None:
    """Forest plot of the headline deltas with their 95% intervals; None when there are none."""
    deltas = [d for d in report.deltas if d.headline]
    if not deltas:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(deltas)))
    ys = list(range(len(deltas)))[::-1]
    colours = {"arm": "tab:blue", "family": "tab:green"}
    for y, d in zip(ys, deltas, strict=True):
        lo = d.delta - d.lo if not math.isnan(d.lo) else 0
        hi = d.hi - d.delta if not math.isnan(d.hi) else 0
        ax.errorbar([d.delta], [y], xerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", capsize=4,
                    color=colours.get(d.kind, "k"))
        ax.annotate(f"p={fmt_p(d.p)}", (d.delta, y), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(ys, [_label(d) for d in deltas], fontsize=8)
    ax.set_xlabel("delta of the headline metric (95% paired-bootstrap CI)")
    from matplotlib.lines import Line2D

    kinds = {"arm": "arm vs baseline arm", "family": "biomedical vs general model"}
    present = list(dict.fromkeys(d.kind for d in deltas))
    ax.legend([Line2D([], [], marker="o", ls="", color=colours[k]) for k in present],
              [kinds[k] for k in present], fontsize=8, loc="best")
    ax.set_title(f"{report.study.experiment}: paired deltas", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _label(d: Delta) -> str:
    return f"{d.task}: {d.treatment} vs {d.reference} ({d.metric})"


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    _pyplot().close(fig)
    write_bytes(path, buf.getvalue())
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def interaction_plot(factorials: list[Factorial], path: Path) -> Path | None:
    """The 2x2 of each factorial as an interaction plot: the headline metric without and
    with retrieval, one line per fine-tune level (parallel lines: no interaction), a level
    seen only with retrieval (raft) as a point, 95% intervals as whiskers; None without any."""
    if not factorials:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(factorials), figsize=(4.6 * len(factorials), 4.0), squeeze=False)
    for ax, f in zip(axes[0], factorials, strict=True):
        levels = [("no fine-tune", f.base, f.rag), *((a, off, on) for a, (off, on) in f.tuned.items())]
        for i, (name, off, on) in enumerate(levels):
            pts = [(x, c) for x, c in ((0, off), (1, on)) if c is not None]
            xs = [x + (i - (len(levels) - 1) / 2) * 0.03 for x, _ in pts]  # dodge the whiskers
            vals = [c.value(f.metric) for _, c in pts]
            ys = [v[0] for v in vals]
            err = [[max(v[0] - v[1], 0) if not math.isnan(v[1]) else 0 for v in vals],
                   [max(v[2] - v[0], 0) if not math.isnan(v[2]) else 0 for v in vals]]
            label = f"{name} ({', '.join(c.arm for _, c in pts)})"
            ax.errorbar(xs, ys, yerr=err, fmt="-o" if len(pts) > 1 else "s", capsize=4, label=label)
        ax.set_xticks([0, 1], ["closed-book", "retrieval"])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(f"{f.task} ({f.model})", fontsize=10)
        ax.set_ylabel(f"{f.metric} (95% CI)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title="fine-tune", fontsize=7, title_fontsize=8, loc="best")
    fig.suptitle("RAG x fine-tune: interaction plots", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
