"""Evaluation tasks: YAML configs under `experiments/task/`, loaders and embedded generators.

cfg = load_task_config("medqa", ["task.path=data/medqa/test.jsonl"])
examples = load_examples(cfg)
"""

from __future__ import annotations

import dataclasses
import logging
import random

from biorag.errors import ConfigError
from biorag.tasks.config import EMBEDDED_LOADERS, TaskConfig, load_task_config, task_names
from biorag.tasks.records import Problem
from biorag.types import Example

log = logging.getLogger(__name__)
_WARNED: set[tuple] = set()  # shot draws already warned about (a run loads its items twice)

__all__ = ["Problem", "TaskConfig", "load_examples", "load_task_config", "task_names"]


def load_examples(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """The task's examples. File tasks with `n` keep a seeded sample of n, in file order.

    Bad rows raise an InputError naming file, row and field (the first of them, with a
    count of the rest); pass a `problems` list to collect them all instead.
    """
    from biorag import registry

    examples = registry.resolve("task_loader", cfg.loader)(cfg, problems)
    if cfg.shots and examples:
        examples = with_shots(cfg, examples)
    if cfg.n is not None and cfg.loader not in EMBEDDED_LOADERS and len(examples) > cfg.n:
        keep = sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.n))
        examples = [examples[i] for i in keep]
    log.debug("task %s: %d examples", cfg.name, len(examples))
    return examples


def with_shots(cfg: TaskConfig, examples: list[Example]) -> list[Example]:
    """The items to score, each carrying the task's `shots` solved items; a shot is never
    scored. From a training file (`shots_from: train`, `shots_path`: a seeded draw, leaving out
    any item whose text is also a test item's), set aside from the task's own items
    (`heldout`: a seeded draw), or as CLUE takes them (`clue`: the items shuffled with
    Python's random.seed(1), the first `shots` set aside, the rest scored in that order)."""
    k, source = cfg.shots, cfg.shots_from
    if source == "auto":
        source = "train" if cfg.shots_path else "heldout"
    if source == "train":
        pool_cfg = dataclasses.replace(cfg, path=cfg.shots_path, dataset=None, shots=0, n=None)
        from biorag import registry

        test_inputs = {e.input for e in examples}
        pool = [e for e in registry.resolve("task_loader", cfg.loader)(pool_cfg, None)
                if e.input not in test_inputs]
        if len(pool) < k:
            raise ConfigError(f"task {cfg.name}: {cfg.shots_path} has {len(pool)} items not in the "
                              f"test set; {k} shots asked")
        shots, scored = [pool[i] for i in random.Random(cfg.seed).sample(range(len(pool)), k)], examples
    else:
        if len(examples) <= k:
            raise ConfigError(f"task {cfg.name}: {len(examples)} items, {k} shots: nothing left to score")
        if source == "clue":
            order = list(examples)
            random.Random(1).shuffle(order)  # eval/eval_*.py: random.seed(1); random.shuffle(data)
            shots, scored = order[:k], order[k:]
        else:
            aside = set(random.Random(cfg.seed).sample(range(len(examples)), k))
            shots = [e for i, e in enumerate(examples) if i in aside]
            scored = [e for i, e in enumerate(examples) if i not in aside]
        said = (cfg.name, source, tuple(e.id for e in shots))
        (log.debug if said in _WARNED else log.warning)(
            "task %s: %d shot(s) taken from the task's own items (%s: %s), not scored",
            cfg.name, k, source, ", ".join(e.id for e in shots))
        _WARNED.add(said)
    return [dataclasses.replace(e, shots=tuple(shots)) for e in scored]
