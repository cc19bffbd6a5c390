"""Human labels that a judge is checked against (`biorag judge check labels=FILE`).

Two formats, told apart by their fields:

- **HealthBench's meta-evaluation JSONL** (`2025-05-07-06-14-12_oss_meta_eval.jsonl` of
  openai/simple-evals), one row per (conversation, completion, rubric criterion):

      {"prompt_id": "...", "completion_id": "...", "prompt": [{"role": "user", "content": "..."}],
       "completion": "...", "rubric": "Advises ...", "category": "cluster_...",
       "binary_labels": [true, false, true], "anonymized_physician_ids": ["...", "...", "..."]}

  The human verdict is the physicians' majority; a row whose physicians split evenly has no
  majority and is left out (counted in the log). The item is `prompt_id`, so the labels
  match a HealthBench task's items.

- **A table of one's own** (CSV, TSV or JSONL): columns `item`, `answer`, `criterion` (or
  `axis`), and `verdict` (met: 1/0, true/false, yes/no, met/not met) or `score` (a number,
  1..5 for a scale); `prompt` optional.

Bad rows are errors naming the file, line and field; every bad row is counted in the message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.errors import InputError
from biorag.tasks.records import Problem, RowError, read_file

log = logging.getLogger(__name__)

LABEL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
KEY_COLUMNS = ("criterion", "axis")
VALUE_COLUMNS = ("verdict", "score")  # binary | scale
_TRUE = {"1", "1.0", "true", "yes", "y", "met", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "not met", "unmet", "f"}
FORMAT_HELP = ("expected HealthBench's meta-eval JSONL (prompt, completion, rubric, binary_labels) "
               "or a table with columns item, answer, criterion|axis, verdict|score")


@dataclass(frozen=True)
class HumanLabel:
    """One human judgement of one answer on one criterion (or scale axis)."""

    item: str  # the task item's id (HealthBench: prompt_id)
    answer: str  # the answer that was judged
    key: str  # the rubric criterion or the scale axis
    value: float  # 1.0 met / 0.0 not met, or the score on a scale
    source: str  # "file:line"
    prompt: str = ""  # the conversation as text, when the file gives it
    kind: str = "binary"  # binary | scale
    votes: tuple[float, ...] = field(default=())  # each rater's verdict (HealthBench's physicians)
    group: str = ""  # HealthBench's rubric category (cluster), for per-category agreement


def read_labels(path: str | Path) -> list[HumanLabel]:
    """Every label of a label file; a bad row raises an InputError naming its file, line and
    field (with the count of the others)."""
    path_str = str(path)
    suffix = Path(path_str).suffix.lower()
    if suffix not in LABEL_SUFFIXES and suffix != ".json":
        raise InputError(f"unsupported label file type '{suffix}'; use one of "
                         f"{', '.join(LABEL_SUFFIXES)}", file=path_str)
    labels: list[HumanLabel] = []
    problems: list[Problem] = []
    ties = 0
    for line, rec in read_file(path_str):
        if isinstance(rec, Problem):
            problems.append(rec)
            continue
        try:
            label = _healthbench(rec, path_str, line) if "binary_labels" in rec else _row(rec, path_str, line)
        except RowError as e:
            problems.append(Problem(path_str, line, e.field, str(e)))
            continue
        if label is None:
            ties += 1
        else:
            labels.append(label)
    if problems:
        raise problems[0].error(more=len(problems) - 1)
    if ties:
        log.warning("%s: %d row(s) whose raters split evenly have no majority verdict and are "
                    "left out", path_str, ties)
    if not labels:
        raise InputError("no labels in the file" + (" (every row was a tie)" if ties else ""),
                         file=path_str)
    kinds = {lab.kind for lab in labels}
    if len(kinds) > 1:
        raise InputError("mixes verdict (binary) and score (scale) rows; keep one kind a file",
                         file=path_str)
    return labels


def _healthbench(rec: dict, path: str, line: int | None) -> HumanLabel | None:
    votes = rec.get("binary_labels")
    if not isinstance(votes, list) or not votes:
        raise RowError("expected a non-empty list of true/false physician verdicts", field="binary_labels")
    if not all(isinstance(v, bool) for v in votes):
        bad = next(v for v in votes if not isinstance(v, bool))
        raise RowError(f"expected true or false, found {bad!r}", field="binary_labels")
    criterion = _text(rec, "rubric")
    completion = _text(rec, "completion")
    item = rec.get("prompt_id") or rec.get("completion_id")
    if not item:
        raise RowError("missing (the item id the labels are matched by)", field="prompt_id")
    prompt = rec.get("prompt", [])
    met = sum(votes)
    if 2 * met == len(votes):
        return None
    return HumanLabel(
        item=str(item), answer=completion, key=criterion, value=float(2 * met > len(votes)),
        source=f"{path}:{line}", prompt=_conversation(prompt, "prompt"), kind="binary",
        votes=tuple(float(v) for v in votes), group=str(rec.get("category") or ""),
    )


def _row(rec: dict, path: str, line: int | None) -> HumanLabel:
    key_col = next((c for c in KEY_COLUMNS if c in rec), None)
    if key_col is None:
        raise RowError(f"missing: a label row needs 'criterion' or 'axis' ({FORMAT_HELP})", field="criterion")
    value_col = next((c for c in VALUE_COLUMNS if c in rec), None)
    if value_col is None:
        raise RowError(f"missing: a label row needs 'verdict' (1/0) or 'score' (a number) ({FORMAT_HELP})",
                       field="verdict")
    raw = rec[value_col]
    value = _verdict(raw) if value_col == "verdict" else _score(raw)
    return HumanLabel(
        item=_text(rec, "item"), answer=_text(rec, "answer"), key=_text(rec, key_col), value=value,
        source=f"{path}:{line}", prompt=str(rec.get("prompt") or "").strip(),
        kind="binary" if value_col == "verdict" else "scale",
    )


def _text(rec: dict, name: str) -> str:
    value = rec.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing or empty", field=name)
    if isinstance(value, (dict, list)):
        raise RowError(f"expected text, found a JSON {type(value).__name__}", field=name)
    return str(value).strip()


def _verdict(raw: Any) -> float:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, (int, float)) and raw in (0, 1):
        return float(raw)
    s = str(raw).strip().lower() if raw is not None else ""
    if s in _TRUE:
        return 1.0
    if s in _FALSE:
        return 0.0
    raise RowError(f"expected a verdict (1/0, true/false, yes/no, met/not met), found {raw!r}",
                   field="verdict")


def _score(raw: Any) -> float:
    if isinstance(raw, bool):
        raise RowError(f"expected a number, found {raw!r}", field="score")
    try:
        value = float(str(raw).strip()) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RowError(f"expected a number, found {raw!r}", field="score")
    return value


def _conversation(messages: Any, field_name: str = "prompt") -> str:
    """A list of chat messages as plain text: "role: content" turns a blank line apart (as
    HealthBench's grader shows a conversation)."""
    if not isinstance(messages, list):
        raise RowError("expected a list of messages {role, content}", field=field_name)
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not m.get("role"):
            raise RowError("expected a message {role, content}", field=f"{field_name}[{i}]")
        turns.append(f"{m['role']}: {m['content'].strip()}")
    return "\n\n".join(turns)


@dataclass(frozen=True)
class LabelMatch:
    """Which labels are about items of a task (by item id)."""

    matched: tuple[HumanLabel, ...]
    unmatched: tuple[HumanLabel, ...]  # labels of items the task does not have
    items_matched: tuple[str, ...]  # the task's item ids that have labels
    items_without_labels: int  # the task's items no label is about


def match_labels(labels: Sequence[HumanLabel], item_ids: Iterable[str]) -> LabelMatch:
    """Split labels into those whose item is among `item_ids` and those that match nothing."""
    ids = set(item_ids)
    matched = tuple(lab for lab in labels if lab.item in ids)
    unmatched = tuple(lab for lab in labels if lab.item not in ids)
    hit = sorted({lab.item for lab in matched})
    return LabelMatch(matched, unmatched, tuple(hit), len(ids) - len(hit))


def require_matches(labels: Sequence[HumanLabel], item_ids: Iterable[str], path: str | Path,
                    task: str = "the task") -> LabelMatch:
    """`match_labels`, raising an InputError naming the label file when no label matches any
    item (with a few ids of each side, so a wrong id column shows)."""
    ids = list(item_ids)
    m = match_labels(labels, ids)
    if not m.matched:
        mine = sorted({lab.item for lab in labels})[:3]
        raise InputError(
            f"none of the {len(labels)} labels is about an item of {task}: label items "
            f"{', '.join(map(repr, mine))}... vs task items {', '.join(map(repr, ids[:3]))}... "
            "(HealthBench labels match by prompt_id)", file=str(path), field="item")
    if m.unmatched:
        log.warning("%s: %d of %d labels are about items %s does not have", path, len(m.unmatched),
                    len(labels), task)
    return m
