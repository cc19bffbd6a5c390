"""A small but complete `IndexManifest`, for tests that write an index folder by hand."""

from __future__ import annotations

from biorag.indexing.manifest import CorpusRecord, FaissRecord, IndexCounts, IndexManifest


def manifest(name: str = "ix", fingerprint: str = "f00", chunks: int = 2, **params: object) -> IndexManifest:
    return IndexManifest(
        name=name, fingerprint=fingerprint, created_at="2026-01-01T00:00:00+00:00",
        corpus=CorpusRecord("c", "jsonl", {}, "src", "content", {}),
        chunking={}, embedder={"name": "e", "model": "m", "dimension": 4},
        index=FaissRecord("flat", {"type": "flat", **params}, "inner_product", chunks, False, False),
        counts=IndexCounts(documents=chunks, chunks=chunks),
        build_seconds=1.0, embed_seconds=1.0, chunks_per_second=2.0, shard_size=4096,
    )
