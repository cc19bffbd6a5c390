"""RAG methods that call the cell's model around retrieval: query rewriting (HyDE, several
reformulations, rationales), evidence filtering, iterative follow-up retrieval and generated
context. Each is an `arm.retriever.*` option (`biorag.retrieval.spec.RetrieverConfig`)."""
