"""Loaders for the public and licensed task formats; each turns records into `Example`s.

Every loader is `load_x(cfg, problems=None) -> list[Example]` (see `records.build`): field
names come from the loader's defaults, overridden by the task's `fields` mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from biorag.tasks.config import TaskConfig
from biorag.tasks.extraction import LETTERS, normalise_text
from biorag.tasks.records import (
    KEY,
    Problem,
    RowError,
    build,
    example_id,
    get,
    iter_records,
    resolve_fields,
    source_label,
    text,
)
from biorag.tasks.text_loaders import load_coding, load_nli, load_summarisation
from biorag.types import Example

# the registry names every loader as biorag.tasks.loaders:load_x
__all__ = [
    "load_coding",
    "load_mcq",
    "load_medmcqa",
    "load_medqa",
    "load_mmlu",
    "load_nli",
    "load_pubmedqa",
    "load_summarisation",
]

# -- shared multiple-choice helpers --------------------------------------------------------


def _options(rec: dict, spec: str) -> tuple[str, ...]:
    """Option texts from a {letter: text} object, a list, or several columns ("opa,opb")."""
    if "," in spec:
        opts = tuple(text(rec, name.strip()) for name in spec.split(","))
    else:
        value = get(rec, spec)
        if isinstance(value, dict):
            keys = sorted(value, key=lambda k: str(k).upper())
            if [str(k).upper() for k in keys] != list(LETTERS[: len(keys)]):
                raise RowError(
                    f"option keys must be A, B, C, ... in order, found {', '.join(map(str, keys))}",
                    field=spec,
                )
            opts = tuple(str(value[k]).strip() for k in keys)
        elif isinstance(value, (list, tuple)):
            opts = tuple(str(v).strip() for v in value)
        else:
            raise RowError("expected an object {A: ..., B: ...} or a list of options", field=spec)
    if not 2 <= len(opts) <= len(LETTERS):
        raise RowError(
            f"{len(opts)} options; a multiple-choice item needs 2 to {len(LETTERS)}", field=spec
        )
    if any(not o for o in opts):
        raise RowError(
            f"option {LETTERS[[bool(o) for o in opts].index(False)]} is empty", field=spec
        )
    return opts


def _gold_letter(value: Any, options: Sequence[str], base: int, field: str) -> str:
    """The gold answer as a letter: from a letter, an index (0- or 1-based) or an option text."""
    letters = LETTERS[: len(options)]
    span = f"{letters[0]}–{letters[-1]}"
    if isinstance(value, bool) or value is None:
        raise RowError("missing gold answer", field=field)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        idx = int(value) - base
        if 0 <= idx < len(options):
            return letters[idx]
        raise RowError(
            f"gold answer {value} is not among the {len(options)} options ({span}; answer_base {base})",
            field=field,
        )
    s = str(value).strip()
    bare = s.strip("().[] ").upper()
    if len(bare) == 1 and bare in letters:
        return bare
    norm = [normalise_text(o) for o in options]
    if normalise_text(s) in norm:
        return letters[norm.index(normalise_text(s))]
    raise RowError(f"gold answer {s!r} is not among the options {span}", field=field)


def _mcq(
    cfg: TaskConfig,
    ex_id: str,
    question: str,
    options: tuple[str, ...],
    gold: str,
    row: int | None,
    *,
    case: str = "",
    documents: tuple[str, ...] = (),
    evidence: tuple[str, ...] = (),
    **meta: Any,
) -> Example:
    body = f"{case}\n\n{question}" if case else question
    return Example(
        id=ex_id,
        task=cfg.name,
        input=body,
        gold=gold,
        options=options,
        documents=documents,
        query=question if documents else "",  # the documents are long: search with the question
        evidence=evidence,
        source_docs=evidence,  # the loaders' gold evidence is the item's own source
        metadata={"question": question, "case": case, **meta},
        source=f"{source_label(cfg)}:{row}",
    )


# -- multiple choice -----------------------------------------------------------------------

MCQ_FIELDS = {
    "id": "id",
    "case": "case",
    "question": "question",
    "options": "options",
    "answer": "answer",
}


def load_mcq(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """Case-challenge style (NEJM, JAMA): case text, question, options A–E, answer letter."""
    f = resolve_fields(cfg, MCQ_FIELDS, ("question", "options", "answer"))

    def convert(rec: dict, row: int | None) -> Example:
        case = text(rec, f["case"], required=False) if f["case"] else ""
        question = text(rec, f["question"])
        options = _options(rec, f["options"])
        gold = _gold_letter(get(rec, f["answer"]), options, cfg.answer_base, f["answer"])
        return _mcq(
            cfg, example_id(cfg, rec, f["id"], row), question, options, gold, row, case=case
        )

    return build(cfg, convert, problems, id_field=f["id"])


MEDQA_FIELDS = {
    "id": None,
    "question": "question",
    "options": "options",
    "answer": "answer_idx",
    "answer_text": "answer",
}


def load_medqa(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """MedQA (USMLE) as distributed: question, options {A: ...}, answer_idx, answer (text)."""
    f = resolve_fields(cfg, MEDQA_FIELDS, ("question", "options", "answer"))

    def convert(rec: dict, row: int | None) -> Example:
        question = text(rec, f["question"])
        options = _options(rec, f["options"])
        gold = _gold_letter(get(rec, f["answer"]), options, cfg.answer_base, f["answer"])
        if f["answer_text"]:
            stated = text(rec, f["answer_text"], required=False)
            if stated and normalise_text(stated) != normalise_text(options[LETTERS.index(gold)]):
                raise RowError(
                    f"answer text {stated!r} is not option {gold} ({options[LETTERS.index(gold)]!r})",
                    field=f["answer_text"],
                )
        meta = {"meta_info": rec.get("meta_info", "")}
        return _mcq(cfg, example_id(cfg, rec, f["id"], row), question, options, gold, row, **meta)

    return build(cfg, convert, problems, id_field=f["id"])


MEDMCQA_FIELDS = {
    "id": "id",
    "question": "question",
    "options": "opa,opb,opc,opd",
    "answer": "cop",
    "explanation": "exp",
    "subject": "subject_name",
    "topic": "topic_name",
}


def load_medmcqa(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """MedMCQA as on the hub (openlifescienceai/medmcqa): opa..opd and cop, 0-based there;
    the GitHub release numbers cop 1-4 (answer_base: 1)."""
    f = resolve_fields(cfg, MEDMCQA_FIELDS, ("question", "options", "answer"))

    def convert(rec: dict, row: int | None) -> Example:
        question = text(rec, f["question"])
        options = _options(rec, f["options"])
        cop = get(rec, f["answer"])
        if cop in (-1, "-1", None, ""):
            raise RowError(
                "no gold answer (MedMCQA's test split is unlabelled; use split=validation)",
                field=f["answer"],
            )
        gold = _gold_letter(cop, options, cfg.answer_base, f["answer"])
        meta = {
            k: text(rec, f[k], required=False) for k in ("explanation", "subject", "topic") if f[k]
        }
        return _mcq(cfg, example_id(cfg, rec, f["id"], row), question, options, gold, row, **meta)

    return build(cfg, convert, problems, id_field=f["id"])


PUBMEDQA_FIELDS = {
    "id": KEY,
    "question": "QUESTION",
    "contexts": "CONTEXTS",
    "sections": "LABELS",
    "answer": "final_decision",
    "long_answer": "LONG_ANSWER",
}
PUBMEDQA_HUB_FIELDS = {
    "id": "pubid",
    "question": "question",
    "contexts": "context.contexts",
    "sections": "context.labels",
    "answer": "final_decision",
    "long_answer": "long_answer",
}


def load_pubmedqa(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """PubMedQA: `ori_pqal.json` ({PMID: {QUESTION, CONTEXTS, final_decision}}) or the hub's
    qiaojin/PubMedQA (pubid, question, context.contexts). Options: yes / no / maybe; a null
    `contexts` field drops the abstract (the PubMedQA* setting of MIRAGE)."""
    defaults = PUBMEDQA_FIELDS if cfg.path else PUBMEDQA_HUB_FIELDS
    f = resolve_fields(cfg, defaults, ("question", "answer"))
    options = tuple(cfg.labels or ("yes", "no", "maybe"))

    def convert(rec: dict, row: int | None) -> Example:
        question = text(rec, f["question"])
        docs: tuple[str, ...] = ()
        if f["contexts"]:
            value = get(rec, f["contexts"])
            passages = [value] if isinstance(value, str) else [str(c).strip() for c in value or ()]
            if not any(passages):
                raise RowError("no context passages", field=f["contexts"])
            try:
                sections = get(rec, f["sections"]) if f["sections"] else None
            except RowError:
                sections = None
            if isinstance(sections, list) and len(sections) == len(passages):
                passages = [
                    f"{s.upper()}: {p}" if s else p for s, p in zip(sections, passages, strict=True)
                ]
            docs = ("\n".join(passages),)  # the passages are one abstract's sections
        decision = text(rec, f["answer"]).lower()
        if decision not in options:
            raise RowError(
                f"final decision {decision!r} is not one of {', '.join(options)}", field=f["answer"]
            )
        meta = (
            {"long_answer": text(rec, f["long_answer"], required=False)} if f["long_answer"] else {}
        )
        ex_id = example_id(cfg, rec, f["id"], row)
        return _mcq(
            cfg,
            ex_id,
            question,
            options,
            LETTERS[options.index(decision)],
            row,
            documents=docs,
            # the item's PMID: its abstract is the gold evidence (and a leak) in a PubMed corpus
            evidence=(ex_id,) if not ex_id.startswith(f"{cfg.name}-") else (),
            **meta,
        )

    return build(cfg, convert, problems, id_field=f["id"])


MMLU_FIELDS = {
    "id": None,
    "question": "question",
    "options": "choices",
    "answer": "answer",
    "subject": "subject",
}


def load_mmlu(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """MMLU as on the hub (cais/mmlu): question, choices, answer (0-based), subject; keeps
    the task's `subjects` (from the hub, one config per subject)."""
    f = resolve_fields(cfg, MMLU_FIELDS, ("question", "options", "answer"))
    wanted = set(cfg.subjects)

    def records():
        for row, rec in iter_records(cfg, subsets=list(cfg.subjects) or None):
            if isinstance(rec, dict) and f["subject"]:
                subject = rec.get(f["subject"]) or (cfg.subset if cfg.dataset else None)
                if wanted and subject not in wanted:
                    continue  # another subject: not part of this task
            yield row, rec

    def convert(rec: dict, row: int | None) -> Example:
        subject = text(rec, f["subject"], required=False) if f["subject"] else ""
        question = text(rec, f["question"])
        options = _options(rec, f["options"])
        gold = _gold_letter(get(rec, f["answer"]), options, cfg.answer_base, f["answer"])
        ex_id = example_id(cfg, rec, f["id"], row) if f["id"] else f"{subject or cfg.name}-{row}"
        return _mcq(cfg, ex_id, question, options, gold, row, subject=subject)

    return build(cfg, convert, problems, records=records(), id_field=f["id"])
