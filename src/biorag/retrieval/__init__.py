"""Index + query → Hit. The front door is `open_retriever(spec)`: a `RetrieverConfig` (how an
arm retrieves) made into dense, BM25 or hybrid search over one index or several fused, with a
rerank stage; `open_index_retriever(index, mode)` opens one built index in one mode."""

from biorag.retrieval.open import IndexContext, open_index_retriever, open_retriever
from biorag.retrieval.retrievers import Retriever
from biorag.retrieval.spec import RetrieverConfig

__all__ = ["IndexContext", "Retriever", "RetrieverConfig", "open_index_retriever", "open_retriever"]
