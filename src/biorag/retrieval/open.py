"""The front door of retrieval: `open_retriever` builds what a retriever spec says -- the index
or indexes it searches (each built first when missing and the spec allows it), dense, BM25 or
hybrid search in each, several indexes fused by reciprocal rank fusion, then the rerank stage.

The experiment runner, `biorag retrieval eval`, `biorag index search`, RAFT data building and
the benchmarks open their retrievers here and nowhere else (tests/unit/test_retrieval_units.py
checks that no other module constructs one). A retrieval mode is the registry's `retriever`
kind: `dense`, `bm25` and `hybrid` below, or a plugin's function of the same shape.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biorag import registry
from biorag.errors import BioragError, did_you_mean
from biorag.indexing.embedding import Embedder, EmbedderConfig
from biorag.indexing.faiss_index import SEARCH_SETTINGS, SearchSettings
from biorag.indexing.index import BioragIndex, open_index
from biorag.indexing.manifest import default_index_name, index_root, is_index, list_indexes
from biorag.retrieval.retrievers import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    Retriever,
    embedder_for,
)
from biorag.retrieval.spec import (
    DEFAULT_CANDIDATES,
    DEFAULT_FETCH_K,
    DEFAULT_RRF_K,
    RetrieverConfig,
    modes,
)

log = logging.getLogger(__name__)


@dataclass
class IndexContext:
    """What a spec with no index of its own falls back on, where indexes live, and who asks
    (named in messages): for an arm, its name and its task's index and corpus."""

    owner: str = "the retriever"  # "arm 'rag'", "index search": who asks, in messages
    task: str = ""  # the task whose items are searched for (messages)
    task_index: Any = None  # the task's `index`: what a spec with no index searches
    task_corpus: str | None = None  # the task's corpus: what a spec with no index or corpus builds from
    root: str | None = None  # where indexes live; None: $BIORAG_INDEX_DIR or ./indexes


# -- the modes (the registry's `retriever` kind): one index, one way of searching it ---------


def dense(index: BioragIndex, embedder: EmbedderConfig | Embedder | None = None,
          rrf_k: int = DEFAULT_RRF_K, fetch_k: int = DEFAULT_FETCH_K) -> Retriever:
    """FAISS search with the query embedded by `embedder` (None: the index's own embedder)."""
    return DenseRetriever(index, embedder if isinstance(embedder, Embedder) else embedder_for(index, embedder))


def bm25(index: BioragIndex, embedder: Any = None, rrf_k: int = DEFAULT_RRF_K,
         fetch_k: int = DEFAULT_FETCH_K) -> Retriever:
    """bm25s over the index's chunks (built with index.bm25=true)."""
    return BM25Retriever(index)


def hybrid(index: BioragIndex, embedder: EmbedderConfig | Embedder | None = None,
           rrf_k: int = DEFAULT_RRF_K, fetch_k: int = DEFAULT_FETCH_K) -> Retriever:
    """Dense and BM25 fused by RRF with constant `rrf_k`, each fetching `fetch_k`."""
    first = dense(index, embedder)
    assert isinstance(first, DenseRetriever)
    return HybridRetriever(first, BM25Retriever(index), rrf_k=rrf_k, fetch_k=fetch_k)


def open_index_retriever(
    index: str | os.PathLike | BioragIndex,
    mode: str = "dense",
    *,
    embedder: EmbedderConfig | Embedder | None = None,
    rrf_k: int = DEFAULT_RRF_K,
    root: str | None = None,
    search: SearchSettings | None = None,
    fetch_k: int = DEFAULT_FETCH_K,
) -> Retriever:
    """One built index (a name, a folder or an opened index) searched in one mode: what
    `open_retriever` makes each member of a spec from. `search` sets nprobe / ef_search /
    k_factor for this retriever (None: as the index was built)."""
    if mode not in modes():
        raise BioragError(did_you_mean(mode, modes(), what="retrieval mode"))
    idx = index if isinstance(index, BioragIndex) else open_index(index, root, search=search)
    return registry.resolve("retriever", mode)(idx, embedder, rrf_k, fetch_k)


# -- the spec: which indexes, built when missing, fused, reranked ----------------------------


def index_targets(spec: RetrieverConfig, context: IndexContext) -> list[tuple[str, str | None]]:
    """(index name or folder, corpus to build it from or None) for each index `spec` searches:
    its `index`, else the task's, as a name, a folder, a corpus, or a list of these (a corpus
    group such as medcorp in a list standing for its parts); else the task's corpus: its index
    <corpus>-<embedder>, or the built index of that name when no corpus config has it."""
    from biorag.config import load_option, options
    from biorag.corpora import CorpusConfig

    root, corpora = index_root(context.root), set(options("corpus"))
    named = lambda corpus: default_index_name(corpus, spec.embedder, spec.index_type)  # noqa: E731
    index = spec.index if spec.index is not None else context.task_index
    if index is None:
        corpus = spec.corpus or context.task_corpus
        if not corpus:
            raise BioragError(
                f"{context.owner} retrieves, but task '{context.task}' names no index and no "
                f"corpus: set task.index=<index> (built: {_built(root)}), task.corpus=<corpus> or "
                "arm.retriever.index=<index>"
            )
        if corpus in corpora or corpus.endswith((".yaml", ".yml")):
            return [(named(corpus), corpus)]
        for name in (corpus, named(corpus)):  # a built index of that name
            if is_index(root / name) or is_index(name):
                return [(name, None)]
        raise BioragError(unknown_source(spec, context, corpus, [corpus, named(corpus)]))
    names = [index] if isinstance(index, str) else list(index)
    out: list[tuple[str, str | None]] = []
    for name in names:
        if is_index(name) or is_index(root / name) or name not in corpora:
            out.append((name, (spec.corpus or context.task_corpus) if len(names) == 1 else None))
            continue
        parts = load_option("corpus", name, CorpusConfig).parts if len(names) > 1 else []
        out.extend((named(c), c) for c in (parts or [name]))
    return out


