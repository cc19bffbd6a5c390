"""Dense (FAISS), BM25 (bm25s) and hybrid (reciprocal rank fusion) retrieval over an index.

Every retriever has the `Retriever` shape: `retrieve(query, k)`, `retrieve_batch(queries, k)`,
its `mode` and the `index` it searches (`biorag.retrieval.llamaindex` adapts any of them to
llama-index). They are built by `biorag.retrieval.open_retriever`, not by their callers."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from biorag.errors import BioragError
from biorag.indexing.bm25 import BM25_SETTINGS, bm25_tokenizer
from biorag.indexing.embedding import Embedder, EmbedderConfig, load_embedder
from biorag.indexing.index import BioragIndex
from biorag.indexing.manifest import BM25_DIR
from biorag.retrieval.spec import DEFAULT_FETCH_K, DEFAULT_RRF_K
from biorag.types import Hit

log = logging.getLogger(__name__)



@runtime_checkable
class Retriever(Protocol):
    """What the runner, the CLI and the llama-index adapter need of a retriever."""

    mode: str
    index: BioragIndex

    def retrieve(self, query: str, k: int = 5) -> list[Hit]: ...

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]: ...


class DenseRetriever:
    """Embeds the query with the index's own embedder and searches FAISS."""

    mode = "dense"

    def __init__(self, index: BioragIndex, embedder: Embedder) -> None:
        embedder.follow(index.embedder)  # `auto` encodes queries as the index's passages were
        index.check_embedder(embedder.identity())
        self.index, self.embedder = index, embedder

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def queries_over(self, queries: Sequence[str]) -> list[bool]:
        """Which queries are longer than the query encoder reads (it cuts them)."""
        return self.embedder.queries_over(list(queries))

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        vectors = self.embedder.embed_queries(list(queries))
        scores, rows = self.index.search(vectors, k)
        return [_hits(self.index, r, s) for r, s in zip(rows, scores, strict=True)]


class BM25Retriever:
    """bm25s over the chunk store, with the tokenizer vocabulary saved at build time."""

    mode = "bm25"

    def __init__(self, index: BioragIndex) -> None:
        import bm25s

        folder = index.path / BM25_DIR
        if not (folder / BM25_SETTINGS).is_file():
            raise BioragError(
                f"index '{index.name}' has no BM25 index; rebuild it with index.bm25=true --force"
            )
        self.index = index
        settings = json.loads((folder / BM25_SETTINGS).read_text())
        self._tokenizer = bm25_tokenizer(settings)
        self._tokenizer.load_vocab(str(folder))
        self._tokenizer.load_stopwords(str(folder))
        self._bm25 = bm25s.BM25.load(str(folder), show_progress=False)

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        ids = self._tokenizer.tokenize(
            list(queries), update_vocab=False, return_as="ids", show_progress=False
        )
        out: list[list[Hit]] = []
        k = min(k, len(self.index))
        for query_ids in ids:
            if not query_ids:  # no query word is in the vocabulary
                out.append([])
                continue
            rows, scores = self._bm25.retrieve([query_ids], k=k, show_progress=False, n_threads=0)
            keep = scores[0] > 0  # bm25s pads with zero-score rows when fewer documents match
            out.append(_hits(self.index, rows[0][keep], scores[0][keep]))
        return out


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = DEFAULT_RRF_K, tiebreak: dict[str, float] | None = None
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(d) = sum over lists of 1 / (k + rank), rank from 1.

    Ties are broken by `tiebreak` (higher first: the retrievers' own scores, where they are
    comparable), then by first appearance, so the result is deterministic.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for r in rankings for x in r))}
    tb = tiebreak or {}
    return sorted(scores.items(), key=lambda kv: (-kv[1], -tb.get(kv[0], 0.0), order[kv[0]]))


class HybridRetriever:
    """Dense and BM25 results fused by reciprocal rank fusion."""

    mode = "hybrid"

    def __init__(
        self,
        dense: DenseRetriever,
        bm25: BM25Retriever,
        rrf_k: int = DEFAULT_RRF_K,
        fetch_k: int = DEFAULT_FETCH_K,
    ) -> None:
        self.dense, self.bm25, self.rrf_k, self.fetch_k = dense, bm25, rrf_k, fetch_k
        self.index = dense.index

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        n = max(k, self.fetch_k)
        dense = self.dense.retrieve_batch(queries, n)
        sparse = self.bm25.retrieve_batch(queries, n)
        out = []
        for d_hits, s_hits in zip(dense, sparse, strict=True):
            by_id = {h.chunk.id: h.chunk for h in [*d_hits, *s_hits]}
            fused = reciprocal_rank_fusion(
                [[h.chunk.id for h in d_hits], [h.chunk.id for h in s_hits]], self.rrf_k
            )[:k]
            out.append([Hit(by_id[cid], score, rank) for rank, (cid, score) in enumerate(fused, 1)])
        return out


def _hits(index: BioragIndex, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
    return [
        Hit(index.chunk(int(r)), float(s), rank)
        for rank, (r, s) in enumerate(
            ((r, s) for r, s in zip(rows, scores, strict=True) if r >= 0), 1
        )
    ]


def embedder_for(index: BioragIndex, cfg: EmbedderConfig | None = None) -> Embedder:
    """The embedder to query an index with: `cfg` if given (checked), else the one it was built with."""
    if cfg is None:
        built = index.embedder
        cfg = EmbedderConfig(
            name=built["name"],
            model=built["model"],
            revision=_pinned(built.get("revision")),
            query_model=built.get("query_model"),
            query_revision=_pinned(built.get("query_revision")) if built.get("query_model") else None,
            query_prompt=built.get("query_prompt", ""),
            passage_prompt=built.get("passage_prompt", ""),
            normalize=built.get("normalize", True),
            query_normalize=built.get("query_normalize"),
            pooling=built.get("pooling"),
            query_pooling=built.get("query_pooling"),
            title_pair=built.get("title_pair", False),
            max_seq_length=built.get("max_seq_length") or None,
            query_max_seq_length=built.get("query_max_seq_length") or None,
        )
    return load_embedder(cfg)


def _pinned(revision: str | None) -> str | None:
    """A recorded revision to load again: a hub commit or tag, not a package version or 'local'."""
    return None if not revision or revision in ("main", "local", "unknown") or "==" in revision else revision
