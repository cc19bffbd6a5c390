"""Arms, studies and the resolved config of one experiment cell.

An arm is a way of answering: `retriever: null` means closed-book, `adapter: null` means no
fine-tune. A cell is one (arm, model, task); a study sweeps arms x models x tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, ListConfig

from biorag.atomic import check_name
from biorag.errors import ConfigError
from biorag.indexing.index import SEARCH_SETTINGS
from biorag.models.config import ModelConfig
from biorag.retrieval.evidence import EXCLUDE_MODES
from biorag.tasks.config import TaskConfig
from biorag.tracking.keys import task_label

RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
QUERY_MODES = ("query", "input", "question", "question_options")


@dataclass
class RetrieverConfig:
    """Where an arm's passages come from."""

    # an index name or folder, or a corpus (its index <corpus>-<embedder>, built if missing);
    # a list fuses the indexes by RRF, a corpus group (medcorp) standing for its parts;
    # null: <task corpus>-<embedder>
    index: Any = None
    corpus: str | None = None  # corpus config to build the index from; null: the task's corpus
    embedder: str = "minilm"  # embedder config (used when the index must be built)
    index_type: str = "flat"  # index config (used when the index must be built)
    build_if_missing: bool = True  # build the index when it does not exist yet
    mode: str = "dense"  # dense | bm25 | hybrid
    k: int = 5  # passages retrieved per example
    rrf_k: int = 60  # reciprocal rank fusion constant (hybrid, several indexes; MedRAG: 100)
    fetch_k: int = 50  # what each fused retriever fetches (hybrid, several indexes)
    rerank: str | None = None  # a reranker config (experiments/reranker/); null: no rerank stage
    candidates: int = 50  # first-stage hits the reranker sees; the best k go on
    # what is searched with: query (the item's search text, else its input) | input |
    # question (the question alone, MIRAGE's question-only retrieval) | question_options |
    # metadata.<field>
    query: str = "query"
    # gold_source: leave out of each item's hits the documents it was made from (PubMedQA's
    # own abstract, an embedded item's own term or code) and fill k from the rest
    exclude: str = "none"
    # search-time settings (null: as the index was built): IVF lists visited, HNSW breadth,
    # IVF-PQ refine shortlist factor
    nprobe: int | None = None
    ef_search: int | None = None
    k_factor: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in RETRIEVAL_MODES:
            raise ConfigError(f"retriever.mode must be one of {', '.join(RETRIEVAL_MODES)}, not {self.mode!r}")
        if self.exclude not in EXCLUDE_MODES:
            raise ConfigError(f"retriever.exclude must be one of {', '.join(EXCLUDE_MODES)}, not {self.exclude!r}")
        for key in ("k", "fetch_k", "candidates", "rrf_k"):
            if getattr(self, key) < 1:
                raise ConfigError(f"retriever.{key} must be at least 1, not {getattr(self, key)}")
        if not (self.query in QUERY_MODES or self.query.startswith("metadata.")):
            raise ConfigError(f"retriever.query must be one of {', '.join(QUERY_MODES)} or "
                              f"metadata.<field>, not {self.query!r}")
        names = self.index if isinstance(self.index, list | tuple | ListConfig) else [self.index]
        if not all(isinstance(n, str) and n for n in names if self.index is not None):
            raise ConfigError(f"retriever.index must be a name, a folder or a list of them, not {self.index!r}")
        for key in SEARCH_SETTINGS:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"retriever.{key} must be at least 1 (or null: as built), not {value}")


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

    def __post_init__(self) -> None:
        if self.name != "???":
            check_name(self.name, "study name")


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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {self.batch_size}")



def cell_name(arm: str, model: str, task: str, protocol: str = "task") -> str:
    """`rag/smollm2/medqa`, and `rag/smollm2/medqa@cot` under another answer protocol."""
    return f"{arm}/{model}/{task_label(task, protocol)}"



def describe(obj: Any) -> str:
    return getattr(obj, "description", "") or ""
