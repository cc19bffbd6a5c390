"""The three ways to judge an answer, as questions to a judge and as item scores.

- rubric (HealthBench): per criterion, met or not; an item's score is the points of the met
  criteria over its positive points, clipped to [0, 1] (negative criteria subtract), with the
  same score over the criteria of each rubric tag (`axis:accuracy` -> `rubric_axis_accuracy`)
  and over the items of each example tag (`theme:hedging` -> `rubric_theme_hedging`);
- scale (MedHELM): each axis (accuracy, completeness, clarity) rated 1-5 against the reference;
- support (RAG faithfulness): the answer split into claims (sentences), each judged supported
  or not by the passages that were in its prompt: `claims_supported` (the share) and
  `answer_supported` (every claim supported). Closed-book cells get NaN under the same names.

A question left unparsed leaves the item's score of that method NaN: missing, never a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from biorag.errors import InputError
from biorag.judges.prompts import AXIS_HELP
from biorag.judges.verdicts import BINARY, SCALE

RUBRIC_SCORE, CLAIMS_SUPPORTED, ANSWER_SUPPORTED = "rubric_score", "claims_supported", "answer_supported"
SUPPORT_KEYS = (ANSWER_SUPPORTED, CLAIMS_SUPPORTED)
UNPARSED = "judge_unparsed_rate"


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion (HealthBench's rubric item)."""

    text: str
    points: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What a judge sees of one item of a cell."""

    item: str
    question: str  # the item's input (a conversation as text)
    answer: str  # what the model answered (a chosen option as "The answer is ...")
    reference: str = ""  # the gold or ideal answer, when the task has a text one
    passages: tuple[str, ...] | None = None  # what was in the prompt; None: closed-book
    claims_from_output: bool = True  # False: the answer is a chosen option, one claim
    rubric: tuple[Criterion, ...] = ()
    tags: tuple[str, ...] = ()  # the item's own tags (HealthBench example_tags)


@dataclass(frozen=True)
class Question:
    """One closed question to a judge about one answer."""

    method: str
    item: str
    key: str  # criterion text, axis name, claim
    kind: str  # binary | scale
    text: str  # the prompt, before the judge's chat template


@dataclass
class ItemScores:
    """An item's scores by metric key (NaN: missing) and how many questions went unparsed."""

    values: dict[str, float] = field(default_factory=dict)
    questions: int = 0
    unparsed: int = 0


_ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def chosen_answer(parsed: Any, options: Sequence[str]) -> str:
    """A chosen answer as one claim a judge can read: a letter as its option's text ("The
    answer is Ataxia."); "" when nothing was chosen."""
    from biorag.types import answer_text

    if isinstance(parsed, str) and options and len(parsed) == 1 and parsed.isalpha():
        idx = ord(parsed.upper()) - ord("A")
        parsed = options[idx] if 0 <= idx < len(options) else parsed
    return f"The answer is {answer_text(parsed)}." if parsed else ""


def claims(text: str) -> list[str]:
    """An answer's claims: its sentences (lines and sentence ends), each with a letter in it."""
    parts = [s.strip() for line in text.splitlines() for s in _SENTENCE.split(line)]
    return [s for s in parts if re.search(r"[A-Za-z]", s)]


def read_rubric(value: Any, where: str) -> tuple[Criterion, ...]:
    """An item's rubric from its metadata (HealthBench's `rubrics`); InputError names the field."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InputError("rubrics must be a list of {criterion, points, tags}", file=where, field="rubrics")
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, Mapping) or not isinstance(c.get("criterion"), str) or not c["criterion"].strip():
            raise InputError("each rubric item needs a criterion text", file=where, field=f"rubrics[{i}].criterion")
        points = c.get("points")
        if isinstance(points, bool) or not isinstance(points, int | float) or not math.isfinite(points):
            raise InputError(f"points must be a number, not {points!r}", file=where, field=f"rubrics[{i}].points")
        out.append(Criterion(c["criterion"], float(points), tuple(str(t) for t in c.get("tags") or ())))
    return tuple(out)


def questions(answer: Answer, method: str, template: str, scale_axes: Sequence[str]) -> list[Question]:
    """The questions a method asks of one answer (none where it does not apply)."""
    tpl = _ENV.from_string(template)
    if method == "rubric":
        return [Question(method, answer.item, c.text, BINARY,
                         tpl.render(conversation=answer.question, answer=answer.answer, criterion=c.text))
                for c in answer.rubric]
    if method == "scale":
        if not answer.reference:
            return []
        return [Question(method, answer.item, axis, SCALE,
                         tpl.render(question=answer.question, reference=answer.reference, answer=answer.answer,
                                    axis=axis, axis_help=AXIS_HELP.get(axis, axis)))
                for axis in scale_axes]
    if method == "support":
        if answer.passages is None:
            return []
        passages = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(answer.passages))
        said = claims(answer.answer) if answer.claims_from_output else [answer.answer]
        return [Question(method, answer.item, c, BINARY, tpl.render(passages=passages, claim=c)) for c in said]
    raise ValueError(method)


def tag_key(prefix: str, tag: str) -> str:
    """A metric key for a tag: `axis:accuracy` -> `rubric_axis_accuracy`."""
    return f"{prefix}_" + re.sub(r"[^A-Za-z0-9]+", "_", tag).strip("_").lower()


def rubric_points(rubric: Sequence[Criterion], met: Mapping[str, float]) -> float:
    """HealthBench's score of one item: points met over positive points, clipped to [0, 1];
    NaN when a criterion has no verdict or no criterion has positive points."""
    positive = sum(c.points for c in rubric if c.points > 0)
    if positive <= 0 or any(math.isnan(met.get(c.text, math.nan)) for c in rubric):
        return math.nan
    got = sum(c.points for c in rubric if met[c.text] >= 0.5)
    return min(1.0, max(0.0, got / positive))


def score_item(answer: Answer, method: str, verdicts: Mapping[str, float], scale_axes: Sequence[str]) -> dict[str, float]:
    """An item's scores under one method from its verdicts {question key: value}."""
    nan = math.nan
    if method == "rubric":
        if not answer.rubric:
            return {}
        out = {RUBRIC_SCORE: rubric_points(answer.rubric, verdicts)}
        for tag in sorted({t for c in answer.rubric for t in c.tags}):
            out[tag_key("rubric", tag)] = rubric_points([c for c in answer.rubric if tag in c.tags], verdicts)
        for tag in answer.tags:
            out[tag_key("rubric", tag)] = out[RUBRIC_SCORE]
        return out
    if method == "scale":
        if not answer.reference:
            return {}
        return {f"scale_{axis}": verdicts.get(axis, nan) for axis in scale_axes}
    if method == "support":
        if answer.passages is None:
            return dict.fromkeys(SUPPORT_KEYS, nan)
        said = claims(answer.answer) if answer.claims_from_output else [answer.answer]
        got = [verdicts.get(c, nan) for c in said]
        if not got or any(math.isnan(v) for v in got):
            return dict.fromkeys(SUPPORT_KEYS, nan)
        return {CLAIMS_SUPPORTED: sum(v >= 0.5 for v in got) / len(got),
                ANSWER_SUPPORTED: float(all(v >= 0.5 for v in got))}
    raise ValueError(method)
