"""`biorag report`: read a study's runs back from MLflow and compare its arms.

A study is one parent run; its child runs are the cells (arm, model, task). From each child
the report takes the logged metrics (with their 95% intervals), the per-example scores in
`predictions.jsonl`, and the index and adapter manifests (build and training seconds). It
compares every arm with the baseline arm of the same model, and each general model with its
biomedical counterpart, with paired tests on the same examples (`biorag.stats`).
Rendering (tables, plots, Markdown, HTML) is in `biorag.report_render`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.stats import PairedTest, holm, paired_test

log = logging.getLogger(__name__)

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
# per-task metrics that describe cost, not quality
COST_KEYS = ("eval_seconds", "tokens")
# an adapter manifest's training time: the first of these keys, in `results` or at the top
FINETUNE_SECONDS_KEYS = ("wall_seconds", "train_seconds", "training_seconds", "finetune_seconds")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_HEADLINE_ORDER = ("accuracy_ll_norm", "accuracy_ll", "accuracy", "macro_f1", "code_f1", "rouge1", "rougeL")


def headline_metric(metrics: dict[str, float], task: str) -> str:
    """The metric a task is summarised by: log-likelihood accuracy when present, else the first."""
    keys = [k.split("/", 1)[1] for k in metrics
            if k.startswith(f"{task}/") and not k.endswith((CI_LOW, CI_HIGH))]
    for pref in _HEADLINE_ORDER:
        if pref in keys:
            return pref
    return keys[0] if keys else "n"


# -- what a study logged --------------------------------------------------------------------


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
    predictions: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl rows
    index_manifest: dict[str, Any] | None = None
    adapter_manifest: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.arm}/{self.model}/{self.task}"

    def quality_metrics(self) -> list[str]:
        """Metric keys (without the task prefix) that were logged with a 95% interval."""
        prefix = f"{self.task}/"
        return [k[len(prefix):] for k in self.metrics
                if k.startswith(prefix) and not k.endswith((CI_LOW, CI_HIGH))
                and f"{k}{CI_LOW}" in self.metrics]

    def value(self, metric: str) -> tuple[float, float, float]:
        key = f"{self.task}/{metric}"
        return (self.metrics.get(key, math.nan), self.metrics.get(key + CI_LOW, math.nan),
                self.metrics.get(key + CI_HIGH, math.nan))

    def scores(self, metric: str) -> dict[str, float]:
        """Per-example scores of a metric, by example id (empty when not logged)."""
        return {p["example_id"]: float(p["scores"][metric]) for p in self.predictions
                if metric in p.get("scores", {})}

    def cost(self) -> dict[str, float]:
        out = {k: self.metrics.get(f"{self.task}/{k}", math.nan) for k in COST_KEYS}
        out["index_build_seconds"] = float((self.index_manifest or {}).get("build_seconds", math.nan))
        out["finetune_seconds"] = finetune_seconds(self.adapter_manifest or {})
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


def finetune_seconds(manifest: dict[str, Any]) -> float:
    """Fine-tuning time from an adapter manifest (`biorag finetune` writes results.wall_seconds)."""
    for scope in (manifest.get("results") or {}, manifest):
        for k in FINETUNE_SECONDS_KEYS:
            if isinstance(scope.get(k), int | float):
                return float(scope[k])
    return math.nan


def _client() -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    from biorag.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def _search(client: Any, experiment_ids: list[str], filter_string: str, max_results: int | None = None) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=max_results or 1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token or (max_results and len(runs) >= max_results):
            return runs


def resolve_parent(target: str | None = None) -> Any:
    """The parent run to report on: a run id (a child's id gives its parent), a study name
    (its latest run), an MLflow experiment name (its latest study run), or — with no target —
    the latest study run in the store."""
    from mlflow.exceptions import MlflowException

    from biorag.tracking import tracking_uri

    client = _client()
    study_filter = "tags.`biorag.kind` = 'study'"
    if target and _RUN_ID.match(target):
        try:
            run = client.get_run(target)
        except MlflowException:
            raise BioragError(f"no run {target} in the MLflow store {tracking_uri()}") from None
        parent = run.data.tags.get("mlflow.parentRunId")
        return client.get_run(parent) if parent else run
    if target is None:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = _search(client, ids, study_filter, 1) if ids else []
        if not runs:
            raise BioragError(f"no study runs in the MLflow store {tracking_uri()}; run one first: "
                              "biorag experiment run study=embedded")
        return runs[0]
    experiment = _experiment_of(target)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        from biorag.errors import did_you_mean

        known = [e.name for e in client.search_experiments()]
        raise BioragError(did_you_mean(experiment, known, what="MLflow experiment")
                          + f" (store {tracking_uri()})")
    runs = _search(client, [exp.experiment_id], study_filter, 1)
    if not runs:
        raise BioragError(f"MLflow experiment '{experiment}' has no study run yet")
    return runs[0]


def _experiment_of(target: str) -> str:
    """A study's MLflow experiment; anything that is not a study is taken as an experiment."""
    from biorag.config import options

    if target in options("study") or target.endswith((".yaml", ".yml")):
        from biorag.runner import load_study

        study = load_study(target)
        return study.experiment or f"biorag-{study.name}"
    return target


def load_study(target: str | None = None, baseline: str | None = None) -> Study:
    """Read a study's parent run, its child runs and their predictions from MLflow."""
    import mlflow

    from biorag.tracking import tracking_uri

    # MLflow draws a progress bar per downloaded file; the report downloads a few per cell
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = _client()
    parent = resolve_parent(target)
    exp = client.get_experiment(parent.info.experiment_id)
    children = _search(client, [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    children = [r for r in children if r.data.tags.get("biorag.kind") == "cell"]
    if not children:
        raise BioragError(f"run {parent.info.run_id} of experiment '{exp.name}' has no cell runs "
                          "(is it a study's parent run?)")
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in sorted(children, key=lambda r: r.info.start_time or 0):
            tags, params = run.data.tags, run.data.params
            names = {a.path for a in client.list_artifacts(run.info.run_id)}

            def fetch(name: str, run: Any = run, names: set[str] = names) -> str | None:
                if name not in names:
                    return None
                path = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=name, dst_path=str(Path(tmp) / run.info.run_id))
                return Path(path).read_text()

            preds = fetch("predictions.jsonl")
            if preds is None:
                log.warning("run %s (%s) has no predictions.jsonl: no paired tests for it",
                            run.info.run_id, tags.get("mlflow.runName"))
            index_m, adapter_m = fetch("index_manifest.json"), fetch("adapter_manifest.json")
            counterpart = params.get("model.counterpart")
            cells.append(Cell(
                run_id=run.info.run_id, arm=tags.get("arm", "?"), model=tags.get("model", "?"),
                task=tags.get("task", "?"),
                family=tags.get("model_family") or params.get("model.family", "general"),
                counterpart=None if counterpart in (None, "", "None", "null") else counterpart,
                seed=int(params.get("seed", 0) or 0), metrics=dict(run.data.metrics),
                predictions=[json.loads(x) for x in (preds or "").splitlines() if x.strip()],
                index_manifest=json.loads(index_m) if index_m else None,
                adapter_manifest=json.loads(adapter_m) if adapter_m else None,
            ))
    _warn_duplicates(cells)
    return Study(
        experiment=exp.name, experiment_id=exp.experiment_id, parent_run_id=parent.info.run_id,
        parent_name=parent.data.tags.get("mlflow.runName", ""),
        baseline=baseline or parent.data.tags.get("baseline_arm") or "base",
        tracking_uri=tracking_uri(), git_sha=parent.data.tags.get("git_sha", "unknown"), cells=cells,
    )


def _warn_duplicates(cells: list[Cell]) -> None:
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.name in seen:
            log.warning("two cell runs named %s (%s, %s): the report keeps the later one",
                        c.name, seen[c.name].run_id, c.run_id)
        seen[c.name] = c
    cells[:] = list(seen.values())


# -- checks: logged numbers against the logged predictions -----------------------------------


def recompute(cell: Cell) -> dict[str, tuple[float, float, float]]:
    """Metrics recomputed from the cell's per-example scores: every metric that is a mean of
    them (accuracy, exact match, ROUGE, ...), with the interval the runner's seed gives.
    Corpus-level metrics (macro-F1, micro code-F1) are not means and are left out."""
    from biorag.scoring import aggregate

    out = {}
    for metric in cell.quality_metrics():
        values = [p["scores"][metric] for p in cell.predictions if metric in p.get("scores", {})]
        if values and len(values) == len(cell.predictions) and not _is_corpus_level(metric):
            out[metric] = aggregate(values, seed=cell.seed)
    return out


def _is_corpus_level(metric: str) -> bool:
    return metric.startswith(("macro_f1", "code_"))


def check(cell: Cell, tol: float = 1e-9) -> list[str]:
    """Where a logged metric differs from the one recomputed from predictions.jsonl."""
    problems = []
    for metric, got in recompute(cell).items():
        logged = cell.value(metric)
        if any(not (abs(a - b) <= tol) for a, b in zip(logged, got, strict=True)):
            problems.append(f"{cell.name} {metric}: logged {_triple(logged)}, "
                            f"recomputed from predictions.jsonl {_triple(got)}")
    return problems


def _triple(t: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in t) + ")"


# -- comparisons ----------------------------------------------------------------------------


@dataclass
class Row:
    """One metric of one cell, with its 95% interval."""

    arm: str
    model: str
    family: str
    task: str
    metric: str
    value: float
    lo: float
    hi: float
    n: int
    run_id: str


@dataclass
class Delta:
    """`treatment - reference` on one metric of one task, with a paired test.

    kind "arm": another arm against the baseline arm of the same model; kind "family": a
    biomedical model against its general counterpart, in the same arm.
    """

    kind: str
    task: str
    metric: str
    treatment: str  # "rag/smollm2"
    reference: str  # "base/smollm2"
    model: str
    arm: str
    delta: float  # difference of the logged metric values
    lo: float  # paired-bootstrap 95% interval (NaN for corpus-level metrics)
    hi: float
    p: float
    test: str
    n: int
    b: int = 0
    c: int = 0
    headline: bool = False
    p_holm: float = math.nan  # Holm-adjusted over the report's headline comparisons


@dataclass
class Report:
    study: Study
    headline: dict[str, str]  # task -> metric
    rows: list[Row]
    deltas: list[Delta]
    costs: list[dict[str, Any]]
    problems: list[str]


def compare(reference: Cell, treatment: Cell, kind: str, headline: str) -> list[Delta]:
    """Paired deltas on every metric both cells logged with per-example scores."""
    out = []
    for metric in treatment.quality_metrics():
        if metric not in reference.quality_metrics():
            continue
        r, t = reference.scores(metric), treatment.scores(metric)
        ids = [i for i in r if i in t]
        if not ids:
            continue
        if len(ids) < max(len(r), len(t)):
            log.warning("%s vs %s: %d of %d examples are shared; the test uses those",
                        treatment.name, reference.name, len(ids), max(len(r), len(t)))
        test: PairedTest = paired_test([r[i] for i in ids], [t[i] for i in ids], seed=treatment.seed)
        corpus = _is_corpus_level(metric)
        # the logged values' difference, unless only some examples pair up (then the paired one)
        logged = treatment.value(metric)[0] - reference.value(metric)[0]
        delta = logged if corpus or len(ids) == len(r) == len(t) else test.delta
        out.append(Delta(
            kind=kind, task=treatment.task, metric=metric,
            treatment=f"{treatment.arm}/{treatment.model}", reference=f"{reference.arm}/{reference.model}",
            model=treatment.model, arm=treatment.arm, delta=delta,
            lo=math.nan if corpus else test.lo, hi=math.nan if corpus else test.hi,
            p=test.p, test=test.test, n=test.n, b=test.b, c=test.c, headline=metric == headline,
        ))
    return out


def model_pairs(cells: Sequence[Cell]) -> list[tuple[str, str]]:
    """(general, biomedical) model pairs of the study, from the models' `counterpart`s."""
    family = {c.model: c.family for c in cells}
    pairs = set()
    for c in cells:
        other = c.counterpart
        if other in family and {family[c.model], family[other]} == {"general", "biomedical"}:
            pairs.add((c.model, other) if family[c.model] == "general" else (other, c.model))
    return sorted(pairs)


def build_report(study: Study) -> Report:
    """Tables, paired deltas, cost and checks of a study's cells."""
    cells = study.cells
    tasks = list(dict.fromkeys(c.task for c in cells))
    headline = {t: headline_metric(next(c for c in cells if c.task == t).metrics, t) for t in tasks}
    rows = [Row(c.arm, c.model, c.family, c.task, m, *c.value(m), len(c.predictions), c.run_id)
            for c in cells for m in c.quality_metrics()]
    by = {(c.arm, c.model, c.task): c for c in cells}
    deltas: list[Delta] = []
    for c in cells:
        ref = by.get((study.baseline, c.model, c.task))
        if ref is not None and c.arm != study.baseline:
            deltas += compare(ref, c, "arm", headline[c.task])
    for general, bio in model_pairs(cells):
        for c in cells:
            if c.model == bio and (g := by.get((c.arm, general, c.task))) is not None:
                deltas += compare(g, c, "family", headline[c.task])
    if study.baseline not in {c.arm for c in cells}:
        log.warning("baseline arm '%s' is not in this study (arms: %s): no deltas against it",
                    study.baseline, ", ".join(sorted({c.arm for c in cells})))
    heads = [d for d in deltas if d.headline]
    for d, p in zip(heads, holm([d.p for d in heads]), strict=True):
        d.p_holm = p
    costs = [{"arm": c.arm, "model": c.model, "task": c.task, "n": len(c.predictions),
              headline[c.task]: c.value(headline[c.task])[0], **c.cost()} for c in cells]
    problems = [p for c in cells for p in check(c)]
    for p in problems:
        log.warning("metric check: %s", p)
    return Report(study, headline, rows, deltas, costs, problems)


def report_dir(study: Study, out: str | Path | None = None) -> Path:
    """`reports/<experiment>-<parent run id prefix>/` under the working directory, or `out`."""
    if out is not None:
        return Path(out)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study.experiment)
    return Path("reports") / f"{safe}-{study.parent_run_id[:8]}"


def log_to_parent(report: Report, folder: Path, artifact_path: str = "report") -> None:
    """Log the report folder as artifacts of the study's parent run."""
    client = _client()
    client.log_artifacts(report.study.parent_run_id, str(folder), artifact_path=artifact_path)
