"""Contamination audit: planted overlaps are found, clean data is clean, edges hold."""

from __future__ import annotations

import pytest
from tests.helpers.manifest import manifest

from biorag.contamination import (
    AuditSettings,
    audit_index,
    audit_texts,
    normalise,
    warn_if_contaminated,
)
from biorag.errors import ConfigError
from biorag.types import Example

ITEMS = [
    "A persistent elevation of the systemic arterial blood pressure measured on at least three separate visits in adults",
    "Abnormal involuntary jerking movements of the limbs that occur during sleep and wake the patient repeatedly at night",
    "Reduced concentration of haemoglobin in the circulating blood below the lower limit of normal for age and sex",
]
CLEAN = [
    "Aspirin inhibits cyclooxygenase and reduces platelet aggregation in a dose dependent way.",
    "Pneumonia presents with fever, cough, dyspnoea and pleuritic chest pain in most adults.",
    "The femur is the longest bone of the human body and carries the weight of the trunk.",
]


def _examples(texts: list[str], task: str = "t") -> list[Example]:
    return [Example(id=f"{task}-{i}", task=task, input=t, gold="A") for i, t in enumerate(texts)]


def test_normalise_is_lm_eval_style() -> None:
    assert normalise("Blood-pressure, RAISED (140/90)!") == ["bloodpressure", "raised", "14090"]


def test_planted_overlap_is_found_and_only_it() -> None:
    # 13 words of item 1, in other case and punctuation, inside an unrelated text
    planted = ("Case notes: ABNORMAL involuntary jerking movements, of the limbs that occur during "
               "sleep and wake the patient -- seen twice.")
    report = audit_texts([(f"c{i}", t) for i, t in enumerate([*CLEAN, planted])],
                         {"t": _examples(ITEMS)}, AuditSettings(), source="planted")
    (task,) = report.tasks
    assert [i.example_id for i in task.items] == ["t-1"]
    assert task.items[0].sources == ["c3"]
    assert task.n_overlapping == 1 and task.n_audited == 3
    assert task.share == pytest.approx(1 / 3)
    assert report.metrics()["contamination/t/share"] == pytest.approx(1 / 3)
    assert warn_if_contaminated(report)  # 33% > 5%


def test_clean_data_has_no_overlap() -> None:
    report = audit_texts([(f"c{i}", t) for i, t in enumerate(CLEAN)], {"t": _examples(ITEMS)},
                         AuditSettings())
    assert report.tasks[0].n_overlapping == 0
    assert report.tasks[0].items == []
    assert warn_if_contaminated(report) == []


def test_twelve_shared_words_are_not_a_13_gram() -> None:
    twelve = " ".join(ITEMS[0].split()[:12])
    report = audit_texts([("c", f"Intro. {twelve}. Outro")], {"t": _examples(ITEMS)}, AuditSettings())
    assert report.tasks[0].n_overlapping == 0
    report = audit_texts([("c", f"Intro. {twelve}. Outro")], {"t": _examples(ITEMS)},
                         AuditSettings(ngram=12, min_words=8))
    assert report.tasks[0].n_overlapping == 1


def test_short_items_match_whole_or_are_counted_too_short() -> None:
    items = _examples(["Chronic kidney disease stage three with anaemia noted", "Cholera"])
    report = audit_texts([("c", "Known chronic kidney disease, stage three with anaemia noted.")],
                         {"t": items}, AuditSettings(min_words=8))
    t = report.tasks[0]
    assert (t.n_items, t.n_audited, t.n_too_short, t.n_overlapping) == (2, 1, 1, 1)
    # a mere part of a short item is not a match
    report = audit_texts([("c", "chronic kidney disease stage three")], {"t": items}, AuditSettings())
    assert report.tasks[0].n_overlapping == 0


def test_several_tasks_scanned_at_once() -> None:
    report = audit_texts([("c", ITEMS[2])], {"a": _examples(ITEMS[:2], "a"), "b": _examples(ITEMS[2:], "b")},
                         AuditSettings())
    assert {t.task: t.n_overlapping for t in report.tasks} == {"a": 0, "b": 1}


def test_bad_settings_are_errors() -> None:
    with pytest.raises(ConfigError, match="min_words"):
        AuditSettings(ngram=13, min_words=20)
    with pytest.raises(ConfigError, match="fields"):
        AuditSettings(fields=["question"])


def test_index_audit_reads_the_chunk_store(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ix"
    folder.mkdir()
    manifest("ix", "f00").write(folder)
    pq.write_table(pa.table({"id": ["a#0", "b#0"], "title": ["Anaemia", "Femur"],
                             "text": [ITEMS[2], CLEAN[2]]}), folder / "chunks.parquet")
    report = audit_index(folder, {"t": _examples(ITEMS)}, AuditSettings())
    assert report.source == "index ix" and report.source_fingerprint == "f00"
    assert [(i.example_id, i.sources) for i in report.tasks[0].items] == [("t-2", ["a#0"])]

    from biorag.contamination import run_audit

    # the command's config: `retrieval_index=` (`index` is the group of index types)
    report = run_audit([f"retrieval_index={folder}", "task=hpo-term-mcq", "task.n=3"])
    assert report.source == "index ix" and report.n_texts == 2
    assert report.tasks[0].task == "hpo-term-mcq" and report.tasks[0].n_overlapping == 0


def test_embedded_tasks_overlap_the_embedded_corpus() -> None:
    """The HPO task is built from HPO definitions: the audit must find that."""
    from biorag.contamination import run_audit

    report = run_audit(["data=hpo", "task=hpo-term-mcq", "task.n=40"])
    (t,) = report.tasks
    assert t.n_items == 40
    assert t.share > 0.9
    assert report.n_texts > 15000  # the whole HPO corpus was read
