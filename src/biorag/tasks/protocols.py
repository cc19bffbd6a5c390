"""Answer protocols: how a multiple-choice item is put to a model and its answer read.

A protocol is a YAML under `experiments/protocol/` (a config group, so users add their own)
and a task option, `task.protocol=cot`: it replaces the task's scoring, template, system
message, generation budget and answer format, so one task YAML serves every protocol and a
cell's params and fingerprint say which one ran. `task` (the default) is the task's own
settings. Shipped: `loglikelihood` (options ranked by log-probability, as
lm-evaluation-harness), `direct` (a short generated letter), `cot` (zero-shot step-by-step
reasoning ending "Final answer: X") and `medrag` (MedRAG / MIRAGE's system prompt and JSON
answer, with or without retrieved documents) and `clue` (CLUE's own system prompts, few-shot
counts and answer phrasing, set task by task under `tasks:`; `clue-compat` is `clue` with
CLUE's scoring quirks reproduced).
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
    # task name -> TaskConfig fields set for that task (CLUE's prompts, shots and metrics);
    # when given, the protocol applies to these tasks only
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    clue_compat: bool = False  # CLUE's scoring quirks (biorag.tasks.config.TaskConfig)
    # report groups: level -> {benchmark task: {metric, tasks}} (protocol clue: CLUE's levels)
    levels: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: str | None = None  # a protocol this one extends (its YAML merged under this one)


def protocol_names() -> list[str]:
    from biorag.config import options

    return [OWN, *options("protocol")]


def load_protocol(name: str) -> ProtocolConfig:
    from omegaconf import OmegaConf

    from biorag.config import option_path, read_yaml, to_typed

    path = option_path("protocol", name)
    raw = read_yaml(path)
    if raw.get("base"):
        parent = read_yaml(option_path("protocol", raw.base))
        raw = OmegaConf.merge(OmegaConf.masked_copy(parent, [k for k in parent if k != "name"]), raw)
    return to_typed(raw, ProtocolConfig, where=str(path))


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
    if p.tasks and task.name not in p.tasks:
        raise ProtocolNotApplicable(f"task {task.name}: protocol {p.name} is set for the tasks "
                                    f"{', '.join(p.tasks)} only")
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
    own = _own_settings(task) if p.tasks.get(task.name) else {}
    for key, value in (p.tasks.get(task.name) or {}).items():
        if not hasattr(task, key) or key in ("name", "type", "loader", "protocol"):
            raise ConfigError(f"protocol {p.name}: tasks.{task.name}.{key} is not a task setting")
        if key in own and getattr(task, key) != own[key]:
            continue  # the user's override (task.document_tokens=...) wins over the protocol's
        setattr(task, key, list(value) if isinstance(value, (list, tuple)) else value)
    if p.clue_compat:
        task.clue_compat = True
        if task.temperature == 0:  # CLUE builds SamplingParams without one: vLLM's default 1.0
            task.temperature = 1.0


def _own_settings(task: Any) -> dict[str, Any]:
    """The task's settings as its YAML (or the schema's defaults) gives them, before overrides."""
    import dataclasses

    from biorag.config import extended, option_path, read_yaml

    values = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
              for f in dataclasses.fields(task)
              if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    try:
        path = option_path("task", task.name)
    except ConfigError:  # a task built in code, not from a YAML
        return values
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(extended(read_yaml(path), path, "task"), resolve=True)
    from biorag.tasks.defaults import loader_defaults  # what the YAML leaves out, its loader's

    values.update(loader_defaults(str(raw.get("loader", "")), raw.get("subset")))
    return {**values, **{k: v for k, v in raw.items() if k in values}}
