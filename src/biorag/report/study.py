"""Read a study back from MLflow: its parent run and one `Cell` per child run.

A study is one parent run; its child runs are the cells (arm, model, task). From each child
the report takes the logged metrics (with their 95% intervals), the per-example scores in
`predictions.jsonl`, and the index and adapter manifests (build and training seconds).
Comparisons are in `biorag.report.compare`, rendering in `biorag.report.render`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from biorag.errors import BioragError, InputError
from biorag.report.labels import arm_key, chance_of
from biorag.report.select import select_run
from biorag.tracking import keys
from biorag.tracking.read import StoreReader
from biorag.types import Prediction

log = logging.getLogger(__name__)

CI_LOW, CI_HIGH = keys.CI_LOW, keys.CI_HIGH
COST_KEYS = keys.COST
# an adapter manifest's training time: the first of these keys, in `results` or at the top
FINETUNE_SECONDS_KEYS = ("wall_seconds", "train_seconds", "training_seconds", "finetune_seconds")
TASK_PARAM = "task."  # prefix of a cell's task config among its params

# -- what a study logged --------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """What a cell's logged params say of its task: what the report headlines and plots."""

    metrics: tuple[str, ...] = ()  # the task's own metrics, as its config lists them
    continuation: str = ""  # letter | text: what its log-likelihood scored
    type: str = ""  # mcq | nli | ...
    description: str = ""
    chance: float = math.nan  # the accuracy of a uniform guess among its options


@dataclass
class Cell:
    """One child run: its identity, logged metrics, per-example predictions and manifests."""

    run_id: str
    arm: str
    model: str
    task: str
    family: str
    counterpart: str | None
    seed: int
    metrics: dict[str, float]  # as logged: `<task>/<key>`
    predictions: list[Prediction] = field(default_factory=list)  # its predictions.jsonl, read back
    index_manifest: dict[str, Any] | None = None
    adapter_manifest: dict[str, Any] | None = None
    protocol: str = "task"  # the task's answer protocol
    # the arm's levels in the RAG x fine-tune design: its retriever settings (None:
    # closed-book) and its adapter (None: no fine-tune)
    retriever: str | None = None
    adapter: str | None = None
    task_info: TaskInfo = field(default_factory=TaskInfo)
    judge_tags: dict[str, str] = field(default_factory=dict)  # judges, their checks and agreement

    @property
    def label(self) -> str:
        """The task as the report groups it: `medqa`, or `medqa@cot` under another protocol."""
        return keys.task_label(self.task, self.protocol)

    @property
    def name(self) -> str:
        return f"{self.arm}/{self.model}/{self.label}"

    def quality_metrics(self) -> list[str]:
        """Metric keys (without the task prefix) that were logged with a 95% interval."""
        prefix = f"{self.task}/"
        return [k[len(prefix):] for k in self.metrics
                if k.startswith(prefix) and not k.endswith((CI_LOW, CI_HIGH))
                and f"{k}{CI_LOW}" in self.metrics]

    def value(self, metric: str) -> tuple[float, float, float]:
        key = keys.metric(self.task, metric)
        return (self.metrics.get(key, math.nan), self.metrics.get(key + CI_LOW, math.nan),
                self.metrics.get(key + CI_HIGH, math.nan))

    def scores(self, metric: str) -> dict[str, float]:
        """Per-example scores of a metric, by example id (empty when not logged)."""
        return {p.example_id: p.scores[metric] for p in self.predictions if metric in p.scores}

    def cost(self) -> dict[str, float]:
        out = {k: self.metrics.get(keys.metric(self.task, k), math.nan) for k in COST_KEYS}
        out["index_build_seconds"] = float((self.index_manifest or {}).get("build_seconds", math.nan))
        out["finetune_seconds"] = finetune_seconds(self.adapter_manifest or {})
        for k in ("judge_seconds", "judge_questions", "judge_tokens_in", "judge_tokens_out",
                  "judge_requests"):  # NaN: not judged
            out[k] = self.metrics.get(keys.metric(self.task, k), math.nan)
        return out


@dataclass
class Study:
    """A parent run and its cells."""

    experiment: str
    experiment_id: str
    parent_run_id: str
    parent_name: str
    baseline: str
    tracking_uri: str
    git_sha: str
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # which run was chosen over which, and why
    arenas: list[dict[str, Any]] = field(default_factory=list)  # pairwise arenas logged to the parent


def finetune_seconds(manifest: dict[str, Any]) -> float:
    """Fine-tuning time from an adapter manifest (`biorag finetune` writes results.wall_seconds)."""
    for scope in (manifest.get("results") or {}, manifest):
        for k in FINETUNE_SECONDS_KEYS:
            if isinstance(scope.get(k), int | float):
                return float(scope[k])
    return math.nan


def retriever_levels(params: dict[str, str]) -> str | None:
    """An arm's retriever as logged (`arm.retriever.*`), one string; None when closed-book."""
    if params.get(keys.ARM_RETRIEVAL) != "True":
        return None
    return json.dumps({k: v for k, v in sorted(params.items()) if k.startswith(keys.ARM_RETRIEVER)})


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "None", "null") else value


