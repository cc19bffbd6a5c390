"""Judging one cell's answers with one judge, and a jury's verdict from several.

Every question's reading is cached (`JudgementCache`, an append-only record log like the
prediction cache, so a kill loses at most the batch in flight) under a key made of the judge's
identity (its model config and verdict reading), the question kind and the prompt as the judge
reads it (template version, item, answer, criterion, passages): a re-run, a new arm with the
same answers or a study judged again asks the judge nothing it has answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biorag.atomic import RecordLog
from biorag.errors import BioragError
from biorag.judges.config import JudgeConfig
from biorag.judges.methods import UNPARSED, Answer, Question, questions, score_item
from biorag.judges.verdicts import BINARY, Reading, Verdict, ask, render
from biorag.models.base import Generator
from biorag.scoring.metrics import N_RESAMPLES, MetricResult, aggregate

log = logging.getLogger(__name__)

# a judge's cost in a cell, as `<task>/<key>` (summed over its questions, cached ones included)
COST_KEYS = ("judge_tokens_in", "judge_tokens_out", "judge_seconds", "judge_requests", "judge_questions")


class JudgeError(BioragError):
    """A judge cannot judge as configured (its context is too short for a prompt, ...)."""


class JudgementCache(RecordLog):
    what = "judgement cache"


def judge_identity(judge: JudgeConfig, model: Mapping[str, object]) -> str:
    """What makes two judges' readings the same: the model config (minus how it is run) and the
    way verdicts are read. Templates enter through the prompts themselves."""
    keep = {k: v for k, v in model.items() if k not in ("batch_size", "device", "description")}
    payload = json.dumps({"model": keep, "verdict": judge.verdict, "max_new_tokens": judge.max_new_tokens},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_file(root: Path, judge: JudgeConfig, identity: str) -> Path:
    return root / "judgements" / f"{judge.name}-{identity}.jsonl"


@dataclass
class Judged:
    """One judge's judgement of one cell: its verdicts, each item's scores and the cost."""

    judge: str
    verdicts: list[Verdict] = field(default_factory=list)
    items: dict[str, dict[str, float]] = field(default_factory=dict)  # item -> metric key -> value
    cost: dict[str, float] = field(default_factory=dict)
    reused: int = 0  # readings taken from the cache
    asked: int = 0  # readings asked of the judge now


def _key(identity: str, kind: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([identity, kind, prompt]).encode()).hexdigest()[:32]


def judge_answers(
    judge: JudgeConfig, generator: Generator, answers: Sequence[Answer], methods: Sequence[str],
    cache: JudgementCache, identity: str, *, max_length: int | None = None, batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> Judged:
    """Ask `judge` every question `methods` put to `answers` (cached readings are reused) and
    score each item. A prompt longer than the judge's context is an error before anything is
    asked, naming the item and by how many tokens (no answer is ever cut)."""
    asked: list[tuple[Question, str, str]] = []  # question, rendered prompt, cache key
    for a in answers:
        for m in methods:
            for q in questions(a, m, judge.template(m), judge.scale_axes):
                prompt = render(generator, q.text, judge.system)
                asked.append((q, prompt, _key(identity, q.kind, prompt)))
    if max_length:
        for q, prompt, _ in asked:
            over = generator.count_tokens(prompt) + (judge.max_new_tokens if judge.verdict == "generate" else 1) - max_length
            if over > 0:
                raise JudgeError(
                    f"judge {judge.name}: the {q.method} prompt of item {q.item} is {over} tokens longer than "
                    f"its model reads ({max_length}); answers are never cut: use a judge with a longer context "
                    f"(model.max_length), a shorter template, or fewer passages")
    with cache.lock():
        done = cache.load()
        todo = [(q, p, k) for q, p, k in asked if k not in done]
        out = Judged(judge.name, reused=len(asked) - len(todo), asked=len(todo))
        for kind in sorted({q.kind for q, _, _ in todo}):
            ask_cached(generator, [(p, k) for q, p, k in todo if q.kind == kind], kind, judge.verdict, cache, done,
                       max_new_tokens=judge.max_new_tokens, batch_size=batch_size, on_batch=on_batch)
    cost = dict.fromkeys(COST_KEYS, 0.0)
    by_item: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # item -> [questions, unparsed]
    for q, _, k in asked:
        rec = done[k]
        value = math.nan if rec["value"] is None else float(rec["value"])
        out.verdicts.append(Verdict(judge.name, q.item, f"{q.method}:{q.key}", value, rec.get("prob")))
        by_item[q.item][q.method][q.key] = value
        counts[q.item][0] += 1
        counts[q.item][1] += math.isnan(value)
        for c in COST_KEYS[:-1]:
            cost[c] += float(rec.get(c.removeprefix("judge_"), 0))
        cost["judge_questions"] += 1
    out.cost = cost
    for a in answers:
        scores: dict[str, float] = {}
        for m in methods:
            scores.update(score_item(a, m, by_item[a.item].get(m, {}), judge.scale_axes))
        n, bad = counts[a.item]
        if n:
            scores[UNPARSED] = bad / n
        out.items[a.item] = scores
    return out


def ask_cached(generator: Generator, prompts: Sequence[tuple[str, str]], kind: str, verdict: str,
               cache: RecordLog, done: dict[str, dict[str, object]], *, max_new_tokens: int = 16,
               batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> None:
    """Ask `generator` the (rendered prompt, cache key) pairs not in `done`, in batches, its
    verdicts read by `verdict` (loglikelihood | generate); each batch's readings appended to the
    cache (hold its lock) and to `done` as it finishes. The judges and the RAG methods' relevance
    filter ask through it."""
    todo = list(dict.fromkeys((p, k) for p, k in prompts if k not in done))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        readings = ask(generator, [p for p, _ in chunk], kind, verdict, max_new_tokens)
        records = [_record(k, r) for (_, k), r in zip(chunk, readings, strict=True)]
        cache.append(records)
        done.update({r["id"]: r for r in records})
        if on_batch:
            on_batch(len(chunk))


def _record(key: str, r: Reading) -> dict[str, object]:
    value = None if math.isnan(r.value) else r.value
    return {"id": key, "value": value, "prob": r.prob, "raw": r.raw, "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out, "seconds": r.seconds, "requests": r.requests}


# -- juries ----------------------------------------------------------------------------------


def jury(answers: Sequence[Answer], methods: Sequence[str], judged: Sequence[Judged], scale_axes: Sequence[str]) -> Judged:
    """The jury's judgement: per question, the majority of the judges' binary verdicts (a tie
    is no verdict) or the mean of their scale points, then each item scored from those."""
    units: dict[tuple[str, str], list[float]] = defaultdict(list)
    kinds: dict[tuple[str, str], bool] = {}
    for j in judged:
        for v in j.verdicts:
            units[(v.item, v.key)].append(v.value)
            kinds[(v.item, v.key)] = not v.key.startswith("scale:")
    combined: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    out = Judged("jury")
    for (item, key), values in units.items():
        got = [v for v in values if not math.isnan(v)]
        if not got:
            value = math.nan
        elif kinds[(item, key)]:
            yes = sum(v >= 0.5 for v in got)
            value = math.nan if 2 * yes == len(got) else float(2 * yes > len(got))
        else:
            value = float(np.mean(got))
        method, _, text = key.partition(":")
        combined[item][method][text] = value
        out.verdicts.append(Verdict("jury", item, key, value))
    for a in answers:
        scores: dict[str, float] = {}
        for m in methods:
            scores.update(score_item(a, m, combined[a.item].get(m, {}), scale_axes))
        out.items[a.item] = scores
    out.cost = {c: sum(j.cost.get(c, 0.0) for j in judged) for c in COST_KEYS}
    return out


def item_metrics(judged: Judged, item_order: Sequence[str], seed: int = 0,
                 n_resamples: int = N_RESAMPLES) -> dict[str, MetricResult]:
    """Each score's mean over the items that have one, with its bootstrap interval; items
    without (unparsed, closed-book) are missing, not zero. A score no item has is NaN."""
    keys = sorted({k for scores in judged.items.values() for k in scores})
    out = {}
    for k in keys:
        values = [judged.items.get(i, {}).get(k, math.nan) for i in item_order]
        finite = [v for v in values if not math.isnan(v)]
        if finite:
            mean, lo, hi = aggregate(finite, seed, n_resamples)
        else:
            mean = lo = hi = math.nan
        out[k] = MetricResult(k, mean, lo, hi, len(finite), tuple(values))
    return out


def binary_table(judged: Sequence[Judged]) -> dict[str, dict[str, float]]:
    """{judge: {unit: value}} of every judge's verdicts (the jury agreement's input)."""
    return {j.judge: {f"{v.item}\x00{v.key}": v.value for v in j.verdicts} for j in judged}


__all__ = [
    "BINARY",
    "COST_KEYS",
    "JudgeError",
    "Judged",
    "JudgementCache",
    "ask_cached",
    "binary_table",
    "cache_file",
    "item_metrics",
    "judge_answers",
    "judge_identity",
    "jury",
]
