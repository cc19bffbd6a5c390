"""Meta-evaluation: a judge's verdicts on answers that humans labelled, against those labels.

Each label is one question to the judge (a criterion met or not, or an axis rated 1-5), asked
through the same prompts, verdict reading and cache as in a study, so the agreement measured
here is the agreement of the judge as it grades runs. The result is kept
(`biorag.judges.checks`) and shown beside every metric the judge gives.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biorag.judges.agreement import meta_eval
from biorag.judges.config import JudgeConfig
from biorag.judges.labels import HumanLabel
from biorag.judges.methods import Answer, Criterion
from biorag.judges.run import JudgementCache, judge_answers
from biorag.models.base import Generator

NO_REFERENCE = "(no reference answer was given)"


def judge_labels(judge: JudgeConfig, generator: Generator, labels: Sequence[HumanLabel], cache: JudgementCache,
                 identity: str, *, max_length: int | None = None, batch_size: int = 16) -> tuple[list[float], dict[str, float]]:
    """The judge's value for each label (NaN: unparsed), in label order, and the judge's cost."""
    values = [math.nan] * len(labels)
    cost: dict[str, float] = {}
    binary = [(i, lab) for i, lab in enumerate(labels) if lab.kind == "binary"]
    if binary:
        answers = [Answer(str(i), lab.prompt, lab.answer, rubric=(Criterion(lab.key, 1.0),)) for i, lab in binary]
        got = judge_answers(judge, generator, answers, ["rubric"], cache, identity, max_length=max_length,
                            batch_size=batch_size)
        for i, _ in binary:
            values[i] = got.items[str(i)].get("rubric_score", math.nan)
        cost = _add(cost, got.cost)
    for axis in sorted({lab.key for lab in labels if lab.kind == "scale"}):
        mine = [(i, lab) for i, lab in enumerate(labels) if lab.kind == "scale" and lab.key == axis]
        answers = [Answer(str(i), lab.prompt, lab.answer, reference=NO_REFERENCE) for i, lab in mine]
        got = judge_answers(dataclasses.replace(judge, scale_axes=[axis]), generator, answers, ["scale"], cache,
                            identity, max_length=max_length, batch_size=batch_size)
        for i, _ in mine:
            values[i] = got.items[str(i)].get(f"scale_{axis}", math.nan)
        cost = _add(cost, got.cost)
    return values, cost


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in {*a, *b}}


def check(judge: JudgeConfig, labels: Sequence[HumanLabel], values: Sequence[float], path: Path,
          cost: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """The judge's agreement with the labels, by kind, as a check record (JSON-ready)."""
    out: dict[str, Any] = {"judge": judge.name, "model": judge.model, "verdict": judge.verdict,
                           "labels": str(path), "labels_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                           "date": datetime.date.today().isoformat(), "agreement": {}, "cost": cost}
    n = missing = 0
    for kind in ("binary", "scale"):
        idx = [i for i, lab in enumerate(labels) if lab.kind == kind]
        if not idx:
            continue
        got = meta_eval([values[i] for i in idx], [labels[i].value for i in idx], kind=kind, seed=seed)
        prefix = "" if kind == "binary" else "scale_"
        for name, m in got.items():
            if hasattr(m, "value"):
                out["agreement"][prefix + name] = [m.value, m.lo, m.hi]
        n += int(got.get("n", 0))
        missing += int(got.get("n_missing", 0))
    out["n"], out["n_unparsed"] = n, missing
    return out
