"""One runner for every arm: a cell is (arm, model, task); a run is a list of cells.

Per cell: load the task's examples, retrieve passages when the arm has a retriever, render
prompts, score options by log-likelihood and/or generate, score, and log one MLflow child run.
Predictions are appended to a cache file as they are made, so a killed run started again with
the same command continues where it stopped and ends with the same metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from biorag import progress
from biorag.atomic import artifact_lock
from biorag.experiment.arms import RunConfig, cell_name
from biorag.experiment.cache import cache_root
from biorag.experiment.checks import require_runnable
from biorag.experiment.judging import check_judges, pending
from biorag.experiment.launch import CellFailure
from biorag.experiment.plan import cell_params, plan_run
from biorag.experiment.predict import Predicted, predict_cell
from biorag.experiment.resources import LoadedModels, PreparedCell, check_servers, prepare
from biorag.experiment.retrieval_eval import cell_retrieval
from biorag.models.base import Generator, LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.retrieval.cache import CachedRetriever
from biorag.retrieval.evidence import CELL_KEYS as RETRIEVAL_KEYS
from biorag.retrieval.fusion import source_share
from biorag.scoring.evaluate import (
    TRUNCATED,
    UNPARSED,
    TaskScores,
    decoding,
    unparsed,
)
from biorag.scoring.metrics import N_RESAMPLES, mean_result
from biorag.tracking import keys
from biorag.tracking.runs import (
    Tracker,
    check_store,
    git_sha,
    invocation_lock_folder,
    log_json_artifact,
    log_metrics,
    log_table,
    log_text_artifact,
    scrub,
    set_tags,
    tracking_uri,
)
from biorag.types import CellRecord, Example, Prediction, answer_text

log = logging.getLogger(__name__)


@dataclass
class CellResult:
    """What one cell produced: its metrics (with intervals) and where it was logged."""

    name: str
    arm: str
    model: str
    task: str
    metrics: dict[str, float]
    n: int
    run_id: str | None = None
    resumed: int = 0  # predictions taken from the cache of an earlier, interrupted run
    protocol: str = "task"  # the task's answer protocol
    listed: tuple[str, ...] = ()  # the task's own metrics, in its order (the headline's)
    continuation: str = ""  # the task's continuation (letter | text)
    logged: dict[str, float] = field(default_factory=dict)  # every metric as MLflow has it
    pending: Any = field(default=None, repr=False)  # what its judges grade (`judging.PendingJudgement`)
    fingerprint: str = ""  # the cell's (`PreparedCell.fingerprint`)

    def __post_init__(self) -> None:
        # MLflow gets the same names in every arm, retrieval measures NaN in a closed-book one;
        # Python gets what the cell measured (`logged` keeps the rest)
        self.logged = self.logged or dict(self.metrics)
        unset = {keys.metric(self.task, k + ci) for k in RETRIEVAL_KEYS for ci in ("", keys.CI_LOW, keys.CI_HIGH)}
        self.metrics = {k: v for k, v in self.metrics.items() if not (k in unset and math.isnan(v))}


# -- running --------------------------------------------------------------------------------


def score_records(cfg: RunConfig, examples: Sequence[Example], records: Sequence[CellRecord]) -> TaskScores:
    """Task scores from the cell's records; predictions carry retrieved ids, prompt hashes and
    token counts."""
    from biorag.scoring.evaluate import score_task

    task = cfg.task
    has_ll = bool(records) and all(r.ll for r in records)
    has_gen = task.scoring in ("generate", "both") or not has_ll
    scores = score_task(
        task,
        examples,
        outputs=[r.output for r in records] if has_gen else None,
        loglikelihoods=[[LoglikelihoodResult(*x) for x in r.ll] for r in records] if has_ll else None,
        seed=cfg.seed,
    )
    scores.predictions = [
        replace(p, retrieved=r.retrieved, prompt_hash=r.prompt_hash, tokens=r.tokens, queries=r.queries,
                generated=r.generated)
        for p, r in zip(scores.predictions, records, strict=True)
    ]
    if has_gen and task.answer_type != "text":
        # ran into the budget (within a token: re-tokenising an output can merge a pair)
        # before an answer could be read
        per = [float(r.gen_tokens >= task.max_new_tokens - 1 and unparsed(p.parsed))
               for p, r in zip(scores.predictions, records, strict=True)]
        scores.metrics[TRUNCATED] = mean_result(TRUNCATED, per, cfg.seed, N_RESAMPLES)
        for p, v in zip(scores.predictions, per, strict=True):
            p.scores[TRUNCATED] = v
    return scores


@dataclass
class RunResult:
    experiment: str
    parent_run_id: str
    cells: list[CellResult] = field(default_factory=list)
    baseline: str = "base"
    tracking_uri: str = ""
    failures: list[CellFailure] = field(default_factory=list)  # launcher=ray: cells that failed alone


def run_experiment(
    overrides: Sequence[str],
    *,
    loader: Callable[[ModelConfig, str | None], Generator] | None = None,
    on_cell_done: Callable[[CellResult], None] | None = None,
) -> RunResult:
    """Plan the cells, check the MLflow store and model servers, run every cell in one parent run."""
    planned = plan_run(overrides)
    experiment, cells, baseline = planned.experiment, planned.cells, planned.baseline
    for note in planned.notes:  # an arm-part override kept off the arms without that part
        log.info("%s", note)
    require_runnable(cells)  # every problem that shows without a model, listed at once
    uri = check_store(tracking_uri())  # before any model is loaded
    if cells[0].launcher.kind == "ray":  # a store on this disk for cells on other machines: refused
        from biorag.experiment.ray_cluster import check_ray_launch

        check_ray_launch(cells[0].launcher, uri)
    check_servers(cells)  # remote models answer, before any index is built or run opened
    check_judges(cells)  # the judges exist and a remote judge answers, before any prediction
    if loader is None:
        from biorag.models.loading import load_generator as loader
    models = LoadedModels(loader)
    prepared = [prepare(c) for c in cells]  # indexes and adapters, before the parent run opens
    # a run named on purpose (run_name=) is its own parent run, not the unnamed one's
    named = [cells[0].run_name] if cells[0].run_name else []
    invocation = hashlib.sha256(
        json.dumps([experiment, [p.fingerprint for p in prepared], *named]).encode()
    ).hexdigest()[:16]
    # an identical invocation running already: wait for it, then continue its runs (all
    # predictions cached), so the store gets no second parent or duplicate children
    with artifact_lock(invocation_lock_folder(uri, cache_root(cells[0])) / invocation, "experiment run"):
        try:
            return _run_invocation(experiment, cells, prepared, baseline, invocation, uri, overrides,
                                   models, on_cell_done, planned.run_name())
        finally:
            models.close()


def _run_invocation(experiment: str, cells: Sequence[RunConfig], prepared: Sequence[PreparedCell],
                    baseline: str, invocation: str, uri: str, overrides: Sequence[str],
                    models: LoadedModels, on_cell_done: Callable[[CellResult], None] | None,
                    run_name: str) -> RunResult:
    tracker = Tracker(experiment, invocation, uri)
    names = sorted({cell_name(c.arm.name, c.model.name, c.task.name, c.task.protocol) for c in cells})
    parent_params = {"cells": len(cells), "arms": ",".join(sorted({c.arm.name for c in cells})),
                     "models": ",".join(sorted({c.model.name for c in cells})),
                     "tasks": ",".join(sorted({c.task.name for c in cells})),
                     "overrides": " ".join(overrides) or "(none)"}
    sha = git_sha(Path(__file__).parent)
    result = RunResult(experiment, "", baseline=baseline, tracking_uri=uri)
    parent_tags = {keys.KIND: keys.KIND_STUDY, keys.GIT_SHA: sha, keys.BASELINE_ARM: baseline}
    eta = progress.WorkClock([len(p.examples) for p in prepared])
    with tracker.parent(run_name, parent_params, parent_tags) as parent_id:
        result.parent_run_id = parent_id
        log_json_artifact({"overrides": [scrub(o) for o in overrides], "cells": names}, keys.INVOCATION_FILE)
        if cells[0].launcher.kind == "ray":  # predictions on Ray, scored and logged here
            from biorag.experiment.launch import run_on_ray

            def log_one(cfg: RunConfig, prep: PreparedCell, got: Predicted) -> CellResult:
                name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
                with tracker.child(name, prep.fingerprint, cell_params(cfg), cell_tags(cfg, prep, sha)) as run_id:
                    return log_cell(cfg, prep, run_id, got)

            run_on_ray(cells, prepared, result, log_one, on_cell_done)
        for i, (cfg, prep) in enumerate(zip(cells, prepared, strict=True)):
            if cfg.launcher.kind != "local":
                break
            name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
            log.info("cell %d of %d: %s%s", i + 1, len(cells), name, eta.remaining(i))
            started = time.perf_counter()
            cell = run_cell(cfg, prep, models, tracker, sha)
            eta.done(cell.n - cell.resumed, time.perf_counter() - started)
            result.cells.append(cell)
            if on_cell_done:
                on_cell_done(cell)
        failed = {f.fingerprint for f in result.failures}  # launcher=ray: cells that failed alone
        done = [p for p in prepared if p.fingerprint not in failed]
        waiting = [(c, p) for c, p in zip(result.cells, done, strict=True) if c.pending is not None]
        if waiting:
            _judge_cells(waiting, models, tracker, sha)
    return result


def _judge_cells(waiting: Sequence[tuple[CellResult, PreparedCell]], models: LoadedModels, tracker: Tracker,
                 sha: str) -> None:
    """The judging stage: every judge over the cells it is set on, into their child runs."""
    from biorag.experiment.judging import (
        VERDICTS_FILE,
        judge_all,
        judge_params,
        judged_metrics,
        verdicts_artifact,
    )
    from biorag.tracking.runs import log_new_params

    configs = judge_all([c.pending for c, _ in waiting], models)
    for cell, prep in waiting:
        c = cell.pending
        metrics, tags = judged_metrics(c, configs)
        with tracker.child(cell.name, prep.fingerprint, cell_params(c.cfg), cell_tags(c.cfg, prep, sha)):
            log_metrics(metrics)
            set_tags(tags)
            log_new_params(judge_params(configs, [n for n in configs if n in c.judged]))
            log_json_artifact(verdicts_artifact(c), VERDICTS_FILE)
            _log_predictions(c.predictions)
        cell.logged.update(metrics)
        cell.metrics.update({k: v for k, v in metrics.items() if not math.isnan(v)})
        cell.pending = None


def cell_tags(cfg: RunConfig, prep: PreparedCell, sha: str) -> dict[str, str]:
    return {
        keys.ARM: cfg.arm.name, keys.MODEL: cfg.model.name, keys.MODEL_FAMILY: cfg.model.family,
        keys.TASK: cfg.task.name, keys.PROTOCOL: cfg.task.protocol, keys.DECODING: decoding(cfg.task, cfg.seed),
        keys.GIT_SHA: sha, keys.INDEX_FINGERPRINT: prep.index_fingerprint,
        keys.ADAPTER_FINGERPRINT: prep.adapter_fingerprint, keys.KIND: keys.KIND_CELL,
    }


def run_cell(cfg: RunConfig, prep: PreparedCell, models: LoadedModels, tracker: Tracker, sha: str) -> CellResult:
    name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
    with tracker.child(name, prep.fingerprint, cell_params(cfg), cell_tags(cfg, prep, sha)) as run_id:
        return log_cell(cfg, prep, run_id, predict_cell(cfg, prep, models))


def cell_config_yaml(cfg: RunConfig) -> str:
    """A cell's resolved config as logged (`config.yaml`): without the launcher, which is the
    run's, not the cell's."""
    from omegaconf import OmegaConf

    from biorag.config import to_yaml

    node = OmegaConf.to_container(OmegaConf.structured(cfg))
    node.pop("launcher", None)
    return to_yaml(node)


def log_cell(cfg: RunConfig, prep: PreparedCell, run_id: str, got: Predicted) -> CellResult:
    """The scoring and logging part of a cell, into its active child run."""
    name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
    examples = prep.examples
    records, resumed, wall, retriever = got.records, got.resumed, got.wall, got.retriever
    scores = score_records(cfg, examples, records)
    if retriever is not None:
        _add_retrieval(cfg, examples, records, scores, retriever)
    _add_methods(cfg, examples, records, scores)
    metrics = cell_metrics(cfg.task.name, scores, records)
    judging = pending(cfg, examples, scores.predictions, records, retriever)
    log_metrics({**metrics, keys.metric(cfg.task.name, keys.WALL_SECONDS_THIS_SESSION): wall})
    set_tags({keys.RESUMED_PREDICTIONS: resumed,
              keys.SKIPPED_METRICS: json.dumps(scores.skipped) if scores.skipped else "none",
              **keys.versions(got.info)})
    log_text_artifact(scrub(cell_config_yaml(cfg)), keys.CONFIG_FILE)
    _log_predictions(scores.predictions)
    if prep.index_manifest is not None and prep.retriever is not None:
        from biorag.contamination import audit_cell_index

        log_json_artifact(prep.index_manifest.to_dict(), keys.INDEX_MANIFEST_FILE)
        members = getattr(prep.retriever.index, "members", [prep.retriever.index])
        audits = [audit_cell_index(ix.path, cfg.task.name, examples) for ix in members]
        # contamination of the index with this task (of a fused set: its worst member)
        set_tags(max(audits, key=lambda a: a.tasks[0].share).tags())
        log_json_artifact(audits[0].to_dict() if len(audits) == 1 else
                          {ix.name: a.to_dict() for ix, a in zip(members, audits, strict=True)},
                          keys.CONTAMINATION_FILE)
    if prep.adapter_manifest:
        log_json_artifact(prep.adapter_manifest, keys.ADAPTER_MANIFEST_FILE)
    return CellResult(name, cfg.arm.name, cfg.model.name, cfg.task.name, metrics, len(examples),
                      run_id, resumed, cfg.task.protocol, tuple(cfg.task.metrics), cfg.task.continuation,
                      pending=judging, fingerprint=prep.fingerprint)


def add_retrieval_scores(examples: Sequence[Example], records: Sequence[CellRecord], scores: TaskScores,
                         retriever: CachedRetriever, seed: int) -> dict[str, str]:
    """Retrieval measures into the cell's metrics and per-example scores; its TREC run and
    qrels files {name: text}."""
    found, files = cell_retrieval(examples, records, retriever, seed)
    scores.metrics.update(found.metrics)
    for p in scores.predictions:
        p.scores.update({k: v[p.example_id] for k, v in found.per_example.items() if p.example_id in v})
    return files


def _add_retrieval(cfg: RunConfig, examples: Sequence[Example], records: Sequence[CellRecord],
                   scores: TaskScores, retriever: CachedRetriever) -> None:
    """Retrieval measures into the cell's metrics and per-example scores; TREC files and
    the retrieval cache's reuse onto the child run."""
    for name, text in add_retrieval_scores(examples, records, scores, retriever, cfg.seed).items():
        log_text_artifact(text, name)
    share = source_share(retriever.index, [cid for r in records for cid in r.retrieved])
    if share:
        log.info("%s: passages in the prompts by index: %s", cfg.arm.name,
                 ", ".join(f"{name} {v:.0%}" for name, v in share.items()))
    cut = sum(r.query_cut for r in records)
    if cut:
        log.info("%s: %d of %d queries were longer than the query encoder reads and were cut",
                 cfg.arm.name, cut, len(records))
    set_tags({keys.RETRIEVAL_CACHE: f"{retriever.reused} reused, {retriever.searched} searched",
              keys.RETRIEVER_FINGERPRINT: retriever.fingerprint, keys.RETRIEVAL_QUERY: cfg.arm.retriever.query,
              keys.RETRIEVAL_SOURCES: json.dumps({k: round(v, 4) for k, v in share.items()}) if share else "single"})


