"""Training items of a task, kept apart from its evaluation items.

A RAFT fine-tune (`data.raft`) trains on a task's *training* items: another seed of an
embedded generator (`task.seed=1`), a training split or file (`task.split=train`,
`task.path=TRAIN_FILE`). Whatever the source, an item that is also an evaluation item (the
same id, or the same input once lower-cased and stripped of punctuation) is left out here,
and the contamination audit checks the rest again before training (`biorag.finetune.raft`).
"""

from __future__ import annotations

import dataclasses
import logging
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biorag.types import Example, answer_text

log = logging.getLogger(__name__)

_TABLE = str.maketrans("", "", string.punctuation)


@dataclass
class TaskSplit:
    """One task's training items and the evaluation items they were kept apart from."""

    task: str
    train: list[Example]
    evaluation: list[Example]
    dropped: list[str] = field(default_factory=list)  # training items that were evaluation items
    candidates: int = 0  # training items the source gave before any was left out
    one_source: bool = True  # training and evaluation items come from one source: ids compare
    limit: int | None = None  # training items wanted; `train` holds more until `cut`

    def cut(self) -> TaskSplit:
        """Keep the first `limit` training items (after any further leaving out)."""
        self.train = self.train[: self.limit]
        return self


def task_overrides(overrides: Iterable[str]) -> list[str]:
    """The `task.*` entries of run overrides, as `load_task_config` takes them."""
    return [o for o in overrides if o.lstrip("+~").startswith("task.")]


def item_keys(example: Example, by_id: bool = True) -> set[str]:
    """What makes two items the same item: the normalised input, and the id when both come
    from one source (a row-numbered id, `medqa-12`, names another item in another file)."""
    words = " ".join(example.input.lower().translate(_TABLE).split())
    return {f"input:{words}", *([f"id:{example.id}"] if by_id else [])}


def shared_items(train: Sequence[Example], evaluation: Sequence[Example], by_id: bool = True) -> list[str]:
    """Ids of the training items that are also evaluation items (same input, or same id)."""
    seen = set().union(*(item_keys(e, by_id) for e in evaluation)) if evaluation else set()
    return [e.id for e in train if item_keys(e, by_id) & seen]


def item_text(example: Example) -> str:
    """An item as the contamination audit reads it: input, options and answer."""
    return "\n".join([example.input, *example.options, answer_text(example.gold)])


def training_split(task: str, overrides: Sequence[str], train: Sequence[str], exclude: Sequence[str] = (),
                   n: int | None = None, *, disjoint: bool = True) -> TaskSplit:
    """The training items of `task` (the task under `overrides` then `train`), without its
    evaluation items (the task under `overrides` then `exclude`), in the source's order:
    room for `n` of them once more are left out (`TaskSplit.cut` keeps n). `disjoint=False`
    keeps the evaluation items too (the audit before training then refuses them)."""
    from biorag.tasks import load_examples, load_task_config

    base = task_overrides(overrides)
    eval_cfg = load_task_config(task, [*base, *task_overrides(exclude)])
    evaluation = load_examples(eval_cfg)
    asked = task_overrides(train)
    if n is not None and not any(o.startswith("task.n=") for o in asked):
        asked.append(f"task.n={n + len(evaluation)}")  # room for the ones left out
    source = load_task_config(task, [*base, *asked])
    candidates = load_examples(dataclasses.replace(source, shots=0))
    one_source = (source.path, source.dataset, source.split) == (eval_cfg.path, eval_cfg.dataset, eval_cfg.split)
    dropped = shared_items(candidates, evaluation, by_id=one_source) if disjoint else []
    gone = set(dropped)
    kept = [e for e in candidates if e.id not in gone]
    if dropped:
        log.info("task %s: %d training item(s) left out, being evaluation items too", task, len(dropped))
    return TaskSplit(task, kept, evaluation, dropped, len(candidates), one_source, n)


def training_splits(raft) -> list[TaskSplit]:
    """Every task's split for a `RaftSettings`, not yet `cut`."""
    return [training_split(t, raft.overrides, raft.train, raft.exclude, raft.n, disjoint=raft.keep_apart)
            for t in raft.tasks]
