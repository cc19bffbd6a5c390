"""The tables a report shows, as plain data: the terminal, Markdown and HTML render them alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Table:
    """A titled table of strings: one model of what the terminal, Markdown and HTML show."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_ci(value: float, lo: float, hi: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    v = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return v if math.isnan(lo) or math.isnan(hi) else f"{v} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_seconds(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


# -- tables as text: what `biorag report --format md|csv|json` prints -------------------------


def markdown_table(t: Table, level: int = 2) -> str:
    """A table as GitHub Markdown under a heading, its note in italics below."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"{'#' * level} {t.title}", "", "| " + " | ".join(cell(h) for h in t.headers) + " |",
             "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines) + "\n"


def csv_table(t: Table) -> str:
    """A table as CSV: a `# title` line, the header row, the rows."""
    import csv
    import io

    buf = io.StringIO()
    buf.write(f"# {t.title}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.headers)
    w.writerows(t.rows)
    return buf.getvalue()


def as_dict(t: Table) -> dict[str, object]:
    """A table as JSON-ready data: title, columns, rows as {column: cell}, note."""
    return {"title": t.title, "columns": list(t.headers),
            "rows": [dict(zip(t.headers, row, strict=True)) for row in t.rows], "note": t.note}


def tables_as(tables: list[Table], fmt_name: str) -> str:
    """Tables as one text in a format: `md` (sections), `csv` (blocks separated by a blank
    line, each starting with a `# title` line) or `json` (a list of tables)."""
    import json

    if fmt_name == "md":
        return "\n".join(markdown_table(t) for t in tables)
    if fmt_name == "csv":
        return "\n".join(csv_table(t) for t in tables)
    if fmt_name == "json":
        return json.dumps([as_dict(t) for t in tables], indent=1, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown table format {fmt_name!r}: md, csv or json")
