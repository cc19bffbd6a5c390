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
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from biorag import progress
from biorag.arms import ArmConfig, RetrieverConfig, cell_name
from biorag.errors import BioragError
from biorag.models.base import Generator, LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.tasks.config import TaskConfig
from biorag.types import Example, Hit

log = logging.getLogger(__name__)

CACHE_ENV = "BIORAG_CACHE_DIR"
# descriptive fields: changing them does not change a cell's predictions
_DESCRIPTIVE = ("description", "expected_format")


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


# -- planning -------------------------------------------------------------------------------


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """Comma lists sweep, Hydra-multirun style: `arm=base,rag task=a,b` gives four override
    lists. Parsing is Hydra's own (its override grammar), not ours."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


def plan(overrides: Sequence[str]) -> tuple[str, list[RunConfig], str]:
    """The experiment name, the cells to run, and the baseline arm, from CLI overrides.

    `study=NAME` sweeps the study's arms x models x tasks; other overrides apply to every cell.
    """
    from biorag.config import compose, to_typed

    overrides = list(overrides)
    study_over = [o for o in overrides if o.split("=", 1)[0] == "study"]
    rest = [o for o in overrides if o.split("=", 1)[0] != "study"]
    baseline = "base"
    experiment = None
    if study_over:
        study = load_study(study_over[-1].split("=", 1)[1])
        experiment = study.experiment or f"biorag-{study.name}"
        baseline = study.baseline_arm
        grid = [
            [f"arm={a}", f"model={m}", f"task={t}", *study.overrides]
            for m in study.models for t in study.tasks for a in study.arms
        ]
    else:
        grid = [[]]
    cells: list[RunConfig] = []
    for base in grid:
        for combo in expand_sweeps([*base, *rest]):
            # arm.retriever.* overrides apply to the retrieval arms of a sweep; a closed-book
            # arm (retriever: null) has nothing to override
            retr = [o for o in combo if o.lstrip("+~").startswith("arm.retriever.")]
            if retr and compose("run", [o for o in combo if o not in retr]).arm.retriever is None:
                combo = [o for o in combo if o not in retr]
            cfg = to_typed(compose("run", combo), RunConfig, where="run config")
            if experiment and not any(o.startswith("experiment=") for o in rest):
                cfg.experiment = experiment
            cells.append(cfg)
    return cells[0].experiment, cells, baseline


def load_study(name: str) -> Any:
    from omegaconf import OmegaConf

    from biorag.arms import StudyConfig
    from biorag.config import config_dir, options, to_typed
    from biorag.errors import ConfigError, did_you_mean

    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name not in options("study"):
            raise ConfigError(did_you_mean(name, options("study"), what="study"))
        path = config_dir() / "study" / f"{name}.yaml"
    return to_typed(OmegaConf.load(path), StudyConfig, where=str(path))


# -- fingerprints ---------------------------------------------------------------------------


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
    from biorag.config import flatten

    arm = asdict(cfg.arm)
    arm["retrieval"] = cfg.arm.retriever is not None
    if cfg.arm.retriever is None:
        arm["retriever"] = {f.name: None for f in fields(RetrieverConfig)}
    out = flatten({"arm": arm, "model": asdict(cfg.model), "task": asdict(cfg.task)})
    out.update({"seed": cfg.seed, "batch_size": cfg.batch_size, "experiment": cfg.experiment})
    return out


# -- resources: index, adapter, model -------------------------------------------------------


def ensure_index(cfg: RunConfig) -> tuple[Any | None, dict[str, Any] | None]:
    """The retriever of a rag arm (building its index when missing), or (None, None)."""
    r = cfg.arm.retriever
    if r is None:
        return None, None
    from biorag.index import MANIFEST_FILE, index_root
    from biorag.retrieval import open_retriever

    corpus = r.corpus or cfg.task.corpus
    if not r.index and not corpus:
        raise BioragError(
            f"arm '{cfg.arm.name}' retrieves, but task '{cfg.task.name}' names no corpus: set "
            "arm.retriever.index=<index> or arm.retriever.corpus=<corpus>"
        )
    name = r.index or (f"{corpus}-{r.embedder}" + ("" if r.index_type == "flat" else f"-{r.index_type}"))
    root = index_root(cfg.index_root)
    path = Path(name) if (Path(name) / MANIFEST_FILE).is_file() else root / name
    if not (path / MANIFEST_FILE).is_file():
        if not (r.build_if_missing and corpus):
            raise BioragError(
                f"index '{name}' of arm '{cfg.arm.name}' does not exist in {root}/. Build it with: "
                f"biorag index build corpus={corpus or '<corpus>'} embedder={r.embedder} "
                f"index={r.index_type} name={name}"
            )
        from biorag.build import build_index, load_build_config

        log.info("index %s is missing: building it from corpus %s", name, corpus)
        overrides = [f"corpus={corpus}", f"embedder={r.embedder}", f"index={r.index_type}", f"name={name}"]
        if cfg.index_root:
            overrides.append(f"root={cfg.index_root}")
        build_index(load_build_config(overrides))
    retriever = open_retriever(path, r.mode, rrf_k=r.rrf_k)
    return retriever, retriever.index.manifest


def resolve_adapter(cfg: RunConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The adapter folder of a lora arm and its manifest (None, None without an adapter)."""
    if not cfg.arm.adapter:
        return None, None
    path = Path(cfg.arm.adapter)
    if not path.is_dir():
        path = Path(cfg.adapters_dir) / cfg.arm.adapter
    if not path.is_dir():
        raise BioragError(
            f"adapter '{cfg.arm.adapter}' of arm '{cfg.arm.name}' not found (looked in "
            f"{cfg.adapters_dir}/). Train it with: biorag finetune model={cfg.model.name} name={cfg.arm.adapter}"
        )
    from biorag.adapters import check_base, read_manifest

    manifest = read_manifest(path)
    check_base(path, manifest, cfg.model, cfg.arm.name)  # another base model: error naming both
    return str(path), manifest


