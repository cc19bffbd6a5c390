"""Document → Chunk → vectors → index folder: chunking, embedding, FAISS and BM25 indexes,
the index manifest, and the streamed, resumable build."""
