"""Answer protocols: how a multiple-choice item is put to a model and its answer read.

A protocol is a YAML under `experiments/protocol/` (a config group, so users add their own)
and a task option, `task.protocol=cot`: it replaces the task's scoring, template, system
message, generation budget and answer format, so one task YAML serves every protocol and a
cell's params and fingerprint say which one ran. `task` (the default) is the task's own
settings. Shipped: `loglikelihood` (options ranked by log-probability, as
lm-evaluation-harness), `direct` (a short generated letter), `cot` (zero-shot step-by-step
reasoning ending "Final answer: X") and `medrag` (MedRAG / MIRAGE's system prompt and JSON
answer, with or without retrieved documents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biorag.errors import ConfigError

OWN = "task"  # the task's own settings


class ProtocolNotApplicable(ConfigError):
    """A protocol asked of a task type it does not apply to (cot for a summarisation task)."""


@dataclass
class ProtocolConfig:
    name: str = "???"
    description: str = ""
    applies_to: list[str] = field(default_factory=lambda: ["mcq", "longdoc"])  # task types
    scoring: str = "generate"  # loglikelihood | generate | both
    template: str | None = None  # null: the task's own
    system: str | None = None  # null: the task's own; a Jinja template like `template`
    answer_format: str = "plain"  # plain | final_line | json
    max_new_tokens: int | None = None  # at least this many (a task's larger budget stays)
    stop: list[str] | None = None  # null: the task's own
    stop_after: list[str] = field(default_factory=list)


def protocol_names() -> list[str]:
    from biorag.config import options

    return [OWN, *options("protocol")]


def load_protocol(name: str) -> ProtocolConfig:
    from biorag.config import load_option

    return load_option("protocol", name, ProtocolConfig)


def apply_protocol(task: Any) -> None:
    """Put a `TaskConfig` under its `protocol` (in place; applying twice changes nothing).
    Called by `TaskConfig.__post_init__`, so every loaded task is already under it."""
    if task.protocol == OWN:
        return
    if task.protocol not in protocol_names():
        from biorag.errors import did_you_mean

        raise ConfigError(f"task {task.name}: task.protocol: "
                          + did_you_mean(task.protocol, protocol_names(), what="protocol"))
    p = load_protocol(task.protocol)
    if task.type not in p.applies_to:
        raise ProtocolNotApplicable(f"task {task.name}: protocol {p.name} applies to "
                                    f"{', '.join(p.applies_to)} tasks, not {task.type}")
    task.scoring = p.scoring
    if p.template is not None:
        task.template = p.template
    if p.system is not None:
        task.system = p.system
    if p.max_new_tokens is not None:
        task.max_new_tokens = max(task.max_new_tokens, p.max_new_tokens)
    if p.stop is not None:
        task.stop = list(p.stop)
    task.stop_after = list(p.stop_after)
    task.answer_format = p.answer_format
