"""Planning: from command-line overrides (and studies) to the cells to run, each a resolved
`RunConfig`, with the fingerprint that names its predictions and its MLflow child run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from biorag.config import compose, expand_sweeps, flatten, load_option, to_typed
from biorag.experiment.arms import RetrieverConfig, RunConfig, StudyConfig
from biorag.tasks.protocols import ProtocolNotApplicable

# descriptive fields: changing them does not change a cell's predictions
_DESCRIPTIVE = ("description", "expected_format")


def plan(overrides: Sequence[str]) -> tuple[str, list[RunConfig], str]:
    """The experiment name, the cells to run, and the baseline arm, from CLI overrides.

    `study=NAME` sweeps the study's arms x models x tasks; other overrides apply to every cell.
    """
    overrides = list(overrides)
    study_over = [o for o in overrides if o.split("=", 1)[0] == "study"]
    rest = [o for o in overrides if o.split("=", 1)[0] != "study"]
    baseline = "base"
    experiment = None
    if study_over:
        study = load_study_config(study_over[-1].split("=", 1)[1])
        experiment = study.experiment or f"biorag-{study.name}"
        baseline = study.baseline_arm
        protocols = [[f"task.protocol={p}"] for p in study.protocols] or [[]]
        grid = [
            [f"arm={a}", f"model={m}", f"task={t}", *p, *study.overrides]
            for m in study.models for t in study.tasks for p in protocols for a in study.arms
        ]
    else:
        grid = [[]]
    cells: list[RunConfig] = []
    seen: set[str] = set()
    for base in grid:
        for combo in expand_sweeps([*base, *rest]):
            # arm.retriever.* overrides apply to the retrieval arms of a sweep; a closed-book
            # arm (retriever: null) has nothing to override
            retr = [o for o in combo if o.lstrip("+~").startswith("arm.retriever.")]
            if retr and compose("run", [o for o in combo if o not in retr]).arm.retriever is None:
                combo = [o for o in combo if o not in retr]
            try:
                cfg = to_typed(compose("run", combo), RunConfig, where="run config")
            except ProtocolNotApplicable:
                if not study_over:  # asked for by name: say so
                    raise
                # a study's protocol that does not apply to this task: the task's own, once
                combo = [o for o in combo if not o.startswith("task.protocol=")]
                cfg = to_typed(compose("run", combo), RunConfig, where="run config")
            if experiment and not any(o.startswith("experiment=") for o in rest):
                cfg.experiment = experiment
            key = json.dumps(asdict(cfg), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                cells.append(cfg)
    return cells[0].experiment, cells, baseline


def load_study_config(name: str) -> StudyConfig:
    """A study config by name (experiments/study/NAME.yaml) or path."""
    return load_option("study", name, StudyConfig)


# -- fingerprints and params ----------------------------------------------------------------


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _DESCRIPTIVE}
    return obj


def cell_fingerprint(cfg: RunConfig, index_fp: str, adapter_fp: str) -> str:
    payload = {
        "arm": _strip(asdict(cfg.arm)),
        "model": _strip({k: v for k, v in asdict(cfg.model).items() if k not in ("batch_size", "device")}),
        "task": _strip(asdict(cfg.task)),
        "seed": cfg.seed,
        "index": index_fp,
        "adapter": adapter_fp,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_params(cfg: RunConfig) -> dict[str, Any]:
    """Flattened config with the same names in every arm: a closed-book arm logs the
    retriever fields as None rather than leaving them out."""
    arm = asdict(cfg.arm)
    arm["retrieval"] = cfg.arm.retriever is not None
    if cfg.arm.retriever is None:
        arm["retriever"] = {f.name: None for f in fields(RetrieverConfig)}
    out = flatten({"arm": arm, "model": asdict(cfg.model), "task": asdict(cfg.task)})
    out.update({"seed": cfg.seed, "batch_size": cfg.batch_size, "experiment": cfg.experiment})
    return out


