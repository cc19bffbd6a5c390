"""HealthBench (Arora et al. 2025, openai/simple-evals): conversations graded by physician-written
rubrics. One JSON object a line, as OpenAI publishes it:

    {"prompt": [{"role": "user", "content": "..."}, ...],
     "rubrics": [{"criterion": "Advises ...", "points": 7, "tags": ["level:example", "axis:accuracy"]},
                 {"criterion": "Fails to ...", "points": -5, "tags": [...]}],
     "example_tags": ["theme:emergency_referrals", "physician_agreed_category:..."],
     "prompt_id": "...",
     "ideal_completions_data": {"ideal_completion": "...", "ideal_completions_group": "Group 1",
                                "ideal_completions_ref_completions": [...]} | null}

An item's input is the conversation as text ("role: content" turns; the last is the user's),
its gold the physician's ideal completion where there is one (else empty), and its metadata
the rubric (`rubrics`: criterion, points as a float, tags), the `tags` and the
`conversation` (the messages), which the rubric judge reads. HealthBench Hard and Consensus
are files of their own; `task.subset=TAG` keeps the items with that example tag
(`theme:emergency_referrals`, ...). A rubric without points, or with a point value that is
not a number, is a bad row named by file, line and field; so is a rubric with no positive
points (its score, points met over positive points, would be undefined).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from biorag.tasks.config import TaskConfig
from biorag.tasks.records import (
    Problem,
    RowError,
    build,
    example_id,
    get,
    iter_records,
    resolve_fields,
    source_label,
)
from biorag.types import Example

HEALTHBENCH_FIELDS = {
    "id": "prompt_id",
    "prompt": "prompt",
    "rubrics": "rubrics",
    "tags": "example_tags",
    "ideal": "ideal_completions_data",
}


def load_healthbench(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """HealthBench JSONL (or a rubric file of one's own in its format) as free-text items."""
    f = resolve_fields(cfg, HEALTHBENCH_FIELDS, ("prompt", "rubrics"))

    def records() -> Iterator[tuple[int | None, dict | Problem]]:
        # `subset` names an example tag, not a hub config: read the whole source, then keep
        for row, rec in iter_records(cfg, subsets=[None]):
            if cfg.subset and isinstance(rec, dict) and f["tags"]:
                tags = rec.get(f["tags"])
                if not isinstance(tags, list) or cfg.subset not in tags:
                    continue
            yield row, rec

    def convert(rec: dict, row: int | None) -> Example:
        messages = _messages(get(rec, f["prompt"]), f["prompt"])
        rubrics = _rubrics(get(rec, f["rubrics"]), f["rubrics"])
        tags = _tags(rec.get(f["tags"]) if f["tags"] else None, f["tags"] or "example_tags")
        gold = _ideal(rec.get(f["ideal"]) if f["ideal"] else None, f["ideal"] or "")
        return Example(
            id=example_id(cfg, rec, f["id"], row),
            task=cfg.name,
            input=conversation_text(messages),
            gold=gold,
            query=messages[-1]["content"],  # a rag arm searches with the last user turn
            metadata={"rubrics": rubrics, "tags": tags, "conversation": messages,
                      "turns": len(messages)},
            source=f"{source_label(cfg)}:{row}",
        )

    return build(cfg, convert, problems, records=records(), id_field=f["id"])


def conversation_text(messages: list[dict[str, str]]) -> str:
    """The conversation as text: a single user turn as it is; several as "role: content"
    turns a blank line apart, the user's last."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError("expected a non-empty list of messages {role, content}", field=name)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise RowError("expected a message {role, content}", field=f"{name}[{i}]")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant", "developer"):
            raise RowError(f"role {role!r} is not system, user or assistant", field=f"{name}[{i}].role")
        if not isinstance(content, str) or not content.strip():
            raise RowError("missing or empty message text", field=f"{name}[{i}].content")
        out.append({"role": str(role), "content": content.strip()})
    if out[-1]["role"] != "user":
        raise RowError(f"the last message is the {out[-1]['role']}'s; the model answers a user turn",
                       field=f"{name}[{len(out) - 1}].role")
    return out


def _rubrics(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise RowError("expected a non-empty list of rubric items {criterion, points, tags}", field=name)
    out = []
    for i, r in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(r, dict):
            raise RowError("expected a rubric item {criterion, points, tags}", field=where)
        criterion = r.get("criterion")
        if not isinstance(criterion, str) or not criterion.strip():
            raise RowError("missing or empty criterion", field=f"{where}.criterion")
        if "points" not in r or r["points"] is None:
            raise RowError("no points: every criterion needs a point value (negative for an "
                           "undesirable one)", field=f"{where}.points")
        points = r["points"]
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
            raise RowError(f"point value {points!r} is not a number", field=f"{where}.points")
        tags = r.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RowError("expected a list of tag strings", field=f"{where}.tags")
        out.append({"criterion": criterion.strip(), "points": float(points), "tags": list(tags)})
    if not any(r["points"] > 0 for r in out):
        raise RowError("no criterion with positive points: the score (points met / positive "
                       "points) is undefined", field=f"{name}")
    return out


def _tags(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise RowError("expected a list of tag strings", field=name)
    return list(value)


def _ideal(value: Any, name: str) -> str:
    """The physician's ideal completion, or "" when the item has none."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise RowError("expected an object with ideal_completion, or null", field=name)
    ideal = value.get("ideal_completion")
    if ideal is None:
        return ""
    if not isinstance(ideal, str):
        raise RowError("expected text", field=f"{name}.ideal_completion")
    return ideal.strip()
