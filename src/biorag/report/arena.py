"""The pairwise arena of a study: a judge compares every two arms' answers to the same items
(same model and task) in both orders; win rates with intervals and a Bradley-Terry ranking per
(model, task) are logged to the study's parent run (`arena-<judge>.json`), where `biorag report`
reads them."""

from __future__ import annotations

import itertools
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.judges.agreement import pairwise
from biorag.judges.arena import Pair, judge_pairs
from biorag.judges.config import load_judge_config
from biorag.judges.methods import chosen_answer
from biorag.judges.run import JudgementCache, cache_file, judge_identity
from biorag.report.study import Cell, Study, read_study
from biorag.tracking import keys
from biorag.types import Prediction

log = logging.getLogger(__name__)

ARENA_PREFIX = keys.ARENA_PREFIX  # arena-<judge>.json on the parent run


@dataclass
class ArenaGroup:
    model: str
    task: str  # the task label (medqa@cot)
    arms: list[str]
    outcomes: list[tuple[str, str, str, str | None]]
    stats: dict[str, Any]


def _said(p: Prediction, options: Sequence[str]) -> str:
    return p.output.strip() or chosen_answer(p.parsed, options)


def arena_pairs(cells: Sequence[Cell], arms: Sequence[str] | None = None) -> dict[tuple[str, str], list[Pair]]:
    """For each (model, task), every two arms' answers to their common items."""
    from biorag.report.predictions import _sources

    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        if arms is None or c.arm in arms:
            groups[(c.model, c.label)].append(c)
    out: dict[tuple[str, str], list[Pair]] = {}
    for key, mine in groups.items():
        if len(mine) < 2:
            continue
        examples, _ = _sources(mine[0], [], [])
        pairs = []
        for a, b in itertools.combinations(sorted(mine, key=lambda c: c.arm), 2):
            pa = {p.example_id: p for p in a.predictions}
            pb = {p.example_id: p for p in b.predictions}
            for item in [i for i in pa if i in pb]:
                ex = examples.get(item)
                options = ex.options if ex else ()
                pairs.append(Pair(item, a.arm, b.arm, ex.input if ex else f"(item {item})",
                                  _said(pa[item], options), _said(pb[item], options)))
        out[key] = pairs
    return out


def run_arena(judge_name: str, target: str | None = None, arms: Sequence[str] | None = None,
              loader: Any = None, seed: int = 0) -> tuple[Study, str, list[dict[str, Any]]]:
    """Judge every pair of arms of a study and log the result to its parent run; the groups
    as logged (`biorag.report.judges.arena_tables` shows them)."""
    from biorag.models.loading import load_model_config

    study = read_study(target)
    judge = load_judge_config(judge_name)
    groups = arena_pairs(study.cells, arms)
    if not groups:
        raise BioragError(f"study run {study.parent_run_id} has no two arms on the same model and task"
                          + (f" among {', '.join(arms)}" if arms else ""))
    model_cfg = load_model_config(judge.model)
    if loader is None:
        from biorag.models.loading import load_generator as loader
    generator = loader(model_cfg, None)
    identity = judge_identity(judge, model_cfg.__dict__)
    root = Path(os.environ.get("BIORAG_CACHE_DIR") or ".biorag-cache")
    cache = JudgementCache(cache_file(root, judge, identity))
    results = []
    try:
        for (model, task), pairs in groups.items():
            log.info("arena %s/%s: %d pairs, each in both orders", model, task, len(pairs))
            outcomes = judge_pairs(judge, generator, pairs, cache, identity)
            missing = sum(o.winner is None for o in outcomes)
            if missing:
                log.warning("arena %s/%s: %d pair(s) without a readable verdict in both orders left out",
                            model, task, missing)
            rows = [(o.item, o.arm_a, o.arm_b, o.winner) for o in outcomes]
            stats = pairwise([r for r in rows if r[3] is not None], seed=seed)
            stats["missing"] = missing
            results.append(ArenaGroup(model, task, sorted({p.arm_a for p in pairs} | {p.arm_b for p in pairs}),
                                      rows, stats))
    finally:
        close = getattr(generator, "close", None)
        if close:
            close()
    name = _log(study, judge.name, judge.params(), results)
    return study, name, [group_json(g) for g in results]


def group_json(g: ArenaGroup) -> dict[str, Any]:
    stats = dict(g.stats)
    stats["win_rate"] = {k: [m.value, m.lo, m.hi] for k, m in g.stats.get("win_rate", {}).items()}
    return {"model": g.model, "task": g.task, "arms": g.arms, "stats": stats, "outcomes": g.outcomes}


def _log(study: Study, judge: str, params: dict[str, Any], groups: Sequence[ArenaGroup]) -> str:
    from biorag.tracking.runs import log_json_to_run

    name = f"{ARENA_PREFIX}{judge}.json"
    payload = {"judge": judge, "params": params, "groups": [group_json(g) for g in groups]}
    log_json_to_run(study.parent_run_id, payload, name)
    return name
