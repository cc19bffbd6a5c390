"""Every tag, param, metric and artifact name biorag writes to MLflow, in one place.

The writers (the experiment runner, `biorag finetune`, the contamination audit) and the
reader (`biorag report`) import these instead of repeating strings, so a renamed key cannot
leave a report reading nothing.
"""

from __future__ import annotations

# -- tags -----------------------------------------------------------------------------------
KIND = "biorag.kind"  # what a run is: one of the KIND_* values
KIND_STUDY = "study"  # the parent run of one `biorag experiment run`
KIND_CELL = "cell"  # a child run: one (arm, model, task)
KIND_FINETUNE = "finetune"  # a `biorag finetune` run
INVOCATION = "biorag.invocation"  # finds a parent run again when its invocation is rerun
CELL = "biorag.cell"  # a cell's fingerprint: finds its child run again on resume
ARM = "arm"
MODEL = "model"
MODEL_FAMILY = "model_family"  # general | biomedical
TASK = "task"
DECODING = "decoding"  # every backend decodes greedily: "greedy (temperature 0)"
PROTOCOL = "protocol"  # the task's answer protocol (task | loglikelihood | direct | cot | medrag)
BASELINE_ARM = "baseline_arm"  # on a parent: the arm the others are compared with
GIT_SHA = "git_sha"
INDEX_FINGERPRINT = "index_fingerprint"
ADAPTER_FINGERPRINT = "adapter_fingerprint"
RESUMED_PREDICTIONS = "resumed_predictions"  # predictions taken from an interrupted run's cache
RETRIEVAL_CACHE = "retrieval_cache"  # a rag cell: queries reused from the retrieval cache / searched
RETRIEVER_FINGERPRINT = "retriever_fingerprint"  # index + mode + settings + query embedder
RETRIEVAL_QUERY = "retrieval_query"  # what a rag cell searched with (arm.retriever.query)
RETRIEVAL_SOURCES = "retrieval_sources"  # fused indexes: each one's share of the prompts' passages
SKIPPED_METRICS = "skipped_metrics"  # metrics whose optional package is missing, and why
VERSIONS = "versions."  # prefix: the model backend's library versions (`Generator.info`)
# on a parent run of `launcher=ray`: where its cells ran (never on a child: a cell is the same
# cell wherever it ran)
LAUNCHER = "launcher"  # ray (a local run has no launcher tags)
LAUNCHER_ADDRESS = "launcher.address"  # the Ray cluster, or "local"
LAUNCHER_CELLS = "launcher.cells"  # JSON: each cell's GPUs, CPUs and shards, and why
CLUSTER_NODES = "cluster.nodes"
CLUSTER_GPUS = "cluster.gpus"
CLUSTER_CPUS = "cluster.cpus"
FAILED_CELLS = "failed_cells"  # JSON {cell: error} of the cells that failed alone
# a fine-tune run
ADAPTER = "adapter"
ADAPTER_FINGERPRINT_FINETUNE = "biorag.adapter_fingerprint"
DATA = "data"
OBJECTIVE = "objective"
# the contamination audit of a rag cell's index (tags, not metrics: closed-book arms have none)
CONTAMINATION = "contamination."  # prefix: share, items, audited, ngram
CONTAMINATION_METRICS = "contamination"  # a fine-tune's audit: contamination/<task>/share, ...
# MLflow's own
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

# -- params ---------------------------------------------------------------------------------
SEED = "seed"
MODEL_COUNTERPART = "model.counterpart"  # a model's general/biomedical counterpart
MODEL_FAMILY_PARAM = "model.family"
ARM_RETRIEVAL = "arm.retrieval"  # "True" when the arm retrieves
ARM_RETRIEVER = "arm.retriever."  # prefix: the arm's retriever settings
ARM_ADAPTER = "arm.adapter"  # the arm's adapter name (None: no fine-tune)

# -- metrics: `<task>/<key>`, each quality metric with `_ci_low` / `_ci_high` ---------------
CI_LOW = "_ci_low"
CI_HIGH = "_ci_high"
N = "n"
EVAL_SECONDS = "eval_seconds"
EXAMPLES_PER_S = "examples_per_s"
TOKENS = "tokens"
TOKENS_PER_S = "tokens_per_s"
RETRIEVAL_LATENCY_MS = "retrieval_latency_ms"
RERANK_SECONDS = "rerank_seconds"  # a rerank stage's time in the cell (NaN without one)
QUERIES_CUT = "queries_cut"  # queries longer than the query encoder reads
TRUNCATED_PROMPTS = "truncated_prompts"
GENERATED_TOKENS = "generated_tokens"  # per item, of generated outputs
WALL_SECONDS_THIS_SESSION = "wall_seconds_this_session"
# RAG methods (biorag.augment): their model calls per item (part of eval_seconds and tokens)
METHOD_CALLS = "method_calls"
METHOD_TOKENS = "method_tokens"
METHOD_SECONDS = "method_seconds"
FILTER_KEPT = "filter_kept"  # passages kept of those judged, per item
QUERIES = "queries_per_item"  # queries searched per item (rewrites, follow-ups)
COST = (EVAL_SECONDS, TOKENS)  # per-task metrics that describe cost, not quality
# a fine-tune run's history
TRAIN_LOSS = "train/loss"
TRAIN_LEARNING_RATE = "train/learning_rate"
TRAIN_GRAD_NORM = "train/grad_norm"
EVAL_LOSS = "eval/loss"

# -- artifacts ------------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
PREDICTIONS_TABLE = "predictions.json"  # mlflow.log_table: one per child run
PREDICTIONS_FILE = "predictions.jsonl"
JUDGEMENTS_FILE = "judgements.json"  # a judged cell: every judge's verdicts
ARENA_PREFIX = "arena-"  # a study's parent run: arena-<judge>.json, the pairwise arena
JUDGE_TAG = "judge"  # tags judges, judge.<name>.check, judge.agreement.<level>, ...  # every prediction with its per-example scores
INDEX_MANIFEST_FILE = "index_manifest.json"
ADAPTER_MANIFEST_FILE = "adapter_manifest.json"
CONTAMINATION_FILE = "contamination.json"
INVOCATION_FILE = "invocation.json"
RETRIEVAL_RUN_FILE = "run.trec"  # a rag cell's ranked documents per example (TREC run)
QRELS_FILE = "qrels.trec"  # its examples' gold evidence (TREC qrels)
ADAPTER_DIR = "adapter"  # a fine-tune run's copy of the adapter folder
REPORT_DIR = "report"  # `biorag report` logs its folder here on the parent run


def metric(task: str, key: str) -> str:
    """The logged name of a task's metric: `<task>/<key>`."""
    return f"{task}/{key}"


def task_label(task: str, protocol: str = "task") -> str:
    """A task as cells and reports name it: `medqa`, or `medqa@cot` under another protocol."""
    return task if protocol == "task" else f"{task}@{protocol}"


def split_metric(name: str) -> tuple[str, str]:
    """`<task>/<key>` back into (task, key)."""
    task, _, key = name.partition("/")
    return task, key


def is_interval(name: str) -> bool:
    return name.endswith((CI_LOW, CI_HIGH))


def versions(info: dict[str, str]) -> dict[str, str]:
    """A backend's `info` as `versions.*` tags."""
    return {f"{VERSIONS}{k}": str(v) for k, v in info.items()}