class _GeneratorCache:
    """Keeps the last loaded model, so cells of one model (base, rag) load it once."""

    def __init__(self, loader: Callable[[ModelConfig, str | None], Generator]) -> None:
        self._loader = loader
        self._key: str | None = None
        self._gen: Generator | None = None

    def get(self, cfg: ModelConfig, adapter: str | None) -> Generator:
        key = json.dumps([asdict(cfg), adapter], sort_keys=True, default=str)
        if key != self._key:
            self._gen = None  # free the previous model before loading the next
            self._gen = self._loader(cfg, adapter)
            self._key = key
        assert self._gen is not None
        return self._gen


# -- prediction cache -----------------------------------------------------------------------


class PredictionCache:
    """Append-only JSONL of raw model outputs per example; the unit a killed run resumes from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with self.path.open() as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short: redo that example
                    break
                done[rec["id"]] = rec
        return done

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or ".biorag-cache")


# -- running --------------------------------------------------------------------------------


def _batches(items: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict(
    cfg: RunConfig,
    examples: Sequence[Example],
    generator: Generator,
    retriever: Any | None,
    cache: PredictionCache,
) -> tuple[list[dict[str, Any]], int]:
    """Raw outputs for every example (from the cache where present), in example order."""
    from biorag.prompting import build_prompt, mcq_continuations

    done = cache.load()
    resumed = sum(1 for e in examples if e.id in done)
    todo = [e for e in examples if e.id not in done]
    task = cfg.task
    use_ll = task.scoring in ("loglikelihood", "both") and task.type in ("mcq", "longdoc")
    use_gen = task.scoring in ("generate", "both") or not use_ll
    k = cfg.arm.retriever.k if cfg.arm.retriever else 0
    with progress.bar(f"{cell_name(cfg.arm.name, cfg.model.name, task.name)}", total=len(examples),
                      completed=resumed) as bar:
        for batch in _batches(todo, cfg.batch_size):
            t0 = time.perf_counter()
            hits: list[list[Hit]] = [[] for _ in batch]
            if retriever is not None:
                field_name = cfg.arm.retriever.query if cfg.arm.retriever else "query"
                queries = [(getattr(e, field_name, "") or e.input) for e in batch]
                hits = retriever.retrieve_batch(queries, k)
            t_retrieval = time.perf_counter() - t0
            prompts = [build_prompt(task, e, h, generator.count_tokens) for e, h in zip(batch, hits, strict=True)]
            texts = [generator.render_chat(p.messages) for p in prompts]
            t1 = time.perf_counter()
            lls: list[list[LoglikelihoodResult]] = [[] for _ in batch]
            if use_ll:
                requests, owners = [], []
                for i, (e, text) in enumerate(zip(batch, texts, strict=True)):
                    for cont in mcq_continuations(task, e):
                        requests.append((text, cont))
                        owners.append(i)
                for i, res in zip(owners, generator.loglikelihood(requests), strict=True):
                    lls[i].append(res)
            outputs = [""] * len(batch)
            if use_gen:
                outputs = generator.generate(texts, max_new_tokens=task.max_new_tokens, stop=task.stop or None)
            t_model = time.perf_counter() - t1
            records = []
            for e, p, text, out, ll in zip(batch, prompts, texts, outputs, lls, strict=True):
                records.append({
                    "id": e.id,
                    "prompt_hash": p.hash,
                    "retrieved": list(p.hit_ids),
                    "output": out,
                    "ll": [[r.logprob, r.n_tokens, r.n_chars, r.is_greedy] for r in ll],
                    "tokens": generator.count_tokens(text) + (generator.count_tokens(out) if out else 0),
                    "retrieval_s": t_retrieval / len(batch),
                    "model_s": t_model / len(batch),
                    "truncated": p.truncated,
                })
            cache.append(records)
            for r in records:
                done[r["id"]] = r
            bar.advance(len(batch))
    return [done[e.id] for e in examples], resumed


def score_records(cfg: RunConfig, examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> Any:
    """Task scores from raw records; predictions carry retrieved ids and prompt hashes."""
    from biorag.tasks.evaluate import score_task

    task = cfg.task
    has_ll = bool(records) and all(r["ll"] for r in records)
    has_gen = task.scoring in ("generate", "both") or not has_ll
    scores = score_task(
        task,
        examples,
        outputs=[r["output"] for r in records] if has_gen else None,
        loglikelihoods=[[LoglikelihoodResult(*x) for x in r["ll"]] for r in records] if has_ll else None,
        seed=cfg.seed,
    )
    scores.predictions = [
        replace(p, retrieved=tuple(r["retrieved"]), prompt_hash=r["prompt_hash"])
        for p, r in zip(scores.predictions, records, strict=True)
    ]
    return scores


@dataclass
class RunResult:
    experiment: str
    parent_run_id: str
    cells: list[CellResult] = field(default_factory=list)
    baseline: str = "base"
    tracking_uri: str = ""


def run_experiment(
    overrides: Sequence[str],
    *,
    loader: Callable[[ModelConfig, str | None], Generator] | None = None,
    on_cell_done: Callable[[CellResult], None] | None = None,
) -> RunResult:
    """Plan the cells, check the MLflow store, and run every cell in one parent run."""
    from biorag.tracking import Tracker, check_store, git_sha, tracking_uri

    experiment, cells, baseline = plan(overrides)
    uri = check_store(tracking_uri())  # before any model is loaded
    if loader is None:
        from biorag.models.loading import load_generator as loader
    models = _GeneratorCache(loader)
    prepared = [_prepare(c) for c in cells]  # indexes and adapters, before the parent run opens
    invocation = hashlib.sha256(
        json.dumps([experiment, [p["fingerprint"] for p in prepared]]).encode()
    ).hexdigest()[:16]
    tracker = Tracker(experiment, invocation, uri)
    names = sorted({cell_name(c.arm.name, c.model.name, c.task.name) for c in cells})
    parent_params = {"cells": len(cells), "arms": ",".join(sorted({c.arm.name for c in cells})),
                     "models": ",".join(sorted({c.model.name for c in cells})),
                     "tasks": ",".join(sorted({c.task.name for c in cells})),
                     "overrides": " ".join(overrides) or "(none)"}
    sha = git_sha(Path(__file__).parent)
    result = RunResult(experiment, "", baseline=baseline, tracking_uri=uri)
    with tracker.parent(f"{experiment}:{len(cells)} cells", parent_params,
                        {"biorag.kind": "study", "git_sha": sha, "baseline_arm": baseline}) as parent_id:
        result.parent_run_id = parent_id
        from biorag.tracking import log_json_artifact

        log_json_artifact({"overrides": list(overrides), "cells": names}, "invocation.json")
        for cfg, prep in zip(cells, prepared, strict=True):
            cell = run_cell(cfg, prep, models, tracker, sha)
            result.cells.append(cell)
            if on_cell_done:
                on_cell_done(cell)
    return result


def _prepare(cfg: RunConfig) -> dict[str, Any]:
    """Everything a cell needs that can fail on bad input (task files, indexes, adapters),
    checked for every cell before the parent run opens or any model is loaded."""
    from biorag.tasks import load_examples

    examples = load_examples(cfg.task)
    if not examples:
        raise BioragError(f"task '{cfg.task.name}' has no examples")
    retriever, index_manifest = ensure_index(cfg)
    adapter, adapter_manifest = resolve_adapter(cfg)
    index_fp = index_manifest["fingerprint"] if index_manifest else "none"
    adapter_fp = (adapter_manifest or {}).get("fingerprint", "none") if adapter else "none"
    if adapter and adapter_fp == "none":
        adapter_fp = hashlib.sha256(str(sorted(p.stat().st_size for p in Path(adapter).iterdir())).encode()).hexdigest()[:16]
    return {
        "examples": examples,
        "retriever": retriever, "index_manifest": index_manifest, "adapter": adapter,
        "adapter_manifest": adapter_manifest, "index_fp": index_fp, "adapter_fp": adapter_fp,
        "fingerprint": cell_fingerprint(cfg, index_fp, adapter_fp),
    }


def run_cell(cfg: RunConfig, prep: dict[str, Any], models: _GeneratorCache, tracker: Any, sha: str) -> CellResult:
    import mlflow

    from biorag.config import to_yaml
    from biorag.tracking import log_json_artifact, log_metrics, log_text_artifact

    name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name)
    examples = prep["examples"]
    tags = {
        "arm": cfg.arm.name, "model": cfg.model.name, "model_family": cfg.model.family,
        "task": cfg.task.name, "git_sha": sha, "index_fingerprint": prep["index_fp"],
        "adapter_fingerprint": prep["adapter_fp"], "biorag.kind": "cell",
    }
    with tracker.child(name, prep["fingerprint"], cell_params(cfg), tags) as run:
        generator = models.get(cfg.model, prep["adapter"])
        cache = PredictionCache(cache_root(cfg) / "predictions" / f"{prep['fingerprint']}.jsonl")
        started = time.perf_counter()
        records, resumed = predict(cfg, examples, generator, prep["retriever"], cache)
        wall = time.perf_counter() - started
        scores = score_records(cfg, examples, records)
        metrics = _cell_metrics(cfg.task.name, scores, records)
        log_metrics({**metrics, f"{cfg.task.name}/wall_seconds_this_session": wall})
        mlflow.set_tags({"resumed_predictions": str(resumed),
                         "skipped_metrics": json.dumps(scores.skipped) if scores.skipped else "none",
                         **{f"versions.{k}": v for k, v in getattr(generator, "versions", {}).items()}})
        log_text_artifact(to_yaml(cfg), "config.yaml")
        _log_predictions(scores.predictions, examples, records)
        if prep["index_manifest"]:
            log_json_artifact(prep["index_manifest"], "index_manifest.json")
            from biorag.audit import log_index_audit

            log_index_audit(prep["retriever"], cfg.task.name, examples)  # contamination of the index
        if prep["adapter_manifest"]:
            log_json_artifact(prep["adapter_manifest"], "adapter_manifest.json")
        return CellResult(name, cfg.arm.name, cfg.model.name, cfg.task.name, metrics, len(examples),
                          run.info.run_id, resumed)


def _cell_metrics(task: str, scores: Any, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, m in scores.metrics.items():
        out[f"{task}/{key}"] = m.value
        out[f"{task}/{key}_ci_low"] = m.lo
        out[f"{task}/{key}_ci_high"] = m.hi
    model_s = sum(r["model_s"] for r in records)
    retrieval_s = sum(r["retrieval_s"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    n = len(records)
    out.update({
        f"{task}/n": n,
        f"{task}/eval_seconds": model_s + retrieval_s,
        f"{task}/examples_per_s": n / max(model_s + retrieval_s, 1e-9),
        f"{task}/tokens": tokens,
        f"{task}/tokens_per_s": tokens / max(model_s, 1e-9),
        f"{task}/retrieval_latency_ms": 1000 * retrieval_s / max(n, 1),
        f"{task}/truncated_prompts": sum(1 for r in records if r.get("truncated")),
    })
    return out


def _log_predictions(predictions: Sequence[Any], examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> None:
    """One predictions table per child run (mlflow.log_table) and the full JSONL beside it."""
    import mlflow
    import pandas as pd

    def _s(x: Any) -> str:
        return " ".join(x) if isinstance(x, tuple | list) else ("" if x is None else str(x))

    rows = []
    for p in predictions:
        correct = next((v for k, v in p.scores.items() if k in ("accuracy", "accuracy_ll")), None)
        rows.append({
            "example_id": p.example_id, "prompt_hash": p.prompt_hash, "retrieved": _s(p.retrieved),
            "output": p.output, "parsed": _s(p.parsed), "gold": _s(p.gold),
            "correct": correct if correct is not None else float("nan"),
        })
    mlflow.log_table(pd.DataFrame(rows), artifact_file="predictions.json")
    from biorag.tracking import log_text_artifact

    lines = []
    for p, r in zip(predictions, records, strict=True):
        d = asdict(p)
        d["tokens"] = r["tokens"]
        lines.append(json.dumps(d, default=str))
    log_text_artifact("\n".join(lines) + "\n", "predictions.jsonl")