def task_info(params: dict[str, str], predictions: list[Prediction]) -> TaskInfo:
    """A cell's task as its logged params (`task.*`) and predictions describe it."""
    from biorag.tasks.config import EMBEDDED_LOADERS

    n_options = params.get(TASK_PARAM + "n_options", "")
    embedded = params.get(TASK_PARAM + "loader") in EMBEDDED_LOADERS  # files: n_options is unused
    counts = [len(p.option_logprobs) for p in predictions if p.option_logprobs]
    return TaskInfo(
        metrics=tuple(_json_list(params.get(TASK_PARAM + "metrics"))),
        continuation=params.get(TASK_PARAM + "continuation", ""),
        type=params.get(TASK_PARAM + "type", ""),
        description=_none(params.get(TASK_PARAM + "description")) or "",
        chance=chance_of(counts, params.get(TASK_PARAM + "type", ""),
                         int(n_options) if embedded and n_options.isdigit() else None,
                         len(_json_list(params.get(TASK_PARAM + "labels")))),
    )


def _json_list(value: str | None) -> list[str]:
    try:
        got = json.loads(value) if value else []
    except json.JSONDecodeError:
        return []
    return [str(x) for x in got] if isinstance(got, list) else []


def read_study(target: str | None = None, baseline: str | None = None) -> Study:
    """Read a study's parent run, its child runs and their predictions from MLflow: the run
    `biorag.report.select.select_run` chooses, and of it the cells that logged results."""
    reader = StoreReader()
    chosen = select_run(target, reader)
    parent = chosen.run
    experiment = reader.experiment_name(parent.experiment_id)
    if not chosen.cells:
        raise BioragError(f"run {parent.run_id} of experiment '{experiment}' has no cell runs "
                          "(is it a study's parent run?)")
    for note in chosen.notes:
        log.warning("%s", note)
    cells = []
    for run in chosen.cells:
        tags, params = run.tags, run.params
        preds = reader.artifact_text(run, keys.PREDICTIONS_FILE)
        if preds is None:
            log.warning("run %s (%s) has no %s: no paired tests for it",
                        run.run_id, run.name, keys.PREDICTIONS_FILE)
        index_m = reader.artifact_text(run, keys.INDEX_MANIFEST_FILE)
        adapter_m = reader.artifact_text(run, keys.ADAPTER_MANIFEST_FILE)
        counterpart = params.get(keys.MODEL_COUNTERPART)
        predictions = read_predictions(preds or "", f"{keys.PREDICTIONS_FILE} of run {run.run_id}")
        cells.append(Cell(
            run_id=run.run_id, arm=tags.get(keys.ARM, "?"), model=tags.get(keys.MODEL, "?"),
            task=tags.get(keys.TASK, "?"),
            family=tags.get(keys.MODEL_FAMILY) or params.get(keys.MODEL_FAMILY_PARAM, "general"),
            counterpart=_none(counterpart),
            seed=int(params.get(keys.SEED, 0) or 0), metrics=dict(run.metrics),
            predictions=predictions,
            index_manifest=json.loads(index_m) if index_m else None,
            adapter_manifest=json.loads(adapter_m) if adapter_m else None,
            protocol=tags.get(keys.PROTOCOL) or "task",
            retriever=retriever_levels(params), adapter=_none(params.get(keys.ARM_ADAPTER)),
            task_info=task_info(params, predictions),
            judge_tags={k: v for k, v in tags.items() if k == "judges" or k.startswith(keys.JUDGE_TAG + ".")},
        ))
    _warn_duplicates(cells)
    cells.sort(key=lambda c: arm_key(c.arm))  # the design's order wherever the report lists cells
    return Study(
        experiment=experiment, experiment_id=parent.experiment_id, parent_run_id=parent.run_id,
        parent_name=parent.name,
        baseline=baseline or parent.tags.get(keys.BASELINE_ARM) or "base",
        tracking_uri=reader.uri, git_sha=parent.tags.get(keys.GIT_SHA, "unknown"), cells=cells,
        notes=chosen.notes, arenas=_arenas(reader, parent),
    )


def _arenas(reader: StoreReader, parent: Any) -> list[dict[str, Any]]:
    """The pairwise arenas logged to a study's parent run (`biorag judge pairwise`)."""
    out = []
    for path in reader.artifact_names(parent):
        if path.startswith(keys.ARENA_PREFIX) and path.endswith(".json"):
            text = reader.artifact_text(parent, path)
            try:
                out.append(json.loads(text or ""))
            except ValueError:
                log.warning("%s of run %s is not JSON: left out", path, parent.run_id)
    return out


def read_predictions(text: str, where: str = keys.PREDICTIONS_FILE) -> list[Prediction]:
    """A cell's `predictions.jsonl` as `Prediction`s, the one reader of its rows (the report,
    the strata, `biorag predictions show`); a row that is not a prediction is an error naming
    `where`, the line and the field."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Prediction.from_json(json.loads(line)))
        except ValueError as e:  # a JSON decode error is one too
            raise InputError(f"not a prediction ({e})", file=where, line=n) from None
    return out


def _warn_duplicates(cells: list[Cell]) -> None:
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.name in seen:
            log.warning("two cell runs named %s (%s, %s): the report keeps the later one",
                        c.name, seen[c.name].run_id, c.run_id)
        seen[c.name] = c
    cells[:] = list(seen.values())


