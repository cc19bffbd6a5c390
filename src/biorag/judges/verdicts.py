"""Asking a judge model a closed question and reading its verdict.

By log-likelihood (`verdict: loglikelihood`): every allowed verdict token ("yes"/"no", "1".."5",
"A"/"B") is scored as the continuation of the prompt, the scores are normalised over the
allowed tokens, and the verdict is the probability-weighted one (G-Eval): P(yes) for a binary
question, the expected point for a scale, P(A) for a pair. It goes through the judge's own
batched `loglikelihood`, the path that equals lm-evaluation-harness; nothing is parsed.

By generation (`verdict: generate`): the judge writes a short answer and the first verdict word
in it is read; an answer with none is unparsed, kept as NaN (never as a default) and counted.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from biorag.models.base import Generator

BINARY, SCALE, PAIR = "binary", "scale", "pair"


@dataclass(frozen=True)
class Verdict:
    """One judgement: a judge's verdict on one question about one item."""

    judge: str
    item: str  # the example id
    key: str  # what was judged: a criterion, a scale axis, a claim, a pair of arms
    value: float  # 1/0 (binary), 1-5 (scale), 1 = first shown is better (pair); NaN: unparsed
    prob: float | None = None  # P(yes) / P(A) under log-likelihood verdicts; None when generated


@dataclass(frozen=True)
class Reading:
    """What one question to a judge gave, with its cost."""

    value: float
    prob: float | None
    tokens_in: int
    tokens_out: int
    requests: int
    seconds: float
    raw: str = ""  # a generated verdict as written


def choices(kind: str) -> tuple[str, ...]:
    from biorag.judges.prompts import AB, SCALE_POINTS, YES_NO

    return {BINARY: YES_NO, SCALE: SCALE_POINTS, PAIR: AB}[kind]


def render(judge: Generator, text: str, system: str = "") -> str:
    """A judge prompt as the judge reads it: its chat template when it has one."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return judge.render_chat(messages)


def _continuation(prompt: str, token: str) -> str:
    # after a chat template's assistant header (ends in a newline) the verdict starts the turn;
    # after plain text it is a new word
    return token if not prompt or prompt[-1].isspace() else " " + token


def by_loglikelihood(judge: Generator, prompts: Sequence[str], kind: str) -> list[Reading]:
    """Readings of rendered prompts from the verdict tokens' log-likelihoods."""
    if not prompts:
        return []
    tokens = choices(kind)
    started = time.perf_counter()
    results = judge.loglikelihood([(p, _continuation(p, t)) for p in prompts for t in tokens])
    per = (time.perf_counter() - started) / len(prompts)
    out = []
    for i, prompt in enumerate(prompts):
        lps = [r.logprob for r in results[i * len(tokens):(i + 1) * len(tokens)]]
        top = max(lps)
        weights = [math.exp(lp - top) for lp in lps]
        probs = [w / sum(weights) for w in weights]
        if kind == SCALE:
            value, prob = sum(p * (k + 1) for k, p in enumerate(probs)), None
        else:  # yes / A first
            prob = probs[0]
            value = 1.0 if prob > 0.5 else 0.0
        out.append(Reading(value, prob, judge.count_tokens(prompt), 1, len(tokens), per))
    return out


_WORD = re.compile(r"[A-Za-z0-9]+")


def parse_verdict(text: str, kind: str) -> float:
    """The first verdict word of a generated answer: yes/no -> 1/0, a point 1-5, A/B -> 1/0;
    NaN when it has none (or names both of a pair first)."""
    for word in _WORD.findall(text):
        w = word.lower()
        if kind == BINARY and w in ("yes", "no"):
            return 1.0 if w == "yes" else 0.0
        if kind == SCALE and w in ("1", "2", "3", "4", "5"):
            return float(w)
        if kind == PAIR and word in ("A", "B"):
            return 1.0 if word == "A" else 0.0
    return math.nan


def by_generation(judge: Generator, prompts: Sequence[str], kind: str, max_new_tokens: int) -> list[Reading]:
    """Readings of rendered prompts from short greedy answers, parsed."""
    if not prompts:
        return []
    started = time.perf_counter()
    outputs = judge.generate(list(prompts), max_new_tokens=max_new_tokens)
    per = (time.perf_counter() - started) / len(prompts)
    return [Reading(parse_verdict(o, kind), None, judge.count_tokens(p), judge.count_tokens(o) if o else 0, 1, per, o)
            for p, o in zip(prompts, outputs, strict=True)]


def ask(judge: Generator, prompts: Sequence[str], kind: str, verdict: str, max_new_tokens: int = 16) -> list[Reading]:
    if verdict == "loglikelihood":
        return by_loglikelihood(judge, prompts, kind)
    return by_generation(judge, prompts, kind, max_new_tokens)
