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
