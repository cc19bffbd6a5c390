"""Render a `biorag.report.study.Report`: tables (for the terminal, Markdown and HTML), a grouped bar
chart with interval whiskers per task, a delta (forest) plot, CSVs, and the report folder."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.report.clue import clue_tables
from biorag.report.compare import Delta, Report
from biorag.report.protocols import parsing_table, protocol_tables
from biorag.report.tables import Table, fmt, fmt_ci, fmt_p, fmt_seconds
from biorag.retrieval.evidence import CELL_KEYS, is_retrieval_metric

BAR_PNG, DELTA_PNG = "bars.png", "deltas.png"


# -- tables ---------------------------------------------------------------------------------


def quality_tables(report: Report) -> list[Table]:
    """Per task: arms x models, every metric with its 95% interval."""
    out = []
    base = report.study.baseline
    for task, head in report.headline.items():
        rows = [r for r in report.rows if r.task == task]
        metrics = list(dict.fromkeys(r.metric for r in rows))
        metrics.sort(key=lambda m: m != head)  # the headline metric first
        t = Table(f"{task}: every metric, 95% bootstrap CI", ["arm", "model", "family", "n", *metrics],
                  note=f"headline metric: {head}")
        cells = dict.fromkeys((r.arm, r.model, r.family, r.n) for r in rows)
        for arm, model, family, n in sorted(cells, key=lambda k: (k[1], k[0] != base, k[0])):
            vals = {r.metric: r for r in rows if (r.arm, r.model) == (arm, model)}
            t.rows.append([arm + (" (baseline)" if arm == base else ""), model, family, str(n),
                           *(fmt_ci(vals[m].value, vals[m].lo, vals[m].hi) if m in vals else "-"
                             for m in metrics)])
        out.append(t)
    return out


def delta_tables(report: Report, headline_only: bool = False) -> list[Table]:
    """Deltas against the baseline arm, and biomedical against general models."""
    out = []
    kinds = (
        ("arm", f"Deltas against the baseline arm '{report.study.baseline}' (same model, paired)"),
        ("family", "Biomedical minus general model (same arm, paired)"),
    )
    for kind, title in kinds:
        deltas = [d for d in report.deltas if d.kind == kind and (d.headline or not headline_only)]
        if not deltas:
            continue
        t = Table(title, ["task", "comparison", "metric", "delta [95% CI]", "test", "p", "p (Holm)",
                          "b / c", "n"],
                  note="delta = first minus second; b / c: discordant pairs (reference right and "
                       "treatment wrong / the reverse); Holm over the headline comparisons")
        for d in deltas:
            t.rows.append([d.task, f"{d.treatment} vs {d.reference}", d.metric + ("*" if d.headline else ""),
                           fmt_ci(d.delta, d.lo, d.hi, sign=True), d.test, fmt_p(d.p), fmt_p(d.p_holm),
                           f"{d.b} / {d.c}" if d.test.startswith("mcnemar") else "-", str(d.n)])
        out.append(t)
    return out


def cost_table(report: Report) -> Table:
    t = Table("Cost beside quality", ["arm", "model", "task", "headline", "eval s", "tokens",
                                      "index build s", "fine-tune s"],
              note="index build and fine-tuning are one-off costs, shared by the cells that use them")
    for c in report.costs:
        head = report.headline[c["task"]]
        t.rows.append([c["arm"], c["model"], c["task"], f"{head} {fmt(c[head])}", fmt_seconds(c["eval_seconds"]),
                       "-" if math.isnan(c["tokens"]) else f"{int(c['tokens']):,}",
                       fmt_seconds(c["index_build_seconds"]), fmt_seconds(c["finetune_seconds"])])
    return t


def retrieval_table(report: Report) -> Table | None:
    """The retrieval measures of every cell that retrieved."""
    cells = [c for c in report.study.cells if any(is_retrieval_metric(m) and not math.isnan(c.value(m)[0])
                                                  for m in c.quality_metrics())]
    if not cells:
        return None
    metrics = [m for m in CELL_KEYS if any(not math.isnan(c.value(m)[0]) for c in cells)]
    t = Table("Retrieval against gold evidence, 95% bootstrap CI", ["arm", "model", "task", *metrics],
              note="documents ranked by their first chunk; evidence_in_prompt: a gold document among the "
                   "passages packed into the prompt; leak_source_in_index: the item's own source is in the index")
    for c in cells:
        t.rows.append([c.arm, c.model, c.label, *(fmt_ci(*c.value(m)) for m in metrics)])
    return t


def strata_table(report: Report) -> Table | None:
    """A rag arm against its baseline within strata of what retrieval did."""
    if not report.strata:
        return None
    t = Table("Why retrieval helped or not: the headline metric by stratum (same items, paired)",
              ["task", "comparison", "stratum", "n", "metric", "rag arm [95% CI]", "baseline [95% CI]",
               "delta [95% CI]", "test", "p"],
              note="evidence not in prompt: retrieval failed for those items; evidence in prompt and "
                   "still wrong: the model did not use it")
    for s in report.strata:
        t.rows.append([s.task, f"{s.treatment}/{s.model} vs {s.reference}/{s.model}", s.stratum, str(s.n),
                       s.metric, fmt_ci(s.treatment_value, s.treatment_lo, s.treatment_hi),
                       fmt_ci(s.reference_value, s.reference_lo, s.reference_hi),
                       fmt_ci(s.delta, s.delta_lo, s.delta_hi, sign=True), s.test, fmt_p(s.p)])
    return t


def all_tables(report: Report, headline_only: bool = False) -> list[Table]:
    extra = [t for t in (retrieval_table(report), strata_table(report), parsing_table(report)) if t is not None]
    return [*quality_tables(report), *delta_tables(report, headline_only), *protocol_tables(report), *extra,
            *clue_tables(report.study.cells), cost_table(report)]


# -- plots ----------------------------------------------------------------------------------


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
    _write_bytes(path, buf.getvalue())
    return path


# -- documents ------------------------------------------------------------------------------


def _header(report: Report) -> list[tuple[str, str]]:
    s = report.study
    return [("MLflow experiment", s.experiment), ("parent run", f"{s.parent_run_id} ({s.parent_name})"),
            ("tracking URI", s.tracking_uri), ("git SHA", s.git_sha), ("baseline arm", s.baseline),
            ("cells", str(len(s.cells)))]


METHODS = (
    "Intervals are 95% percentile bootstrap intervals over examples (1,000 resamples, the run's seed). "
    "Deltas pair the same examples in both cells: McNemar's test for 0/1 scores (exact binomial when "
    "fewer than 25 pairs are discordant, else chi-square with continuity correction), a paired "
    "bootstrap for continuous scores (p from the bootstrap distribution shifted to no difference). "
    "Macro-F1 and micro code-F1 are corpus-level: their test uses the per-example scores "
    "(correctness, per-example F1) and no delta interval is given."
)


def markdown(report: Report, images: Sequence[str]) -> str:
    lines = [f"# biorag report: {report.study.experiment}", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in _header(report)]
    lines.append("")
    for img in images:
        lines += [f"![{img}]({img})", ""]
    for t in all_tables(report):
        lines += [f"## {t.title}", "", "| " + " | ".join(t.headers) + " |",
                  "|" + "|".join("---" for _ in t.headers) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines += ["", f"_{t.note}_" if t.note else "", ""]
    lines += ["## Method", "", METHODS, ""]
    if report.problems:
        lines += ["## Check failures", "", *[f"- {p}" for p in report.problems], ""]
    if report.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in report.warnings], ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 .3em}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child,td:nth-child(2),
th:nth-child(2){text-align:left}.note{color:#666;font-size:12px}img{max-width:100%}code{font-size:12px}"""