def _add_methods(cfg: RunConfig, examples: Sequence[Example], records: Sequence[CellRecord],
                 scores: TaskScores) -> None:
    """The RAG methods' measures (filter kept, evidence before the filter, generated passages)."""
    if cfg.arm.retriever is None or not cfg.arm.retriever.methods():
        return
    from biorag.augment.measures import method_scores

    found, per = method_scores(examples, records, cfg.seed)
    scores.metrics.update(found)
    for p in scores.predictions:
        p.scores.update({k: v[p.example_id] for k, v in per.items() if p.example_id in v})


def cell_metrics(task: str, scores: TaskScores, records: Sequence[CellRecord]) -> dict[str, float]:
    """Every metric with its interval, and the cost of the cell, as `<task>/<key>`."""
    out: dict[str, float] = {}
    nan = float("nan")
    found = {k: (m.value, m.lo, m.hi) for k, m in scores.metrics.items()}
    # the same names in every arm: retrieval measures are NaN where nothing was retrieved
    for key, (value, lo, hi) in {**dict.fromkeys(RETRIEVAL_KEYS, (nan, nan, nan)), **found}.items():
        out[keys.metric(task, key)] = value
        out[keys.metric(task, key + keys.CI_LOW)] = lo
        out[keys.metric(task, key + keys.CI_HIGH)] = hi
    model_s = sum(r.model_s for r in records)
    retrieval_s = sum(r.retrieval_s for r in records)
    method_s = sum(r.method_s for r in records)
    reranked = [r.rerank_s for r in records if r.rerank_s is not None]
    tokens = sum(r.tokens + r.method_tokens for r in records)
    n = len(records)
    cost = {
        keys.N: n,
        keys.EVAL_SECONDS: model_s + retrieval_s + method_s,
        keys.EXAMPLES_PER_S: n / max(model_s + retrieval_s + method_s, 1e-9),
        keys.TOKENS: tokens,
        keys.TOKENS_PER_S: tokens / max(model_s, 1e-9),
        keys.RETRIEVAL_LATENCY_MS: 1000 * retrieval_s / max(n, 1),
        # NaN without a rerank stage (closed-book, first stage only); part of the latency above
        keys.RERANK_SECONDS: sum(reranked) if reranked else nan,
        keys.QUERIES_CUT: sum(r.query_cut for r in records),
        keys.TRUNCATED_PROMPTS: sum(r.truncated for r in records),
        keys.GENERATED_TOKENS: sum(r.gen_tokens for r in records) / max(n, 1),
        # the RAG methods' model calls, tokens and seconds per item (0 for an arm without any)
        keys.METHOD_CALLS: sum(r.method_calls for r in records) / max(n, 1),
        keys.METHOD_TOKENS: sum(r.method_tokens for r in records) / max(n, 1),
        keys.METHOD_SECONDS: method_s / max(n, 1),
        keys.QUERIES: sum(len(r.queries) or (1 if r.ranked else 0) for r in records) / max(n, 1),
    }
    out.update({keys.metric(task, k): v for k, v in cost.items()})
    return out


