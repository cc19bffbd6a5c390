"""Evaluation tasks: YAML configs under `experiments/task/`, loaders and embedded generators.

cfg = load_task_config("medqa", ["task.path=data/medqa/test.jsonl"])
examples = load_examples(cfg)
"""

from __future__ import annotations

import logging
import random

from biorag.tasks.config import EMBEDDED_LOADERS, TaskConfig, load_task_config, task_names
from biorag.tasks.records import Problem
from biorag.types import Example

log = logging.getLogger(__name__)

__all__ = ["Problem", "TaskConfig", "load_examples", "load_task_config", "task_names"]


def load_examples(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """The task's examples. File tasks with `n` keep a seeded sample of n, in file order.

    Bad rows raise an InputError naming file, row and field (the first of them, with a
    count of the rest); pass a `problems` list to collect them all instead.
    """
    from biorag import registry

    examples = registry.resolve("task_loader", cfg.loader)(cfg, problems)
    if cfg.n is not None and cfg.loader not in EMBEDDED_LOADERS and len(examples) > cfg.n:
        keep = sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.n))
        examples = [examples[i] for i in keep]
    log.debug("task %s: %d examples", cfg.name, len(examples))
    return examples
