"""Pairwise judgement between arms: for one item, two arms' answers shown to a judge in both
orders. The arm preferred in both orders wins; when the orders disagree (a judge that prefers
whatever it sees first) the pair is a tie; an unreadable verdict leaves the pair out, counted.
Readings are cached as every other judgement is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from biorag.judges.config import JudgeConfig
from biorag.judges.run import JudgementCache, _key, ask_cached
from biorag.judges.verdicts import PAIR, render
from biorag.models.base import Generator

TIE = "tie"
_ENV = SandboxedEnvironment(undefined=StrictUndefined)


@dataclass(frozen=True)
class Pair:
    """Two arms' answers to one item."""

    item: str
    arm_a: str
    arm_b: str
    question: str
    answer_a: str
    answer_b: str


@dataclass(frozen=True)
class Outcome:
    item: str
    arm_a: str
    arm_b: str
    winner: str | None  # arm_a | arm_b | "tie"; None: a verdict could not be read
    first: float  # P(A) (or 1/0) with arm_a shown first
    second: float  # ... with arm_b shown first


def judge_pairs(judge: JudgeConfig, generator: Generator, pairs: Sequence[Pair], cache: JudgementCache,
                identity: str, batch_size: int = 16) -> list[Outcome]:
    """Each pair judged in both orders (cached readings reused)."""
    tpl = _ENV.from_string(judge.template("pairwise"))
    prompts = []
    for p in pairs:
        for a, b in ((p.answer_a, p.answer_b), (p.answer_b, p.answer_a)):
            text = tpl.render(question=p.question, answer_a=a, answer_b=b)
            prompt = render(generator, text, judge.system)
            prompts.append((prompt, _key(identity, PAIR, prompt)))
    with cache.lock():
        done = cache.load()
        ask_cached(generator, prompts, PAIR, judge.verdict, cache, done, max_new_tokens=judge.max_new_tokens,
                   batch_size=batch_size)
    out = []
    for i, p in enumerate(pairs):
        first, second = (math.nan if done[k]["value"] is None else float(done[k]["value"])
                         for _, k in prompts[2 * i:2 * i + 2])
        if math.isnan(first) or math.isnan(second):
            winner = None
        elif first >= 0.5 and second < 0.5:
            winner = p.arm_a  # preferred when shown first and when shown second
        elif first < 0.5 and second >= 0.5:
            winner = p.arm_b
        else:
            winner = TIE
        out.append(Outcome(p.item, p.arm_a, p.arm_b, winner, first, second))
    return out
