"""Render a `biorag.report.study.Report`: tables (for the terminal, Markdown and HTML), a grouped bar
chart with interval whiskers per task, a delta (forest) plot, CSVs, and the report folder."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.report.clue_levels import clue_tables
from biorag.report.compare import Report
from biorag.report.factorial import factorial_tables
from biorag.report.judges import judges_table, study_arena_tables
from biorag.report.labels import arm_key, metric_name
from biorag.report.latex import latex_files
from biorag.report.plots import (
    BARS,
    DELTAS,
    DPI,
    FACTORIAL,
    FORMATS,
    bar_chart,
    delta_plot,
    interaction_plot,
    write_bytes,
)
from biorag.report.protocol_effects import parsing_table, protocol_tables
from biorag.report.tables import Table, fmt, fmt_ci, fmt_p, fmt_seconds, markdown_table
from biorag.retrieval.evidence import CELL_KEYS, is_retrieval_metric

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
                  note=f"headline metric: {head} ({metric_name(head)})")
        cells = dict.fromkeys((r.arm, r.model, r.family, r.n) for r in rows)
        for arm, model, family, n in sorted(cells, key=lambda k: (k[1], arm_key(k[0]))):
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
    judged = any(not math.isnan(c.get("judge_seconds", math.nan)) for c in report.costs)
    t = Table("Cost beside quality", ["arm", "model", "task", "headline", "eval s", "tokens",
                                      "index build s", "fine-tune s",
                                      *(["judge s", "judge tokens in / out", "judge requests"] if judged else [])],
              note="index build and fine-tuning are one-off costs, shared by the cells that use them"
                   + ("; judge: the judges' model time, tokens and requests on the cell's answers (cached verdicts "
                      "included; a log-likelihood verdict is one request per allowed token)"
                      if judged else ""))
    for c in report.costs:
        head = report.headline[c["task"]]
        t.rows.append([c["arm"], c["model"], c["task"], f"{head} {fmt(c[head])}", fmt_seconds(c["eval_seconds"]),
                       "-" if math.isnan(c["tokens"]) else f"{int(c['tokens']):,}",
                       fmt_seconds(c["index_build_seconds"]), fmt_seconds(c["finetune_seconds"]),
                       *([fmt_seconds(c.get("judge_seconds", math.nan)), _pair(c), _count(c, "judge_requests")]
                         if judged else [])])
    return t


def _count(c: dict[str, Any], key: str) -> str:
    v = c.get(key, math.nan)
    return "-" if math.isnan(v) else f"{int(v):,}"


def _pair(c: dict[str, Any]) -> str:
    return "-" if math.isnan(c.get("judge_tokens_in", math.nan)) else \
        f"{_count(c, 'judge_tokens_in')} / {_count(c, 'judge_tokens_out')}"


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


def methods_table(report: Report) -> Table | None:
    """What each RAG method did and cost per item, beside plain retrieval."""
    cells = [c for c in report.study.cells if c.retriever is not None
             and not math.isnan(c.value("method_calls")[0])]
    if not any(c.value("method_calls")[0] > 0 for c in cells):
        return None
    t = Table("RAG methods: what they did and cost, per item (95% bootstrap CI where measured)",
              ["arm", "model", "task", "queries", "model calls", "tokens", "seconds", "filter kept",
               "evidence before filter -> in prompt", "generated passages"],
              note="model calls, tokens and seconds are the methods' own (rewrites, relevance verdicts, follow-up "
                   "questions, generated passages), on top of answering; generated passages never count as evidence")
    for c in cells:
        before, in_prompt = c.value("evidence_before_filter"), c.value("retrieval_evidence_in_prompt")
        evidence = "-" if math.isnan(before[0]) else f"{fmt(before[0])} -> {fmt(in_prompt[0])}"
        t.rows.append([c.arm, c.model, c.label, fmt(c.value("queries_per_item")[0], 1),
                       fmt(c.value("method_calls")[0], 1), fmt(c.value("method_tokens")[0], 0),
                       fmt_seconds(c.value("method_seconds")[0]), fmt_ci(*c.value("filter_kept")), evidence,
                       fmt(c.value("generated_passages")[0], 1)])
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
    extra = [t for t in (retrieval_table(report), methods_table(report), strata_table(report), parsing_table(report),
                         judges_table(report.study.cells)) if t is not None]
    return [*quality_tables(report), *delta_tables(report, headline_only), *factorial_tables(report.factorials),
            *protocol_tables(report), *extra, *study_arena_tables(report.study), *clue_tables(report.study.cells),
            cost_table(report)]


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
    "(correctness, per-example F1) and no delta interval is given. "
    "A study whose arms form the RAG x fine-tune 2x2 (base, rag, lora, lora_rag on one retriever and one "
    "adapter) gets the main effects of retrieval and of fine-tuning and their interaction, each the mean of "
    "per-item contrasts (e.g. interaction = (lora_rag - lora) - (rag - base)) over the items all four cells "
    "scored, with a paired bootstrap interval and a two-sided sign-flip permutation test (exact up to 16 "
    "non-zero contrasts, else 10,000 seeded flips); an adapter seen only with retrieval (raft) is compared "
    "with rag and lora_rag. Holm's adjustment (statsmodels' multipletests) runs over every headline test: "
    "the deltas, the factorial effects and each best-cell test. "
    "A task's headline metric is the first metric its config lists that the study measured (for a "
    "log-likelihood-only cell, that metric's log-likelihood accuracy: per-character normalised for option "
    "texts, plain for letters), unless `biorag report --metric` chose another. The chance line of a figure "
    "is the accuracy of a uniform guess, the mean of 1/n over the items' n options."
)


def markdown(report: Report, images: Sequence[str]) -> str:
    lines = [f"# biorag report: {report.study.experiment}", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in _header(report)]
    lines.append("")
    for img in images:
        lines += [f"![{img}]({img})", ""]
    for t in all_tables(report):
        lines += [markdown_table(t), ""]
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


def render_files(report: Report, dpi: int = DPI, latex: bool = False) -> dict[str, bytes]:
    """Every file of the report folder, drawn in memory: figures (PNG, SVG, PDF), CSVs,
    Markdown, HTML, and with `latex` the booktabs tables."""
    out: dict[str, bytes] = {}
    descriptions = {c.label: c.task_info.description for c in report.study.cells}
    for figure in (bar_chart(report, dpi, FORMATS), delta_plot(report, dpi, FORMATS),
                   interaction_plot(report.factorials, report.chance, descriptions, dpi, FORMATS)):
        out.update(figure or {})
    out["results.csv"] = _csv([asdict(r) for r in report.rows])
    out["deltas.csv"] = _csv([asdict(d) for d in report.deltas])
    out["costs.csv"] = _csv(report.costs)
    effects = [e for f in report.factorials for e in f.effects]
    for name, items in (("strata", report.strata), ("protocols", report.protocol_deltas), ("factorial", effects)):
        if items:
            out[f"{name}.csv"] = _csv([asdict(x) for x in items])
    if latex:
        out.update({name: text.encode() for name, text in latex_files(report).items()})
    pngs = [f"{stem}.png" for stem in (BARS, DELTAS, FACTORIAL) if f"{stem}.png" in out]
    out["report.md"] = markdown(report, pngs).encode()
    out["report.html"] = html_page(report, {n: out[n] for n in pngs}).encode()
    return out


def write_report(report: Report, folder: Path, dpi: int = DPI, latex: bool = False) -> dict[str, Path]:
    """Write the report folder; each file appears complete or not at all, and the folder only
    once every file is drawn (a report that fails leaves no folder behind). `folder` must be
    new, empty or an earlier biorag report: a user's folder is not written into."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "report.md").is_file())):
        raise BioragError(f"refusing to write the report into {folder}: it is not empty and not a "
                          "biorag report folder; choose another --out")
    files = render_files(report, dpi, latex)
    folder.mkdir(parents=True, exist_ok=True)
    return {_key(name): write_bytes(folder / name, data) for name, data in files.items()}


_KEYS = {f"{BARS}.png": "bars", f"{DELTAS}.png": "deltas_plot", f"{FACTORIAL}.png": "factorial_plot",
         "report.md": "markdown", "report.html": "html"}


def _key(name: str) -> str:
    """A file's key in `write_report`'s answer: `bars` (its PNG), `bars_svg`, `results_csv`, ..."""
    return _KEYS.get(name) or name.replace(".", "_")


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue().encode()
