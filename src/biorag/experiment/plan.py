"""Planning: from command-line overrides (and studies) to the cells to run, each a resolved
`RunConfig`, with the fingerprint that names its predictions and its MLflow child run."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from omegaconf import OmegaConf

from biorag.config import compose, expand_sweeps, flatten, load_option, to_typed
from biorag.errors import ConfigError
from biorag.experiment.arms import ArmConfig, RetrieverConfig, RunConfig, StudyConfig
from biorag.models.config import ModelConfig
from biorag.tasks.config import TaskConfig
from biorag.tasks.protocols import ProtocolNotApplicable

# descriptive fields: changing them does not change a cell's predictions
_DESCRIPTIVE = ("description", "expected_format")
# task fields added after predictions were cached: left unset, they leave the fingerprint (and
# so the cached predictions) as before they existed
_NEW_UNSET = ("index",)
# who judges the answers, and how: a stage after prediction, so never part of a cell's
# fingerprint or params (a judge added to a finished study judges its cached predictions)
JUDGING = ("judge", "judge_methods")


@dataclass
class Plan:
    """What `experiment run` will do: the cells, the experiment they log to, the baseline arm,
    and a note for each override that an arm's part rule kept off some arms."""

    experiment: str
    cells: list[RunConfig]
    baseline: str = "base"
    notes: list[str] = field(default_factory=list)
    study: str | None = None  # the study swept, if any

    def run_name(self) -> str:
        """The parent run's name: `run_name=` if set, else the study and what it sweeps, e.g.
        `embedded: base,rag,lora,lora_rag x smollm2 x hpo-term-mcq,icd10-code-mcq`."""
        if self.cells[0].run_name:
            return self.cells[0].run_name

        def few(names: list[str], what: str) -> str:
            names = list(dict.fromkeys(names))
            return ",".join(names) if len(names) <= 4 else f"{len(names)} {what}"

        body = " x ".join((few([c.arm.name for c in self.cells], "arms"),
                           few([c.model.name for c in self.cells], "models"),
                           few([c.task.name for c in self.cells], "tasks")))
        return f"{self.study}: {body}" if self.study else body


# An override of one of an arm's parts changes what the arm *is* when the arm lacks that part:
# an adapter put on a closed-book general arm makes it a fine-tuned one, a retriever on a
# closed-book arm makes it a rag arm. So an override of `arm.adapter`, `arm.retriever` or any
# `arm.retriever.*` option (rerank, fusion, and every retrieval option added later) applies only
# to the arms of the run that have that part, and is refused when it would apply to none of
# them or would take the part off an arm that has it.
PARTS = {"arm.adapter": "adapter", "arm.retriever": "retriever"}


def part_of(override: str) -> str | None:
    """The arm part an override changes (`adapter`, `retriever`), or None."""
    key = override.lstrip("+~").split("=", 1)[0]
    for prefix, part in PARTS.items():
        if key == prefix or key.startswith(prefix + "."):
            return part
    return None


def group_of(override: str) -> str:
    """The config group an override belongs to: `arm`, `model`, `task`, or `run` for the rest."""
    root = override.lstrip("+~").split("=", 1)[0].split(".")[0]
    return root if root in _Composer.GROUPS else "run"


def _removes(override: str) -> bool:
    key, _, value = override.partition("=")
    return override.startswith("~") or (key.lstrip("+") in PARTS and value.strip().lower() in ("null", "none", ""))


def plan(overrides: Sequence[str]) -> tuple[str, list[RunConfig], str]:
    """The experiment name, the cells to run, and the baseline arm, from CLI overrides."""
    p = plan_run(overrides)
    return p.experiment, p.cells, p.baseline


