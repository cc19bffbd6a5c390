"""A judge's last meta-evaluation against human labels, kept so every run it judges says how
far it can be trusted (`judge.<name>.check`), and a judge never checked says so."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from biorag.atomic import write_json

NEVER = "never checked against human labels (biorag judge check NAME --labels FILE)"


def check_path(root: Path, judge: str) -> Path:
    return Path(root) / "judge-checks" / f"{judge}.json"


def save_check(root: Path, judge: str, result: dict[str, Any]) -> Path:
    path = check_path(root, judge)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return path


def load_check(root: Path, judge: str) -> dict[str, Any] | None:
    path = check_path(root, judge)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 3:
        v, lo, hi = value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
    return str(value)


def summary(result: dict[str, Any]) -> str:
    """One line: the agreement figures, on how many labels, from which file."""
    figures = ", ".join(f"{k} {_fmt(v)}" for k, v in result.get("agreement", {}).items())
    return (f"{figures} on {result.get('n', '?')} labels of {result.get('labels', '?')} "
            f"(sha256 {str(result.get('labels_sha256', ''))[:12]}, {result.get('date', '')})")


def check_tag(judge: str, root: Path) -> str:
    found = load_check(root, judge)
    return summary(found) if found else NEVER
