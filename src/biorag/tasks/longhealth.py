"""Long-document multiple choice: LongHealth's benchmark JSON in CLUE's three settings, or
one record per question.

LongHealth (`benchmark_v5.json`) is an object keyed by patient, each with its `texts` and
`questions`; a question's `answer_location` names the texts that answer it. The settings are
CLUE's (`eval/eval_LongHealth.py`):

1. the patient's own texts: those that answer first, then the patient's others;
2. the answering texts, then texts of other patients as distractors, and a sixth option F,
   "Question cannot be answered with provided documents";
3. other patients' texts only: the gold answer is F.

The prompt builder packs the texts in that order under `document_tokens` (the first that
does not fit is cut, as CLUE cuts it), then shuffles the packed texts with the item's seed:
what fits is chosen before the order is mixed. Each question gives `variants` items (CLUE:
5), each with its own order and, in settings 2 and 3, its own 10 sampled distractors. Where
CLUE draws from an unseeded `random`, biorag seeds every draw from the task seed, the
question and the variant, so a rerun puts the same prompts to the model.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from biorag.errors import ConfigError
from biorag.tasks.config import TaskConfig
from biorag.tasks.loaders import _gold_letter, _mcq, _options
from biorag.tasks.records import (
    KEY,
    Problem,
    RowError,
    build,
    example_id,
    get,
    iter_records,
    resolve_fields,
    text,
)
from biorag.types import Example

ABSTAIN = "Question cannot be answered with provided documents"  # CLUE's option F
DISTRACTORS = 10  # other patients' texts per prompt in settings 2 and 3 (CLUE's n=10)
DOCUMENT_SEED = "document_seed"  # metadata: the prompt builder shuffles the packed documents
LONGDOC_FIELDS = {"id": "id", "documents": "documents", "question": "question", "options": "options",
                  "answer": "answer"}


def _documents(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not any(str(d).strip() for d in value):
        raise RowError("expected a non-empty list (or object) of document texts", field=field)
    return tuple(str(d) for d in value if str(d).strip())


def _is_patient(rec: dict) -> bool:
    return "texts" in rec and "questions" in rec


def load_longdoc(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """Long-document multiple choice: one record per question (documents, question, options,
    answer), or LongHealth's own benchmark JSON ({patient: {texts, questions}})."""
    f = resolve_fields(cfg, LONGDOC_FIELDS, ("documents", "question", "options", "answer"))
    records = list(iter_records(cfg))
    patients = {_patient_id(rec, row): rec for row, rec in records if isinstance(rec, dict) and _is_patient(rec)}
    if (cfg.setting != 1 or cfg.variants > 1) and not patients:
        raise ConfigError(f"task {cfg.name}: setting {cfg.setting} / variants {cfg.variants} need "
                          "LongHealth's benchmark JSON (patients with texts and questions)")
    if cfg.setting != 1 and len(patients) < 2:
        raise ConfigError(f"task {cfg.name}: setting {cfg.setting} takes distractors from other "
                          "patients; the file has one patient")

    def convert(rec: dict, row: int | None) -> Example | list[Example]:
        if _is_patient(rec):
            return _patient(cfg, rec, row, patients)
        docs = _documents(get(rec, f["documents"]), f["documents"])
        question = text(rec, f["question"])
        options = _options(rec, f["options"])
        gold = _gold_letter(get(rec, f["answer"]), options, cfg.answer_base, f["answer"])
        return _mcq(cfg, example_id(cfg, rec, f["id"], row), question, options, gold, row, documents=docs)

    return build(cfg, convert, problems, records=iter(records), id_field=f["id"])


def _patient_id(rec: dict, row: int | None) -> str:
    return str(rec.get(KEY) or rec.get("patient_id") or row)


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def _patient(cfg: TaskConfig, rec: dict, row: int | None, patients: dict[str, dict]) -> list[Example]:
    patient = _patient_id(rec, row)
    texts = rec["texts"]
    if not isinstance(texts, dict):
        texts = {f"text_{i}": t for i, t in enumerate(_documents(texts, "texts"))}
    _documents(texts, "texts")  # not empty
    if not isinstance(rec["questions"], list) or not rec["questions"]:
        raise RowError("expected a non-empty list of questions", field="questions")
    others = [str(t) for pid, p in patients.items() if pid != patient
              for t in (p["texts"].values() if isinstance(p["texts"], dict) else p["texts"])]
    out = []
    for j, q in enumerate(rec["questions"]):
        where = f"questions[{j}]"
        if not isinstance(q, dict):
            raise RowError("not an object", field=where)
        try:
            question = text(q, "question")
            options = tuple(text(q, f"answer_{c}") for c in "abcde" if f"answer_{c}" in q)
            if len(options) < 2:
                raise RowError("fewer than 2 options (answer_a, answer_b, ...)", field="answer_a")
            gold = _gold_letter(get(q, "correct"), options, cfg.answer_base, "correct")
            located = list(q.get("answer_location") or {})
            missing = [t for t in located if t not in texts]
            if missing:
                raise RowError(f"names text {missing[0]!r}, which the patient does not have",
                               field="answer_location")
        except RowError as e:
            raise RowError(str(e), field=f"{where}.{e.field}") from None
        qid = f"{patient}-q{q.get('No', j + 1)}"
        answering = [str(texts[t]) for t in located]
        own_rest = [str(t) for k, t in texts.items() if k not in located]
        if cfg.setting != 1:
            options, gold = (*options, ABSTAIN), ("F" if cfg.setting == 3 else gold)
        for v in range(cfg.variants):
            if cfg.setting == 1:
                docs = answering + own_rest if located else list(texts.values())
            else:
                picked = random.Random(_seed(cfg.seed, qid, cfg.setting, v)).sample(others, min(DISTRACTORS, len(others)))
                docs = (answering if cfg.setting == 2 else []) + picked
            plain = cfg.setting == 1 and cfg.variants == 1  # the task's default: texts in file order
            ex_id = qid if plain else f"{qid}-s{cfg.setting}-v{v}"
            meta: dict[str, Any] = {"patient": patient, "diagnosis": str(rec.get("diagnosis", "")),
                                    "setting": cfg.setting, "variant": v}
            if not plain:
                meta[DOCUMENT_SEED] = _seed(cfg.seed, ex_id)
            out.append(_mcq(cfg, ex_id, question, options, gold, row, documents=tuple(docs), **meta))
    return out
