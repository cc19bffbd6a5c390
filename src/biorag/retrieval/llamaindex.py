"""A llama-index `BaseRetriever` over a biorag index, so llama-index query engines can use it."""

from __future__ import annotations

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from biorag.retrieval.retrievers import Retriever


class BioragRetriever(BaseRetriever):
    """Wraps any biorag retriever (dense, bm25, hybrid): hits become `NodeWithScore`s."""

    def __init__(self, retriever: Retriever, k: int = 5, **kwargs: object) -> None:
        self._retriever = retriever
        self._k = k
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._retriever.retrieve(query_bundle.query_str, self._k)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=h.chunk.id,
                    text=h.chunk.text,
                    metadata={"doc_id": h.chunk.doc_id, "title": h.chunk.title, "rank": h.rank},
                    start_char_idx=h.chunk.start,
                    end_char_idx=h.chunk.end,
                ),
                score=h.score,
            )
            for h in hits
        ]
