"""Fusion across indexes: each index searched by its own retriever, the ranked lists fused by
reciprocal rank fusion (MedRAG's RRF-2 / RRF-4 over MedCorp's corpora).

`IndexSet` lets the rest of biorag treat the members as one index: chunk ids are looked up in
the member that holds them, documents in any member, and `source_of` says which member a chunk
came from (the per-source share of a cell's passages).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from biorag.errors import BioragError
from biorag.indexing.chunkstore import rows_in_order
from biorag.indexing.index import BioragIndex
from biorag.retrieval.retrievers import Retriever, reciprocal_rank_fusion
from biorag.retrieval.spec import DEFAULT_FETCH_K, DEFAULT_RRF_K
from biorag.types import Chunk, Hit

MEDRAG_RRF_K = 100  # the constant MedRAG fuses its retrievers with (RRF-2 / RRF-4; arm rag-fused)


@dataclass
class IndexSetManifest:
    """What a fused cell logs as its index manifest: each member's, and the summed build time."""

    name: str
    fingerprint: str
    members: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint,
                "build_seconds": sum(m.build_seconds or 0.0 for m in self.members),
                "members": [m.to_dict() for m in self.members]}


class IndexSet:
    """Several built indexes read as one: global rows are member rows offset by the sizes
    of the members before it."""

    def __init__(self, members: Sequence[BioragIndex]) -> None:
        if len(members) < 2:
            raise BioragError("an index set needs at least two indexes")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise BioragError(f"an index is named twice in the fused list: {', '.join(names)}")
        self.members = list(members)
        self.config = members[0].config  # search-time settings are the arm's, the same for all
        self._offsets = np.cumsum([0, *(len(m) for m in members)]).tolist()
        self.name = "+".join(names)
        self.fingerprint = hashlib.sha256(
            json.dumps([m.fingerprint for m in members]).encode()).hexdigest()[:16]
        self.manifest = IndexSetManifest(self.name, self.fingerprint, [m.manifest for m in members])

    def __len__(self) -> int:
        return self._offsets[-1]

    def _member(self, row: int) -> tuple[BioragIndex, int]:
        i = int(np.searchsorted(self._offsets, row, side="right")) - 1
        return self.members[i], row - self._offsets[i]

    def chunk(self, row: int) -> Chunk:
        member, local = self._member(row)
        return member.chunk(local)

    def found_rows(self, chunk_ids: Sequence[str]) -> dict[str, int]:
        """{chunk id: its global row, in the first member holding it} for the ids any member holds."""
        rows: dict[str, int] = {}
        for offset, member in zip(self._offsets, self.members, strict=False):
            todo = [c for c in dict.fromkeys(chunk_ids) if c not in rows]
            if not todo:
                break
            rows.update({c: offset + r for c, r in member.found_rows(todo).items()})
        return rows

    def rows_of(self, chunk_ids: Sequence[str]) -> list[int]:
        """The global row of each chunk id (KeyError when no member holds it)."""
        return rows_in_order(self.found_rows(chunk_ids), chunk_ids)

    def row_of(self, chunk_id: str) -> int:
        return self.rows_of([chunk_id])[0]

    def sources_of(self, chunk_ids: Sequence[str]) -> list[str]:
        """The name of the member each chunk id is looked up in (one pass per member)."""
        members = np.searchsorted(self._offsets, self.rows_of(chunk_ids), side="right") - 1
        return [self.members[int(i)].name for i in members]

    def source_of(self, chunk_id: str) -> str:
        return self.sources_of([chunk_id])[0]

    def held_docs(self, doc_ids: Iterable[str]) -> set[str]:
        wanted = list(doc_ids)
        return set().union(*(m.held_docs(wanted) for m in self.members))

    def rows_of_docs(self, doc_ids: Iterable[str]) -> dict[str, list[int]]:
        wanted, out = list(doc_ids), {}
        for offset, m in zip(self._offsets, self.members, strict=False):
            for doc, rows in m.rows_of_docs(wanted).items():
                out.setdefault(doc, []).extend(offset + r for r in rows)
        return out


class FusedRetriever:
    """One retriever per index, each fetching `fetch_k`, fused by RRF with constant `rrf_k`;
    RRF ties go to the higher first-stage score."""

    def __init__(self, members: Sequence[Retriever], rrf_k: int = DEFAULT_RRF_K,
                 fetch_k: int = DEFAULT_FETCH_K) -> None:
        modes = {m.mode for m in members}
        if len(modes) != 1:
            raise BioragError(f"fused retrievers must share one mode, not {', '.join(sorted(modes))}")
        self.members = list(members)
        self.rrf_k, self.fetch_k = rrf_k, fetch_k
        self.mode = f"fused-{modes.pop()}"
        self.index = IndexSet([m.index for m in members])

    def identity(self) -> dict[str, Any]:
        """What decides the fused lists beside the members' own (the retrieval-cache key):
        `tiebreak` names the rule that breaks RRF ties (by first-stage score)."""
        return {"rrf_k": self.rrf_k, "fetch_k": self.fetch_k, "tiebreak": "score"}

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        n = max(k, self.fetch_k)
        lists = [m.retrieve_batch(queries, n) for m in self.members]
        out = []
        for per_query in zip(*lists, strict=True):
            by_id: dict[str, Chunk] = {}
            best: dict[str, float] = {}
            for hits in per_query:
                for h in hits:
                    by_id.setdefault(h.chunk.id, h.chunk)
                    best[h.chunk.id] = max(h.score, best.get(h.chunk.id, h.score))
            # disjoint corpora give every rank a tie (each list's top scores 1/(k+1)); one mode
            # and one embedder over all members make their own scores the fair tie-break
            fused = reciprocal_rank_fusion([[h.chunk.id for h in hits] for hits in per_query], self.rrf_k,
                                           tiebreak=best)[:k]
            out.append([Hit(by_id[cid], score, rank) for rank, (cid, score) in enumerate(fused, 1)])
        return out


def source_share(index: Any, chunk_ids: Sequence[str]) -> dict[str, float]:
    """The share of `chunk_ids` each member of an index set supplied ({} for one index)."""
    if not isinstance(index, IndexSet) or not chunk_ids:
        return {}
    counts = dict.fromkeys((m.name for m in index.members), 0)
    for name in index.sources_of(list(chunk_ids)):  # one lookup for all, not one per id
        counts[name] += 1
    return {name: c / len(chunk_ids) for name, c in counts.items()}
