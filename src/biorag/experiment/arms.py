"""Arms, studies and the resolved config of one experiment cell.

An arm is a way of answering: `retriever: null` means closed-book, `adapter: null` means no
fine-tune. A cell is one (arm, model, task); a study sweeps arms x models x tasks. How an
arm retrieves (`RetrieverConfig`) is retrieval's: `biorag.retrieval.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from biorag.atomic import check_name
from biorag.errors import ConfigError
from biorag.models.config import ModelConfig
from biorag.retrieval.spec import RetrieverConfig
from biorag.tasks.config import TaskConfig
from biorag.tracking.keys import task_label


@dataclass
class ArmConfig:
    """One arm: closed-book or with retrieval, with or without a LoRA adapter."""

    name: str = "???"
    description: str = ""
    retriever: RetrieverConfig | None = None  # null: closed-book
    adapter: str | None = None  # adapter folder or name under ./adapters; null: no fine-tune


@dataclass
class StudyConfig:
    """A sweep of arms x models x tasks logged under one MLflow experiment."""

    name: str = "???"
    description: str = ""
    experiment: str | None = None  # MLflow experiment; null: biorag-<name>
    arms: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    # answer protocols to run every task under (experiments/protocol/); one that does not
    # apply to a task (cot for a summarisation task) is skipped for it. Empty: the tasks' own
    protocols: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # applied to every cell, e.g. task.n=100
    baseline_arm: str = "base"  # the arm others are compared with in reports
    # judges (experiments/judge/) that grade every cell's answers after prediction; two or
    # more are a jury. A task's own `judge` is added to them
    judges: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name != "???":
            check_name(self.name, "study name")


LAUNCHERS = ("local", "ray")


@dataclass
class LauncherConfig:
    """Where a run's cells are predicted (`experiments/launcher/`): `local`, one after another
    in this process, or `ray`, as Ray actors (`biorag.experiment.launch`). Never part of a
    cell's fingerprint or params: a cell predicted on a cluster is the same cell."""

    kind: str = "local"  # local | ray
    address: str | None = None  # Ray cluster; null: $RAY_ADDRESS, else a local Ray
    ray_cpus: int | None = None  # CPUs of a local Ray; null: every core
    ray_gpus: int | None = None  # GPUs of a local Ray; null: those torch sees
    shards: int = 1  # item shards per cell (contiguous, one replica each); 1: none
    # >0: only cells with more items are cut (into `shards`; with shards=1, into pieces of at
    # most this many items); 0: every cell is cut into `shards`
    shard_above: int = 0
    max_retries: int = 2  # restarts of a worker that died (killed, lost node) before a cell fails

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise ConfigError(f"launcher.kind must be one of {', '.join(LAUNCHERS)}, not {self.kind!r}")
        for name in ("shards", "shard_above", "max_retries"):
            if getattr(self, name) < (1 if name == "shards" else 0):
                raise ConfigError(f"launcher.{name} must be at least {1 if name == 'shards' else 0}, "
                                  f"not {getattr(self, name)}")


@dataclass
class RunConfig:
    """The resolved config of one cell; composed from experiments/run.yaml."""

    arm: ArmConfig = MISSING
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    experiment: str = "biorag"  # MLflow experiment (a study sets its own)
    seed: int = 0  # bootstrap and any sampling
    batch_size: int = 8  # examples per step (the model backend batches within a step)
    cache_dir: str | None = None  # prediction cache; null: $BIORAG_CACHE_DIR or ./.biorag-cache
    adapters_dir: str = "adapters"  # where arm.adapter names are looked up
    index_root: str | None = None  # null: $BIORAG_INDEX_DIR or ./indexes
    # the parent MLflow run's name; null: the study's name and its arms, models and tasks
    run_name: str | None = None
    # judges (experiments/judge/) grading the answers after prediction: judges=[smollm2] or
    # judges=[a,b] (a jury); never part of a cell's fingerprint, so adding one to a finished
    # study judges its cached predictions into the same runs
    judges: Any = field(default_factory=list)
    # where the cells run (experiments/launcher/): never part of a cell's fingerprint or params
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def __post_init__(self) -> None:
        from biorag.judges.config import judge_names

        self.judges = judge_names(self.judges)
        if isinstance(self.launcher, dict):
            self.launcher = LauncherConfig(**self.launcher)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {self.batch_size}")


def cell_judges(cfg: RunConfig) -> list[str]:
    """The judges of a cell: the run's (or study's), then the task's own."""
    from biorag.judges.config import judge_names

    return list(dict.fromkeys([*cfg.judges, *judge_names(cfg.task.judge)]))


def cell_name(arm: str, model: str, task: str, protocol: str = "task") -> str:
    """`rag/smollm2/medqa`, and `rag/smollm2/medqa@cot` under another answer protocol."""
    return f"{arm}/{model}/{task_label(task, protocol)}"


def describe(obj: Any) -> str:
    return getattr(obj, "description", "") or ""


__all__ = ["ArmConfig", "LauncherConfig", "RetrieverConfig", "RunConfig", "StudyConfig", "cell_judges", "cell_name", "describe"]