def _log_predictions(predictions: Sequence[Prediction]) -> None:
    """One predictions table per child run (shown as a table in the UI) and the full JSONL
    beside it, with every per-example score (the report's paired tests read it)."""
    import pandas as pd

    def _s(x: Any) -> str:
        return " ".join(x) if isinstance(x, tuple | list) else ("" if x is None else str(x))

    rows = []
    for p in predictions:
        correct = next((v for k, v in p.scores.items() if k in ("accuracy", "accuracy_ll")), None)
        rows.append({
            "example_id": p.example_id, "prompt_hash": p.prompt_hash, "retrieved": _s(p.retrieved),
            "output": p.output, "parsed": answer_text(p.parsed), "gold": answer_text(p.gold),
            "correct": correct if correct is not None else float("nan"),
            "unparsed": p.scores.get(UNPARSED, float("nan")),
            **({"queries": " | ".join(p.queries)} if p.queries else {}),
            **({"generated": " | ".join(p.generated)} if p.generated else {}),
        })
    log_table(pd.DataFrame(rows), keys.PREDICTIONS_TABLE)
    log_text_artifact(predictions_jsonl(predictions), keys.PREDICTIONS_FILE)


def predictions_jsonl(predictions: Sequence[Prediction]) -> str:
    """A cell's `predictions.jsonl`: one `Prediction.to_json` line per example."""
    return "\n".join(p.to_json() for p in predictions) + "\n"
