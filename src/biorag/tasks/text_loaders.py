"""Loaders for NLI (MedNLI), summarisation (MeQSum, problem lists) and clinical coding."""

from __future__ import annotations

import re

from biorag.tasks.config import TaskConfig
from biorag.tasks.extraction import normalise_text
from biorag.tasks.records import (
    Problem,
    RowError,
    build,
    example_id,
    get,
    resolve_fields,
    source_label,
    text,
)
from biorag.types import Example

NLI_FIELDS = {
    "id": "pairID",
    "premise": "sentence1",
    "hypothesis": "sentence2",
    "label": "gold_label",
}


def load_nli(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """MedNLI jsonl: sentence1 (premise), sentence2 (hypothesis), gold_label, pairID."""
    f = resolve_fields(cfg, NLI_FIELDS, ("premise", "hypothesis", "label"))
    labels = {normalise_text(lab): lab for lab in cfg.labels}

    def convert(rec: dict, row: int | None) -> Example:
        premise, hypothesis = text(rec, f["premise"]), text(rec, f["hypothesis"])
        label = text(rec, f["label"])
        if normalise_text(label) not in labels:
            raise RowError(
                f"label {label!r} is not one of {', '.join(cfg.labels)}", field=f["label"]
            )
        return Example(
            id=example_id(cfg, rec, f["id"], row),
            task=cfg.name,
            input=f"Premise: {premise}\nHypothesis: {hypothesis}",
            gold=labels[normalise_text(label)],
            options=tuple(cfg.labels),
            metadata={"premise": premise, "hypothesis": hypothesis},
            source=f"{source_label(cfg)}:{row}",
        )

    return build(cfg, convert, problems, id_field=f["id"])


SUMMARISATION_FIELDS = {"id": "id", "text": "text", "summary": "summary", "question": None}


def load_summarisation(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """Text to summary (MeQSum: CHQ -> Summary); `text` may name several columns, joined (each
    also a template variable under its own name, as CLUE's prompts use them). With a
    `question` field, a question about the text with a short answer (MeDiSumQA)."""
    f = resolve_fields(cfg, SUMMARISATION_FIELDS, ("text", "summary"))
    sections = [c.strip() for c in f["text"].split(",")] if "," in f["text"] else []

    def convert(rec: dict, row: int | None) -> Example:
        metadata = {_identifier(c): text(rec, c, required=False) for c in sections}
        if f["question"]:
            metadata["question"] = text(rec, f["question"])
        return Example(
            id=example_id(cfg, rec, f["id"], row),
            task=cfg.name,
            input=text(rec, f["text"]),
            gold=text(rec, f["summary"]),
            query=metadata.get("question", ""),
            metadata=metadata,
            source=f"{source_label(cfg)}:{row}",
        )

    return build(cfg, convert, problems, id_field=f["id"])


def _identifier(column: str) -> str:
    """A column name as a template variable ("Subjective Sections" -> Subjective_Sections)."""
    return re.sub(r"\W", "_", column.strip())


CODING_FIELDS = {"id": "id", "text": "text", "codes": "codes"}
_CODE_SHAPE = re.compile(r"^[A-Za-z]\d[0-9A-Za-z](?:\.?[0-9A-Za-z]{1,4})?$")


def load_coding(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """A note and its ICD-10 codes (a list, or one string separated by , ; | or spaces)."""
    f = resolve_fields(cfg, CODING_FIELDS, ("text", "codes"))

    def convert(rec: dict, row: int | None) -> Example:
        note = text(rec, f["text"])
        value = get(rec, f["codes"])
        items = re.split(r"[,;|\s]+", value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise RowError("expected a list of codes or a delimited string", field=f["codes"])
        # CLUE's MeDiSumCode: [{"code": "I5030", ...}, ...] (MIMIC-IV diagnoses_icd rows)
        items = [c.get("code", "") if isinstance(c, dict) else c for c in items]
        codes = tuple(dict.fromkeys(str(c).strip().upper() for c in items if str(c).strip()))
        if not codes:
            raise RowError("no codes", field=f["codes"])
        bad = [c for c in codes if not _CODE_SHAPE.match(c)]
        if bad:
            raise RowError(f"{bad[0]!r} does not look like an ICD-10 code", field=f["codes"])
        return Example(
            id=example_id(cfg, rec, f["id"], row),
            task=cfg.name,
            input=note,
            gold=codes,
            source=f"{source_label(cfg)}:{row}",
        )

    return build(cfg, convert, problems, id_field=f["id"])
