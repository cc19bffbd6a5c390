"""Index + query → Hit: dense, BM25 and hybrid retrievers, and the llama-index adapter."""

from biorag.retrieval.retrievers import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    Retriever,
    open_retriever,
)

__all__ = ["BM25Retriever", "DenseRetriever", "HybridRetriever", "Retriever", "open_retriever"]
