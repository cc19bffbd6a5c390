"""How an arm retrieves, as data: the retriever spec (`arm.retriever` of an arm config), its
modes and defaults, named once, and what each example is searched with.

`biorag.retrieval.open.open_retriever` builds a retriever from a spec; the experiment runner,
`biorag retrieval eval`, `biorag index search` and RAFT data building all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig

from biorag import registry
from biorag.errors import BioragError, ConfigError, did_you_mean
from biorag.indexing.faiss_index import SEARCH_SETTINGS
from biorag.retrieval.evidence import EXCLUDE_MODES
from biorag.types import LETTERS, Example

DEFAULT_RRF_K = 60  # the reciprocal rank fusion constant of Cormack et al. (2009); MedRAG fuses with 100
DEFAULT_FETCH_K = 50  # what each fused retriever fetches (hybrid, several indexes)
DEFAULT_CANDIDATES = 50  # first-stage hits a reranker sees
QUERY_MODES = ("query", "input", "question", "question_options")
# the RAG methods that call the cell's model around retrieval (biorag.augment)
REWRITES = ("none", "hyde", "multi", "rationale")
FILTERS = ("none", "lm", "cross-encoder")
# fields added with the methods: at their defaults an arm is the plain arm it was before, so
# they leave a cell's fingerprint (and its cached predictions) as they were
METHOD_DEFAULTS = {"rewrite": "none", "rewrites": 3, "filter": "none", "filter_model": None,
                   "filter_threshold": 0.5, "filter_candidates": 10, "rounds": 1, "followups": 2,
                   "generate": 0, "retrieve": True}


def modes() -> tuple[str, ...]:
    """The retrieval modes: the registry's `retriever` kind, in the order registered
    (dense, bm25, hybrid); a mode registered by a plugin is one too."""
    return tuple(registry.listed("retriever"))


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
    rrf_k: int = DEFAULT_RRF_K  # reciprocal rank fusion constant (hybrid, several indexes; MedRAG: 100)
    fetch_k: int = DEFAULT_FETCH_K  # what each fused retriever fetches (hybrid, several indexes)
    rerank: str | None = None  # a reranker config (experiments/reranker/); null: no rerank stage
    candidates: int = DEFAULT_CANDIDATES  # first-stage hits the reranker sees; the best k go on
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
    # -- RAG methods that call the cell's model (biorag.augment; docs: RAG methods) --
    # query rewriting: hyde (a hypothetical passage is the query) | multi (`rewrites`
    # reformulations, each searched, fused by RRF with the question's own list) | rationale
    # (a short reasoning is the query, as RAG² does)
    rewrite: str = "none"
    rewrites: int = 3
    # evidence filtering after retrieval (and rerank): lm (P(yes) to "is this passage
    # relevant?" by log-likelihood, from the cell's model or `filter_model`) | cross-encoder
    # (a reranker config's score, `filter_model`); the top `filter_candidates` are judged,
    # those at or above `filter_threshold` kept, the best k of them packed
    filter: str = "none"
    filter_model: str | None = None
    filter_threshold: float = 0.5
    filter_candidates: int = 10
    # iterative retrieval (i-MedRAG): rounds > 1 lets the model ask `followups` follow-up
    # questions a round given what it has read; their passages accumulate, deduplicated
    rounds: int = 1
    followups: int = 2
    # generated context (GenRead, MedRGAG): the model writes `generate` background passages,
    # packed after (interleaved with) the retrieved ones; retrieve: false packs them alone
    generate: int = 0
    retrieve: bool = True

    def __post_init__(self) -> None:
        if self.mode not in modes():
            raise ConfigError(f"retriever.mode must be one of {', '.join(modes())}, not {self.mode!r}")
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
        if self.rewrite not in REWRITES:
            raise ConfigError("retriever.rewrite: " + did_you_mean(self.rewrite, REWRITES, what="rewrite"))
        if self.filter not in FILTERS:
            raise ConfigError("retriever.filter: " + did_you_mean(self.filter, FILTERS, what="filter"))
        for key in ("rewrites", "rounds", "followups", "filter_candidates"):
            if getattr(self, key) < 1:
                raise ConfigError(f"retriever.{key} must be at least 1, not {getattr(self, key)}")
        if self.generate < 0:
            raise ConfigError(f"retriever.generate must be 0 or more, not {self.generate}")
        if self.filter == "cross-encoder" and not self.filter_model:
            raise ConfigError("retriever.filter=cross-encoder needs retriever.filter_model=RERANKER "
                              "(a cross-encoder config: biorag ls rerankers)")
        if not self.retrieve and not self.generate:
            raise ConfigError("retriever.retrieve=false packs generated passages only: set retriever.generate=N "
                              "(or use a closed-book arm)")
        if not self.retrieve and (self.rewrite != "none" or self.filter != "none" or self.rounds > 1):
            raise ConfigError("retriever.retrieve=false retrieves nothing to rewrite, filter or iterate over")

    def methods(self) -> list[str]:
        """The model-calling methods this retriever uses (none for a plain arm)."""
        return [m for m, on in (("rewrite", self.rewrite != "none"), ("filter", self.filter != "none"),
                                ("iterative", self.rounds > 1), ("generate", self.generate > 0)) if on]


def search_query(example: Example, mode: str) -> str:
    """What a rag arm searches with for `example` (`arm.retriever.query`)."""
    if mode == "query":
        return example.query or example.input
    if mode == "input":
        return example.input
    if mode in ("question", "question_options"):
        text = example.metadata.get("question") or example.query or example.input
        if mode == "question_options" and example.options:
            text += "\n" + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(example.options))
        return text
    field = mode.removeprefix("metadata.")
    value = example.metadata.get(field)
    if value is None or value == "":
        raise BioragError(f"{example.source or example.id}: retriever.query={mode}: "
                          + did_you_mean(field, sorted(example.metadata), what="metadata field"))
    return "; ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