def plan_run(overrides: Sequence[str]) -> Plan:
    """The cells to run from CLI overrides, with the arm-part rule applied (see `PARTS`).

    `study=NAME` sweeps the study's arms x models x tasks; other overrides apply to every cell.
    Each distinct override set is composed once.
    """
    overrides = list(overrides)
    study_over = [o for o in overrides if o.split("=", 1)[0] == "study"]
    rest = [o for o in overrides if o.split("=", 1)[0] != "study"]
    baseline = "base"
    experiment = study_name = None
    if study_over:
        study = load_study_config(study_over[-1].split("=", 1)[1])
        experiment = study.experiment or f"biorag-{study.name}"
        study_name = study.name
        baseline = study.baseline_arm
        protocols = [[f"task.protocol={p}"] for p in study.protocols] or [[]]
        judges = [f"judges=[{','.join(study.judges)}]"] if study.judges else []
        grid = [
            [f"arm={a}", f"model={m}", f"task={t}", *p, *judges, *study.overrides]
            for m in study.models for t in study.tasks for p in protocols for a in study.arms
        ]
    else:
        grid = [[]]
    composer = _Composer()
    applied: dict[str, set[str]] = {}  # a part override -> the arms it went on
    skipped: dict[str, set[str]] = {}  # ... and those without the part
    cells: list[RunConfig] = []
    seen: set[str] = set()
    for base in grid:
        for combo in expand_sweeps([*base, *rest]):
            bound = [o for o in combo if part_of(o)]
            if bound:
                # which parts the arm has: its own config and the overrides of its other fields
                arm_only = [o for o in combo if group_of(o) == "arm" and not part_of(o)]
                arm = composer.node(arm_only).arm
                has = {"adapter": arm.adapter is not None, "retriever": arm.retriever is not None}
                for o in bound:
                    if has[part_of(o)] and _removes(o):
                        raise ConfigError(
                            f"{o} would take the {part_of(o)} off arm '{arm.name}', making it another "
                            f"arm under the same name: run the arm without one instead (arm=base, "
                            f"or arm=rag for retrieval without an adapter)")
                    if has[part_of(o)]:
                        applied.setdefault(o, set()).add(arm.name)
                    elif not _removes(o):  # taking off what an arm lacks changes nothing
                        skipped.setdefault(o, set()).add(arm.name)
                combo = [o for o in combo if not part_of(o) or has[part_of(o)]]
            try:
                cfg = composer.cell(combo)
            except ProtocolNotApplicable:
                if not study_over:  # asked for by name: say so
                    raise
                # a study's protocol that does not apply to this task: the task's own, once
                cfg = composer.cell([o for o in combo if not o.startswith("task.protocol=")])
            if experiment and not any(o.startswith("experiment=") for o in rest):
                cfg.experiment = experiment
            key = json.dumps(asdict(cfg), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                cells.append(cfg)
    notes = []
    for o, arms in skipped.items():
        name = part_of(o)
        part = f"an {name}" if name == "adapter" else f"a {name}"
        if o not in applied:
            holders = ", ".join(arms_with(name)) or "none shipped"
            raise ConfigError(
                f"{o} applies to the arms that have {part}, and "
                + (f"arm {next(iter(arms))} has none" if len(arms) == 1 else
                   f"none of the arms {', '.join(sorted(arms))} has one")
                + f": it would change what the arm is. Put it on an arm with {part} (here: {holders})")
        notes.append(f"{o} applies to {', '.join(sorted(applied[o]))}; not to {', '.join(sorted(arms))} "
                     f"(no {name})")
    return Plan(cells[0].experiment, cells, baseline, notes, study_name)


class _Composer:
    """Composes each distinct option set once. A cell's arm, model and task are composed and
    typed from their own overrides (no config interpolates across groups), so a study of
    8 models x 8 tasks x 2 protocols composes 8 + 16 + 1 sets, not 128 runs."""

    GROUPS: ClassVar = {"arm": ArmConfig, "model": ModelConfig, "task": TaskConfig}

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, ...], Any] = {}
        self._typed: dict[tuple[str, tuple[str, ...]], Any] = {}

    def node(self, overrides: Sequence[str]) -> Any:
        key = tuple(overrides)
        if key not in self._nodes:
            self._nodes[key] = compose("run", list(overrides))
        return self._nodes[key]

    def cell(self, combo: Sequence[str]) -> RunConfig:
        parts = {g: [o for o in combo if group_of(o) == g] for g in (*self.GROUPS, "run")}
        typed = {}
        for g, schema in self.GROUPS.items():
            key = (g, tuple(parts[g]))
            if key not in self._typed:
                self._typed[key] = to_typed(self.node(parts[g])[g], schema, where=f"{g} config")
            typed[g] = copy.deepcopy(self._typed[key])
        top = OmegaConf.to_container(self.node(parts["run"]), resolve=True)
        try:
            return RunConfig(**typed, **{f.name: top[f.name] for f in fields(RunConfig) if f.name not in typed})
        except TypeError as e:  # a field of the schema missing from run.yaml: a bug, said plainly
            raise ConfigError(f"run config: {e}") from None


def arms_with(part: str) -> list[str]:
    """The arm configs that have `part` (adapter, retriever)."""
    from biorag.config import options

    return [a for a in options("arm") if getattr(load_option("arm", a, ArmConfig), part) is not None]


def load_study_config(name: str) -> StudyConfig:
    """A study config by name (experiments/study/NAME.yaml) or path."""
    return load_option("study", name, StudyConfig)


# -- fingerprints and params ----------------------------------------------------------------


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _DESCRIPTIVE}
    return obj


def _plain_methods(arm: dict[str, Any]) -> dict[str, Any]:
    """The arm without the RAG-method fields that are at their defaults (a plain rag arm keeps
    the fingerprint it had before they existed)."""
    from biorag.retrieval.spec import METHOD_DEFAULTS

    if arm.get("retriever"):
        arm = {**arm, "retriever": {k: v for k, v in arm["retriever"].items()
                                    if not (k in METHOD_DEFAULTS and v == METHOD_DEFAULTS[k])}}
    return arm


def cell_fingerprint(cfg: RunConfig, index_fp: str, adapter_fp: str) -> str:
    payload = {
        "arm": _strip(_plain_methods(asdict(cfg.arm))),
        "model": _strip({k: v for k, v in asdict(cfg.model).items() if k not in ("batch_size", "device")}),
        "task": _strip({k: v for k, v in asdict(cfg.task).items()
                       if not (k in _NEW_UNSET and v is None) and k not in JUDGING}),
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
    task = {k: v for k, v in asdict(cfg.task).items() if k not in JUDGING}
    out = flatten({"arm": arm, "model": asdict(cfg.model), "task": task})
    out.update({"seed": cfg.seed, "batch_size": cfg.batch_size, "experiment": cfg.experiment})
    return out


