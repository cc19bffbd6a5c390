"""The figures of a report: a grouped bar chart per task (95% interval whiskers where the
cell has an interval, the chance level where the task has one), a delta (forest) plot with
raw and Holm-adjusted p, and the interaction plot of each RAG x fine-tune factorial.

Each figure is drawn once and saved in every format asked for (PNG for the HTML page, SVG
and PDF for a paper) at the dpi asked for, with constrained layout so that titles, labels,
legends and whiskers keep out of each other's way. Figures are returned as bytes; the
report folder is written only once everything is drawn.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biorag.report.labels import arm_key, has_chance, metric_name, task_name
from biorag.report.tables import fmt_p

if TYPE_CHECKING:
    from biorag.report.compare import Delta, Report
    from biorag.report.factorial import Factorial

BARS, DELTAS, FACTORIAL = "bars", "deltas", "factorial"
BAR_PNG, DELTA_PNG, FACTORIAL_PNG = f"{BARS}.png", f"{DELTAS}.png", f"{FACTORIAL}.png"
FORMATS = ("png", "svg", "pdf")
DPI = 150
# no creation dates in the files: the same report draws the same bytes
_NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}
# text stays text: editable in an SVG editor, TrueType (not Type 3) fonts in the PDF, as
# publishers ask
_PAPER_RC = {"svg.fonttype": "none", "pdf.fonttype": 42}
Figure = dict[str, bytes]  # file name -> its bytes, one per format


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _finite(*xs: float) -> bool:
    return all(x is not None and not math.isnan(x) for x in xs)


def _descriptions(report: Report) -> dict[str, str]:
    return {c.label: c.task_info.description for c in report.study.cells}


def bar_chart(report: Report, dpi: int = DPI, formats: Sequence[str] = FORMATS) -> Figure | None:
    """Grouped bars per task (models on the axis, one bar per arm) of the headline metric;
    None when no cell has a value to draw. A bar without an interval has no whisker."""
    rows_of = {task: {(r.arm, r.model): r for r in report.rows
                      if r.task == task and r.metric == head and _finite(r.value)}
               for task, head in report.headline.items()}
    tasks = [t for t, rows in rows_of.items() if rows]
    if not tasks:
        return None
    plt = _pyplot()
    arms = sorted({arm for rows in rows_of.values() for arm, _ in rows}, key=arm_key)
    models = list(dict.fromkeys(model for rows in rows_of.values() for _, model in rows))
    per_task = max(3.5, 1.5 + 0.6 * len(models) * len(arms))
    fig, axes = plt.subplots(1, len(tasks), figsize=(per_task * len(tasks) + 1.5, 4.6), squeeze=False,
                             layout="constrained")
    width = 0.8 / max(len(arms), 1)
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    described = _descriptions(report)
    handles: dict[str, Any] = {}
    for ax, task in zip(axes[0], tasks, strict=True):
        head, rows = report.headline[task], rows_of[task]
        for i, arm in enumerate(arms):
            drawn = [(j - 0.4 + width * (i + 0.5), rows[(arm, m)]) for j, m in enumerate(models) if (arm, m) in rows]
            if not drawn:
                continue
            handles[arm] = ax.bar([x for x, _ in drawn], [r.value for _, r in drawn], width, color=colours[arm],
                                  label=arm)
            whiskers = [(x, r) for x, r in drawn if _finite(r.lo, r.hi)]
            if whiskers:
                ax.errorbar([x for x, _ in whiskers], [r.value for _, r in whiskers],
                            yerr=[[max(r.value - r.lo, 0) for _, r in whiskers],
                                  [max(r.hi - r.value, 0) for _, r in whiskers]],
                            fmt="none", ecolor="black", elinewidth=1, capsize=4)
        chance = report.chance.get(task, math.nan)
        if has_chance(head) and _finite(chance):
            handles["chance"] = ax.axhline(chance, color="grey", ls=":", lw=1.5, label="chance")
        ax.set_xticks(range(len(models)), models)
        ax.set_title(task_name(task, described.get(task, ""), width=int(per_task * 11)), fontsize=9)
        ax.set_ylabel(f"{metric_name(head)}\n(95% CI)" if len(metric_name(head)) > 24 else
                      f"{metric_name(head)} (95% CI)", fontsize=9)
        top = max([1.0, *(r.hi for r in rows.values() if _finite(r.hi)), *(r.value for r in rows.values())])
        ax.set_ylim(0, top * 1.08)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), title="arm", fontsize=8, loc="outside right upper")
    fig.suptitle(f"{report.study.experiment}: headline metric by arm", fontsize=11)
    return _save(fig, BARS, dpi, formats)


def delta_plot(report: Report, dpi: int = DPI, formats: Sequence[str] = FORMATS) -> Figure | None:
    """Forest plot of the headline deltas with their 95% intervals, each with its p and
    Holm-adjusted p; None when there are none."""
    deltas = [d for d in report.deltas if d.headline and _finite(d.delta)]
    if not deltas:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.55 * len(deltas)), layout="constrained")
    ys = list(range(len(deltas)))[::-1]
    colours = {"arm": "tab:blue", "family": "tab:green"}
    for y, d in zip(ys, deltas, strict=True):
        whisker = _finite(d.lo, d.hi)
        xerr = [[max(d.delta - d.lo, 0)], [max(d.hi - d.delta, 0)]] if whisker else None
        ax.errorbar([d.delta], [y], xerr=xerr, fmt="o", capsize=4 if whisker else 0, color=colours.get(d.kind, "k"))
        ax.annotate(f"p={fmt_p(d.p)}, Holm {fmt_p(d.p_holm)}", (d.delta, y), textcoords="offset points",
                    xytext=(0, 6), ha="center", va="bottom", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    ax.axvline(0, color="grey", lw=1, ls="--")
    metrics = list(dict.fromkeys(d.metric for d in deltas))
    ax.set_yticks(ys, [_label(d, len(metrics) > 1) for d in deltas], fontsize=8)
    ax.set_ylim(-0.7, len(deltas) - 0.3)
    what = metric_name(metrics[0]) if len(metrics) == 1 else "the headline metric"
    ax.set_xlabel(f"difference in {what}\n(95% paired-bootstrap CI)", fontsize=9)
    from matplotlib.lines import Line2D

    kinds = {"arm": "arm vs baseline arm", "family": "biomedical vs general model"}
    present = list(dict.fromkeys(d.kind for d in deltas))
    fig.legend([Line2D([], [], marker="o", ls="", color=colours[k]) for k in present],
               [kinds[k] for k in present], fontsize=8, loc="outside lower center", ncols=len(present))
    ax.set_title(f"{report.study.experiment}: paired deltas", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, DELTAS, dpi, formats)


def _label(d: Delta, with_metric: bool) -> str:
    label = f"{d.task}: {d.treatment} vs {d.reference}"
    return f"{label}\n{metric_name(d.metric)}" if with_metric else label


def interaction_plot(factorials: list[Factorial], chance: dict[str, float] | None = None,
                     descriptions: dict[str, str] | None = None, dpi: int = DPI,
                     formats: Sequence[str] = FORMATS) -> Figure | None:
    """The 2x2 of each factorial as an interaction plot: the headline metric without and
    with retrieval, one line per fine-tune level (parallel lines: no interaction), a level
    seen only with retrieval (raft) as a point, 95% intervals as whiskers; None without any."""
    if not factorials:
        return None
    plt = _pyplot()
    chance, descriptions = chance or {}, descriptions or {}
    fig, axes = plt.subplots(1, len(factorials), figsize=(4.8 * len(factorials), 4.6), squeeze=False,
                             layout="constrained")
    for ax, f in zip(axes[0], factorials, strict=True):
        levels = [("no fine-tune", f.base, f.rag), *((a, off, on) for a, (off, on) in f.tuned.items())]
        for i, (name, off, on) in enumerate(levels):
            pts = [(x, c) for x, c in ((0, off), (1, on)) if c is not None and _finite(c.value(f.metric)[0])]
            if not pts:
                continue
            xs = [x + (i - (len(levels) - 1) / 2) * 0.03 for x, _ in pts]  # dodge the whiskers
            vals = [c.value(f.metric) for _, c in pts]
            err = [[max(v[0] - v[1], 0) if _finite(v[1], v[2]) else 0 for v in vals],
                   [max(v[2] - v[0], 0) if _finite(v[1], v[2]) else 0 for v in vals]]
            label = f"{name} ({', '.join(c.arm for _, c in pts)})"
            ax.errorbar(xs, [v[0] for v in vals], yerr=err, fmt="-o" if len(pts) > 1 else "s", capsize=4,
                        label=label)
        if has_chance(f.metric) and _finite(chance.get(f.task, math.nan)):
            ax.axhline(chance[f.task], color="grey", ls=":", lw=1.5, label="chance")
        ax.set_xticks([0, 1], ["closed-book", "retrieval"])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(f"{task_name(f.task, descriptions.get(f.task, ''), width=48)}\n({f.model})", fontsize=9)
        ax.set_ylabel(f"{metric_name(f.metric)} (95% CI)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title="fine-tune", fontsize=7, title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.1), ncols=1)
    fig.suptitle("RAG x fine-tune: interaction plots", fontsize=11)
    return _save(fig, FACTORIAL, dpi, formats)


def _save(fig: Any, stem: str, dpi: int, formats: Sequence[str]) -> Figure:
    import matplotlib

    out = {}
    with matplotlib.rc_context(_PAPER_RC):
        for ext in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=dpi, metadata=_NO_DATE.get(ext, {}))
            out[f"{stem}.{ext}"] = buf.getvalue()
    _pyplot().close(fig)
    return out


def write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