def html_page(report: Report, images: dict[str, bytes]) -> str:
    """One self-contained page: images embedded as base64, no external links."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>biorag report: "
             f"{e(report.study.experiment)}</title><style>{_CSS}</style></head><body>",
             f"<h1>biorag report: {e(report.study.experiment)}</h1><ul>"]
    parts += [f"<li><b>{e(k)}</b>: <code>{e(v)}</code></li>" for k, v in _header(report)]
    parts.append("</ul>")
    for name, data in images.items():
        parts.append(f"<p><img alt='{e(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'></p>")
    for t in all_tables(report):
        parts.append(f"<h2>{e(t.title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows]
        parts.append("</table>" + (f"<p class='note'>{e(t.note)}</p>" if t.note else ""))
    parts.append(f"<h2>Method</h2><p>{e(METHODS)}</p>")
    for title, items in (("Check failures", report.problems), ("Warnings", report.warnings)):
        if items:
            parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- the folder -----------------------------------------------------------------------------


def write_report(report: Report, folder: Path) -> dict[str, Path]:
    """Write PNGs, CSVs, Markdown and HTML into `folder`; each file appears complete or not at all.
    `folder` must be new, empty or an earlier biorag report: a user's folder is not written into."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "report.md").is_file())):
        raise BioragError(f"refusing to write the report into {folder}: it is not empty and not a "
                          "biorag report folder; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"bars": bar_chart(report, folder / BAR_PNG)}
    if (p := delta_plot(report, folder / DELTA_PNG)) is not None:
        files["deltas_plot"] = p
    files["results_csv"] = _write_csv(folder / "results.csv", [asdict(r) for r in report.rows])
    files["deltas_csv"] = _write_csv(folder / "deltas.csv", [asdict(d) for d in report.deltas])
    files["costs_csv"] = _write_csv(folder / "costs.csv", report.costs)
    for name, items in (("strata", report.strata), ("protocols", report.protocol_deltas)):
        if items:
            files[f"{name}_csv"] = _write_csv(folder / f"{name}.csv", [asdict(x) for x in items])
    images = [files[k].name for k in ("bars", "deltas_plot") if k in files]
    files["markdown"] = _write_text(folder / "report.md", markdown(report, images))
    files["html"] = _write_text(folder / "report.html",
                                html_page(report, {n: (folder / n).read_bytes() for n in images}))
    return files


def _write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode())


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return _write_text(path, buf.getvalue())