def unknown_source(spec: RetrieverConfig, context: IndexContext, corpus: str, looked_for: list[str]) -> str:
    """Why a spec has nothing to search: the corpus it names is no corpus config and no index
    by the names tried is built; with the indexes and corpus configs there are."""
    import difflib

    from biorag.config import options

    root = index_root(context.root)
    whose = context.owner if spec.corpus else f"task '{context.task}'"
    close = difflib.get_close_matches(corpus, [*_built(root, listed=True), *options("corpus")], n=3, cutoff=0.5)
    return (
        f"{whose} names corpus '{corpus}', which is no corpus config, and no index "
        f"{' or '.join(repr(n) for n in dict.fromkeys(looked_for))} is built in {root}/ (indexes there: "
        f"{_built(root)}; corpus configs: {', '.join(options('corpus'))})."
        + (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
        + f" Build it with: biorag index build corpus=jsonl-example corpus.path=FILE name={corpus}; "
        f"or name a built index with task.index=NAME"
    )


def _built(root: Path, listed: bool = False) -> Any:
    """The indexes built under `root`: a list, or (listed=False) a phrase for a message."""
    names = list_indexes(root)
    return names if listed else (", ".join(names) or "none yet")


def open_retriever(spec: RetrieverConfig, context: IndexContext | None = None, *,
                   embedder: EmbedderConfig | Embedder | None = None, reranker: Any = None) -> Retriever:
    """The retriever `spec` describes, its indexes built first when missing (and
    `spec.build_if_missing`): one index, or several fused by RRF, then the rerank stage when
    the spec names one. `embedder` queries with another embedder than each index's own;
    `reranker` (a `RerankerConfig` or a loaded reranker) stands in for the one `spec.rerank`
    names (`index search --model`, the benchmarks)."""
    context = context or IndexContext()
    root = index_root(context.root)
    search = SearchSettings(**{k: getattr(spec, k) for k in SEARCH_SETTINGS})
    members = []
    for name, corpus in index_targets(spec, context):
        path = Path(name) if is_index(name) else root / name
        if not is_index(path):
            _build_missing(spec, context, name, corpus)
        members.append(open_index_retriever(path, spec.mode, embedder=embedder, rrf_k=spec.rrf_k,
                                            search=search, fetch_k=spec.fetch_k))
    retriever: Retriever = members[0]
    if len(members) > 1:
        from biorag.retrieval.fusion import FusedRetriever

        retriever = FusedRetriever(members, rrf_k=spec.rrf_k, fetch_k=spec.fetch_k)
        log.info("%s fuses %d indexes (%s) by RRF, k=%d, %d fetched from each", context.owner,
                 len(members), retriever.index.name, spec.rrf_k, spec.fetch_k)
    if spec.rerank or reranker is not None:
        retriever = reranked(retriever, reranker if reranker is not None else spec.rerank, spec.candidates)
    return retriever


def reranked(first: Retriever, reranker: Any, candidates: int = DEFAULT_CANDIDATES) -> Retriever:
    """`first` with a rerank stage: `reranker` is a reranker config's name or path, a
    `RerankerConfig`, or a loaded reranker; it reorders the best `candidates` of `first`."""
    from biorag.retrieval.rerank import (
        RerankerConfig,
        RerankingRetriever,
        load_reranker,
        load_reranker_config,
    )

    if isinstance(reranker, str):
        reranker = load_reranker_config(reranker)
    if isinstance(reranker, RerankerConfig):
        reranker = load_reranker(reranker)
    return RerankingRetriever(first, reranker, candidates)


def _build_missing(spec: RetrieverConfig, context: IndexContext, name: str, corpus: str | None) -> None:
    """Build the index `name` from `corpus`, or say why it cannot be."""
    from biorag.config import options

    root = index_root(context.root)
    if not (spec.build_if_missing and corpus):
        raise BioragError(
            f"index '{name}' of {context.owner} does not exist in {root}/ (indexes "
            f"there: {_built(root)}). Build it with: biorag index build corpus="
            f"{corpus or '<corpus>'} embedder={spec.embedder} index={spec.index_type} name={name}"
        )
    if corpus not in options("corpus") and not corpus.endswith((".yaml", ".yml")):
        raise BioragError(unknown_source(spec, context, corpus, [name]))
    from biorag.indexing.build import build_index, load_build_config

    log.info("index %s is missing: building it from corpus %s", name, corpus)
    overrides = [f"corpus={corpus}", f"embedder={spec.embedder}", f"index={spec.index_type}", f"name={name}"]
    if context.root:
        overrides.append(f"root={context.root}")
    build_index(load_build_config(overrides))
