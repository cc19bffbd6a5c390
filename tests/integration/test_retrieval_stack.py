"""The medical retrieval stack on tiny real models: a dual encoder (two BERTs), a rerank stage
(a random CrossEncoder, the LM reranker on a tiny Llama), fusion across two indexes, and the
query an arm searches with."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.tiny_bert import build_tiny_bert
from tests.helpers.tiny_model import build_tiny_model

from biorag.config import load_option
from biorag.errors import BioragError, ConfigError, IndexMismatchError
from biorag.experiment.arms import RetrieverConfig
from biorag.indexing.build import build_index, load_build_config
from biorag.indexing.embedding import Embedder, EmbedderConfig
from biorag.retrieval.cache import retriever_fingerprint
from biorag.retrieval.fusion import MEDRAG_RRF_K, FusedRetriever, IndexSet, source_share
from biorag.retrieval.open import open_index_retriever
from biorag.retrieval.rerank import (
    CrossEncoderReranker,
    LMReranker,
    RerankerConfig,
    RerankingRetriever,
    load_reranker_config,
    passage,
)
from biorag.retrieval.retrievers import reciprocal_rank_fusion
from biorag.retrieval.spec import search_query
from biorag.types import Example

TOPICS = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]


def _corpus(path: Path, prefix: str, n: int = 24) -> Path:
    with path.open("w") as f:
        for i in range(n):
            t = TOPICS[i % len(TOPICS)]
            text = (f"Patient {i} presents with {t}. Plan: treat the {t} and review." if prefix == "l"
                    else f"Review of {t} {i}: the patient has {t} with fever, treat and review.")
            f.write(json.dumps({"id": f"{prefix}{i}", "title": f"{t} note {i}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-encoders")
    return {"query": build_tiny_bert(root / "q", seed=1), "doc": build_tiny_bert(root / "d", seed=2),
            "cross": build_tiny_bert(root / "c", seed=3, cross_encoder=True)}


def _dual(models: dict[str, Path], **kw) -> list[str]:
    base = {"name": "tiny-dual", "model": str(models["doc"]), "query_model": str(models["query"]),
            "pooling": "cls", "query_pooling": "cls", "max_seq_length": 96, "query_max_seq_length": 12,
            "title_pair": True, "normalize": False, **kw}
    return [f"embedder.{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def indexes(models, tmp_path_factory) -> dict[str, Path]:
    """Two indexes of different corpora, both with the dual encoder."""
    root = tmp_path_factory.mktemp("stack")
    out = {}
    for name in ("left", "right"):
        corpus = _corpus(root / f"{name}.jsonl", name[0])
        cfg = load_build_config(["corpus=sample", f"corpus.path={corpus}", f"name={name}", f"root={root}",
                                 "embedder=minilm", *_dual(models)])
        out[name] = build_index(cfg).path
    return out


def _dual_cfg(models, **kw) -> EmbedderConfig:
    return EmbedderConfig(**{k.removeprefix("embedder."): _typed(v) for k, v in
                             (o.split("=", 1) for o in _dual(models, **kw))})


def _typed(v: str):
    return {"True": True, "False": False}.get(v, int(v) if v.isdigit() else v)


def test_dual_encoder_encodes_queries_and_documents_with_their_own_models(models) -> None:
    emb = Embedder(_dual_cfg(models))
    text = "seizure with fever"
    q, d = emb.embed_queries([text]), emb.embed_passages([text])
    assert q.shape == d.shape == (1, 32)
    assert not np.allclose(q, d)  # two encoders with different weights
    # a (title, text) pair is not the same input as the title and text joined
    pair = emb.embed_passages([["Seizure", "a fit with fever"]])
    assert not np.allclose(pair, emb.embed_passages(["Seizure a fit with fever"]))
    # no normalisation: MedCPT's inner product
    assert not np.isclose(np.linalg.norm(d), 1.0)
    ident = emb.identity()
    assert ident["model"] == str(models["doc"]) and ident["query_model"] == str(models["query"])
    assert ident["revision"] == ident["query_revision"] == "local"
    assert ident["query_max_seq_length"] == 12 and ident["max_seq_length"] == 96 and ident["title_pair"]
    # the query side cuts at its own limit, and says which queries it cut
    assert emb.queries_over(["fever", " ".join(["fever"] * 30)]) == [False, True]


def test_manifest_lists_both_models_and_a_search_with_another_query_model_is_refused(indexes, models) -> None:
    manifest = json.loads((indexes["left"] / "manifest.json").read_text())["embedder"]
    assert manifest["model"] == str(models["doc"]) and manifest["query_model"] == str(models["query"])
    assert manifest["pooling"] == manifest["query_pooling"] == "cls" and manifest["normalize"] is False
    # the built embedder is read back from the manifest: the same query vectors as the config's
    r = open_index_retriever(indexes["left"], "dense")
    assert np.allclose(r.embedder.embed_queries(["fever"]), Embedder(_dual_cfg(models)).embed_queries(["fever"]))
    with pytest.raises(IndexMismatchError) as e:
        open_index_retriever(indexes["left"], "dense", embedder=_dual_cfg(models, query_model=str(models["cross"])))
    assert str(models["query"]) in str(e.value) and str(models["cross"]) in str(e.value)


def test_a_random_cross_encoder_reorders_candidates_exactly_by_its_scores(indexes, models) -> None:
    first = open_index_retriever(indexes["left"], "dense")
    reranker = CrossEncoderReranker(RerankerConfig(name="tiny", model=str(models["cross"])))
    stage = RerankingRetriever(first, reranker, candidates=10)
    query = "patient with fever"
    candidates = first.retrieve(query, 10)
    scores = reranker.score([(query, passage(h)) for h in candidates])
    want = sorted(zip(scores, candidates, strict=True), key=lambda sh: (-sh[0], sh[1].rank))[:4]
    got = stage.retrieve(query, 4)
    assert [h.chunk.id for h in got] == [h.chunk.id for _, h in want]
    assert [h.score for h in got] == pytest.approx([s for s, _ in want])
    assert [h.first_rank for h in got] == [h.rank for _, h in want]  # the first stage's ranks are kept
    assert [h.rank for h in got] == [1, 2, 3, 4]
    assert stage.scored == 10 and stage.seconds > 0
    assert len(set(scores)) > 1  # a real ordering, not ties
    assert retriever_fingerprint(stage) != retriever_fingerprint(first)


def test_the_lm_reranker_scores_are_the_generators_log_likelihoods(indexes, tmp_path) -> None:
    from biorag.models.config import ModelConfig
    from biorag.models.loading import load_generator

    gen = load_generator(ModelConfig(name="tiny", id=str(build_tiny_model(tmp_path / "llm")), batch_size=4))
    reranker = LMReranker(load_reranker_config("lm"))
    reranker.bind(gen, "tiny:none")
    first = open_index_retriever(indexes["left"], "dense")
    query = "Which term is a fever?"
    hits = first.retrieve(query, 6)
    pairs = [(query, passage(h)) for h in hits]
    requests = [(f"Passage: {p}\nPlease write a question based on this passage.\nQuestion:", f" {query}")
                for _, p in pairs]
    assert reranker.score(pairs) == pytest.approx([r.logprob for r in gen.loglikelihood(requests)], abs=1e-5)
    got = RerankingRetriever(first, reranker, candidates=6).retrieve(query, 6)
    assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
    # another model (or adapter) scores differently: the cache must not mix them
    other = LMReranker(load_reranker_config("lm"), gen, "tiny:adapter")
    assert (retriever_fingerprint(RerankingRetriever(first, reranker, 6))
            != retriever_fingerprint(RerankingRetriever(first, other, 6)))


def test_fusion_over_two_indexes_equals_rrf_by_hand(indexes) -> None:
    left, right = open_index_retriever(indexes["left"], "dense"), open_index_retriever(indexes["right"], "dense")
    fused = FusedRetriever([left, right], rrf_k=MEDRAG_RRF_K, fetch_k=8)
    query = "seizure review"
    lists = [left.retrieve(query, 8), right.retrieve(query, 8)]
    got = fused.retrieve(query, 6)
    # by hand: the corpora are disjoint, so each chunk scores 1 / (100 + its rank) and the two
    # lists' chunks of one rank tie, the higher first-stage score first
    by_hand = sorted(((1 / (100 + h.rank), h.score, h.chunk.id) for hits in lists for h in hits), reverse=True)
    assert [(h.chunk.id, h.score) for h in got] == [(c, pytest.approx(s)) for s, _, c in by_hand[:6]]
    assert got[0].score == pytest.approx(1 / 101) and got[1].score == pytest.approx(1 / 101)
    top = max(lists, key=lambda hits: hits[0].score)[0]
    assert got[0].chunk.id == top.chunk.id
    # the same fusion the hybrid retriever uses, given the tie-break
    best = {h.chunk.id: h.score for hits in lists for h in hits}
    assert [c for c, _ in reciprocal_rank_fusion([[h.chunk.id for h in hits] for hits in lists], k=100,
                                                 tiebreak=best)[:6]] == [h.chunk.id for h in got]
    ix = fused.index
    assert isinstance(ix, IndexSet) and len(ix) == 48 and ix.name == "left+right"
    assert {ix.source_of(h.chunk.id) for h in got} == {"left", "right"}
    for h in got:  # every chunk is found again through the set (the retrieval cache does this)
        assert ix.chunk(ix.row_of(h.chunk.id)) == h.chunk
    share = source_share(ix, [h.chunk.id for h in got])
    assert sum(share.values()) == pytest.approx(1.0) and set(share) == {"left", "right"}
    assert ix.rows_of([h.chunk.id for h in got]) == [ix.row_of(h.chunk.id) for h in got]
    assert ix.held_docs(["l3", "r23", "nowhere", "l3"]) == {"l3", "r23"}
    docs = ix.rows_of_docs(["r0", "l1", "nowhere"])
    assert set(docs) == {"r0", "l1"} and all(ix.chunk(r).doc_id == d for d, rows in docs.items() for r in rows)
    with pytest.raises(KeyError):
        ix.rows_of([got[0].chunk.id, "no-such-chunk"])


def test_a_fused_rag_cell_expands_corpus_groups_and_searches_each_index(tmp_path, monkeypatch) -> None:
    from biorag.experiment.plan import plan
    from biorag.experiment.resources import index_targets

    _, cells, _ = plan(["arm=rag-fused", "model=fake", "task=icd10-code-mcq"])
    assert index_targets(cells[0]) == [("hpo-minilm", "hpo"), ("icd10cm-minilm", "icd10cm")]
    _, cells, _ = plan(["arm=rag-fused", "model=fake", "task=icd10-code-mcq", "arm.retriever.index=[medcorp,hpo]"])
    assert [n for n, _ in index_targets(cells[0])] == [
        "pubmed-minilm", "textbooks-minilm", "statpearls-minilm", "wikipedia-minilm", "hpo-minilm"]
    assert cells[0].arm.retriever.rrf_k == 100


def test_queries_are_what_the_arm_says() -> None:
    e = Example(id="q1", task="t", input="A 3-year-old has fits.\n\nWhich term fits?", gold="A",
                options=("Seizure", "Fever"), metadata={"question": "Which term fits?", "case": "A 3-year-old"})
    assert search_query(e, "input") == e.input == search_query(e, "query")
    assert search_query(e, "question") == "Which term fits?"
    assert search_query(e, "question_options") == "Which term fits?\nA. Seizure\nB. Fever"
    assert search_query(e, "metadata.case") == "A 3-year-old"
    with pytest.raises(BioragError, match=r"unknown metadata field 'cas'\. Did you mean 'case'"):
        search_query(e, "metadata.cas")
    with pytest.raises(ConfigError, match=r"retriever\.query must be one of"):
        RetrieverConfig(query="title")
    with pytest.raises(ConfigError, match=r"retriever\.candidates must be at least 1"):
        RetrieverConfig(candidates=0)


def test_shipped_medical_configs_resolve_and_state_their_limits() -> None:
    medcpt = load_option("embedder", "medcpt", EmbedderConfig)
    assert (medcpt.model, medcpt.query_model) == ("ncbi/MedCPT-Article-Encoder", "ncbi/MedCPT-Query-Encoder")
    assert (medcpt.pooling, medcpt.query_pooling, medcpt.query_max_seq_length, medcpt.max_seq_length) == (
        "cls", "cls", 64, 512)
    assert medcpt.title_pair and medcpt.normalize is False
    for name, model in [("medcpt-rerank", "ncbi/MedCPT-Cross-Encoder"), ("bge-reranker", "BAAI/bge-reranker-v2-m3"),
                        ("ms-marco-minilm", "cross-encoder/ms-marco-MiniLM-L-6-v2")]:
        cfg = load_reranker_config(name)
        assert (cfg.kind, cfg.model) == ("cross-encoder", model)
    assert load_reranker_config("lm").kind == "lm"
    with pytest.raises(ConfigError, match=r"set reranker\.model"):
        replace(RerankerConfig(name="x", kind="lm"), kind="cross-encoder").__post_init__()
