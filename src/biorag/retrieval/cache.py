"""Retrieval done once per (retriever, query): the ranked lists of a retriever are cached
by its fingerprint and the query, so `rag` and `lora_rag` of one study, and a rerun, share
one retrieval, and a cell says how much of its retrieval it reused.

The cache is a JSONL file per retriever under `<cache>/retrieval/` (a line per query and
depth: chunk ids and scores), written as the prediction cache is: appended, a torn last
line skipped. The TREC run files a cell logs are made from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biorag.atomic import RecordLog
from biorag.indexing.faiss_index import SEARCH_SETTINGS
from biorag.retrieval.rerank import stages
from biorag.retrieval.retrievers import Retriever
from biorag.types import Hit


class RetrievalCache(RecordLog):
    """The ranked lists of one retriever, a record per query and depth."""

    what = "retrieval cache"


def retriever_fingerprint(retriever: Retriever) -> str:
    """What decides a retriever's ranked lists: the index, the mode and its settings, the
    search-time settings, and the query embedder (its dtype too: bf16 queries rank slightly
    differently); for fused indexes each member's, for a rerank stage the reranker's."""
    return hashlib.sha256(json.dumps(_identity(retriever), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _identity(retriever: Any) -> dict[str, Any]:
    if hasattr(retriever, "reranker"):  # a rerank stage over a first stage
        return {"mode": retriever.mode, "first": _identity(retriever.first), **retriever.identity()}
    if hasattr(retriever, "members"):  # several indexes fused
        return {"mode": retriever.mode, **retriever.identity(), "members": [_identity(m) for m in retriever.members]}
    parts: dict[str, Any] = {"index": retriever.index.fingerprint, "mode": retriever.mode,
                             "search": {k: getattr(retriever.index.config, k, None) for k in SEARCH_SETTINGS}}
    for name in ("rrf_k", "fetch_k"):
        if hasattr(retriever, name):
            parts[name] = getattr(retriever, name)
    dense = getattr(retriever, "dense", retriever)
    embedder = getattr(dense, "embedder", None)
    if embedder is not None:
        parts["embedder"] = embedder.identity()
    return parts


def queries_cut(retriever: Any, queries: Sequence[str]) -> list[bool]:
    """Which of `queries` a dense query encoder inside `retriever` cuts to its limit (any of
    the fused members' encoders), from one tokenizer call per encoder."""
    last = list(stages(retriever))[-1]  # under caches and rerank stages, the first stage
    if hasattr(last, "members"):
        flags = [queries_cut(m, queries) for m in last.members]
        return [any(f) for f in zip(*flags, strict=True)]
    dense = getattr(last, "dense", last)  # a hybrid retriever's dense half
    return dense.queries_over(queries) if hasattr(dense, "queries_over") else [False] * len(queries)


class CachedRetriever:
    """A retriever whose ranked lists are kept on disk, keyed by query and depth."""

    def __init__(self, retriever: Retriever, folder: Path) -> None:
        self.inner = retriever
        self.mode, self.index = retriever.mode, retriever.index
        self.fingerprint = retriever_fingerprint(retriever)
        self._store = RetrievalCache(Path(folder) / f"{self.mode}-{self.fingerprint}.jsonl")
        self._known: dict[str, dict[str, Any]] = {}
        self.reused = 0  # queries answered from the cache since `reset`
        self.searched = 0

    def reset(self) -> None:
        self.reused = self.searched = 0

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        keys = [_key(q, k) for q in queries]
        if any(key not in self._known for key in keys):  # another cell may have added them
            self._known.update(self._store.load())
        missing = list(dict.fromkeys(q for q, key in zip(queries, keys, strict=True) if key not in self._known))
        if missing:
            found = self.inner.retrieve_batch(missing, k)
            records = [{"id": _key(q, k), "hits": [[h.chunk.id, h.score, *([h.first_rank] if h.first_rank else [])]
                                                  for h in hits]}
                       for q, hits in zip(missing, found, strict=True)]
            with self._store.lock():
                self._store.append(records)
            self._known.update({r["id"]: r for r in records})
        self.searched += len(missing)
        self.reused += len(queries) - len(missing)
        ids = list(dict.fromkeys(h[0] for key in keys for h in self._known[key]["hits"]))
        rows = dict(zip(ids, self.index.rows_of(ids), strict=True))  # one pass over the id column
        return [self._hits(self._known[key], rows) for key in keys]

    def _hits(self, record: dict[str, Any], rows: dict[str, int]) -> list[Hit]:
        return [Hit(self.index.chunk(rows[cid]), float(score), rank, *first)
                for rank, (cid, score, *first) in enumerate(record["hits"], 1)]


def _key(query: str, k: int) -> str:
    return f"{hashlib.sha256(query.encode()).hexdigest()[:24]}@{k}"
