"""LaTeX tables of a report for a paper (`biorag report --latex`): booktabs tables of the
results, the headline deltas and the RAG x fine-tune factorial, with display names.

Each file holds `table` environments ready to `\\input`; the preamble needs
`\\usepackage{booktabs}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from biorag.report.labels import arm_key, metric_name, task_name
from biorag.report.tables import fmt_ci, fmt_p

if TYPE_CHECKING:
    from biorag.report.compare import Report

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"$<$", ">": r"$>$"}
HEADER = "% biorag report tables; needs \\usepackage{booktabs}\n"


def escape(text: str) -> str:
    """Text as LaTeX typesets it literally (an arrow `->` as $\\to$)."""
    return r"$\to$".join("".join(_SPECIAL.get(ch, ch) for ch in part) for part in str(text).split("->"))


def tabular(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str, label: str,
            left: int = 1) -> str:
    """One booktabs table: the first `left` columns left-aligned, the rest right-aligned."""
    spec = "l" * left + "r" * (len(headers) - left)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(escape(h) for h in headers) + r" \\",
             r"\midrule"]
    lines += [" & ".join(escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


def results_tex(report: Report) -> str:
    """Per task: model x arm, every answer metric with its 95% interval, the headline first."""
    out = [HEADER]
    described = {c.label: c.task_info.description for c in report.study.cells}
    for task, head in report.headline.items():
        rows = [r for r in report.rows if r.task == task]
        metrics = sorted(dict.fromkeys(r.metric for r in rows), key=lambda m: m != head)
        cells = sorted(dict.fromkeys((r.model, r.arm, r.n) for r in rows), key=lambda k: (k[0], arm_key(k[1])))
        values = {(r.model, r.arm, r.metric): r for r in rows}
        body = [[model, arm, str(n), *(fmt_ci(v.value, v.lo, v.hi) if (v := values.get((model, arm, m))) else "--"
                                       for m in metrics)] for model, arm, n in cells]
        caption = (f"{task_name(task, described.get(task, ''))}. Headline: {metric_name(head)}; "
                   "95% bootstrap intervals over items.")
        out.append(tabular(["Model", "Arm", "n", *(metric_name(m) for m in metrics)], body, caption,
                           f"tab:results-{_slug(task)}", left=2))
    return "\n".join(out)


def deltas_tex(report: Report) -> str:
    """The headline deltas: each arm against the baseline arm, each biomedical model against
    its general counterpart, with paired tests and Holm-adjusted p."""
    deltas = sorted((d for d in report.deltas if d.headline),
                    key=lambda d: (d.kind, d.task, d.model, arm_key(d.arm)))
    body = [[d.task, f"{d.treatment} vs {d.reference}", metric_name(d.metric),
             fmt_ci(d.delta, d.lo, d.hi, sign=True), d.test, fmt_p(d.p), fmt_p(d.p_holm), str(d.n)] for d in deltas]
    caption = (f"Paired differences in the headline metric against the baseline arm '{report.study.baseline}' "
               "and between biomedical and general models; 95% paired-bootstrap intervals; "
               "Holm-adjusted over the report's headline tests.")
    return HEADER + tabular(["Task", "Comparison", "Metric", "Difference [95% CI]", "Test", "p", "p (Holm)", "n"],
                            body, caption, "tab:deltas", left=3)


def factorial_tex(report: Report) -> str | None:
    """The RAG x fine-tune effects; None when the study holds no factorial."""
    effects = [e for f in report.factorials for e in f.effects]
    if not effects:
        return None
    body = [[e.model, e.task, e.effect, e.contrast, fmt_ci(e.value, e.lo, e.hi, sign=True), fmt_p(e.p),
             fmt_p(e.p_holm), str(e.n)] for e in effects]
    metrics = ", ".join(dict.fromkeys(metric_name(e.metric) for e in effects))
    caption = (f"RAG x fine-tune factorial on the headline metric ({metrics}): mean per-item contrasts with "
               "95% paired-bootstrap intervals, two-sided sign-flip tests, Holm-adjusted.")
    return HEADER + tabular(["Model", "Task", "Effect", "Contrast", "Estimate [95% CI]", "p", "p (Holm)", "n"],
                            body, caption, "tab:factorial", left=4)


def latex_files(report: Report) -> dict[str, str]:
    """File name -> text of every LaTeX table the report has."""
    out = {"results.tex": results_tex(report)}
    if any(d.headline for d in report.deltas):
        out["deltas.tex"] = deltas_tex(report)
    if (f := factorial_tex(report)) is not None:
        out["factorial.tex"] = f
    return out
