"""BioASQ Task B (Tsatsaronis et al. 2015), the training or test JSON as BioASQ distributes it.

    {"questions": [{"id": "55031181e9bde69634000014", "type": "factoid",
                    "body": "Which gene is mutated in cystic fibrosis?",
                    "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/12345678", ...],
                    "snippets": [{"document": "http://.../pubmed/12345678", "text": "...",
                                  "offsetInBeginSection": 0, "offsetInEndSection": 57,
                                  "beginSection": "abstract", "endSection": "abstract"}],
                    "exact_answer": [["CFTR", "cystic fibrosis transmembrane ..."]],
                    "ideal_answer": ["..."]}, ...]}

`task.subset` picks one question type, scored as BioASQ's official measures do:

| subset  | task type     | gold                                     | metrics                        |
|---------|---------------|------------------------------------------|--------------------------------|
| yesno   | mcq (yes, no) | the letter of `exact_answer`             | accuracy, macro-F1             |
| factoid | qa            | one entity: its synonyms                 | strict/lenient accuracy, MRR   |
| list    | qa            | entities, each a list of synonyms        | mean precision, recall, F1     |
| summary | summarisation | every `ideal_answer`                     | ROUGE (best over the answers)  |

The PMIDs of `documents` are the item's gold evidence (match them with a PubMed corpus keyed
by PMID, `corpus=pubmed`); a BioASQ question is written by an expert, not made from one
abstract, so it has no source document to leave out. The snippets, with their sections and
offsets, are kept in `metadata["snippets"]`; `task.fields.contexts=snippets` also gives their
texts to the model as the item's documents (BioASQ's phase B, where the gold snippets are
given; the default is phase A+, where evidence must come from retrieval).

A bad question is reported with the file, the line of its `id`, the field and the question id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from biorag.errors import ConfigError, InputError, did_you_mean
from biorag.tasks.config import TaskConfig
from biorag.tasks.records import Problem, RowError, build, read_json, resolve_fields, text
from biorag.types import Example

# question type -> the task type it is scored as
SUBSETS = {"yesno": "mcq", "factoid": "qa", "list": "qa", "summary": "summarisation"}
YESNO = ("yes", "no")
BIOASQ_FIELDS = {
    "id": "id",
    "question": "body",
    "type": "type",
    "documents": "documents",
    "snippets": "snippets",
    "exact_answer": "exact_answer",
    "ideal_answer": "ideal_answer",
    "contexts": None,  # `snippets`: give the gold snippets' texts to the model (phase B)
}
_PMID = re.compile(r"(?:pubmed/|^)(\d+)/?$")
_ID_LINE = re.compile(r'"id"\s*:\s*"([^"]*)"')


def _check_subset(cfg: TaskConfig) -> str:
    if cfg.subset not in SUBSETS:
        raise ConfigError(f"task {cfg.name}: task.subset: "
                          + did_you_mean(str(cfg.subset), SUBSETS, what="BioASQ question type"))
    if cfg.type != SUBSETS[cfg.subset]:
        raise ConfigError(f"task {cfg.name}: BioASQ {cfg.subset} questions are a "
                          f"{SUBSETS[cfg.subset]} task, not {cfg.type}")
    return cfg.subset


def _records(cfg: TaskConfig, type_field: str) -> Iterator[tuple[int | None, dict | Problem]]:
    """The questions of the subset's type, each with the line of its `id` in the file."""
    raw, data = read_json(cfg, "BioASQ's Task B JSON", "participants-area.bioasq.org (free registration)")
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise InputError('expected BioASQ\'s layout: {"questions": [...]}', file=cfg.path, field="questions")
    lines: dict[str, int] = {}
    line, pos = 1, 0
    for m in _ID_LINE.finditer(raw):
        line, pos = line + raw.count("\n", pos, m.start()), m.start()
        lines.setdefault(m.group(1), line)
    for i, q in enumerate(questions, 1):
        if not isinstance(q, dict):
            yield None, Problem(cfg.path, None, None, f"question {i} is not a JSON object")
            continue
        line = lines.get(str(q.get("id")))
        kind = q.get(type_field)
        if kind not in SUBSETS:
            yield line, Problem(cfg.path, line, type_field, f"question {q.get('id', i)}: type "
                                f"{kind!r} is not one of {', '.join(SUBSETS)}")
        elif kind == cfg.subset:
            yield line, q


def pmid(url: Any, field: str) -> str:
    """The PMID of a BioASQ document URL (`http://www.ncbi.nlm.nih.gov/pubmed/12345678`)."""
    m = _PMID.search(str(url).strip())
    if not m:
        raise RowError(f"{url!r} is not a PubMed URL or PMID", field=field)
    return m.group(1)


def _list(rec: dict, field: str | None) -> list:
    value = rec.get(field) if field else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(f"expected a list, found a JSON {type(value).__name__}", field=field)
    return value


def _snippets(rec: dict, field: str | None) -> tuple[dict, ...]:
    out = []
    for j, s in enumerate(_list(rec, field)):
        if not isinstance(s, dict) or not str(s.get("text", "")).strip():
            raise RowError(f"snippet {j} has no text", field=f"{field}[{j}]")
        out.append({
            "document": pmid(s.get("document", ""), f"{field}[{j}].document"),
            "text": str(s["text"]).strip(),
            "section": s.get("beginSection", ""),
            "begin": s.get("offsetInBeginSection"),
            "end": s.get("offsetInEndSection"),
        })
    return tuple(out)


def _synonyms(value: Any, field: str) -> tuple[str, ...]:
    names = tuple(str(v).strip() for v in (value if isinstance(value, list) else [value])
                  if isinstance(v, str | int | float) and str(v).strip())
    if not names:
        raise RowError("an answer with no names", field=field)
    return names


def _entities(value: Any, field: str, kind: str) -> tuple[tuple[str, ...], ...]:
    """Gold entities, each a tuple of synonyms. A factoid's `exact_answer` is one entity
    (`["CFTR", "..."]` or `[["CFTR", "..."]]`: every name is a synonym); a list's is a list of
    entities (`[["a", "a2"], ["b"]]`; a flat list of strings is one name per entity)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowError(f"a {kind} question needs a non-empty list of answers", field=field)
    if kind == "factoid":
        flat = [n for v in value for n in (v if isinstance(v, list) else [v])]
        return (_synonyms(flat, field),)
    return tuple(_synonyms(v, f"{field}[{j}]") for j, v in enumerate(value))


def _ideal(rec: dict, field: str) -> tuple[str, ...]:
    value = rec.get(field)
    answers = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    answers = [str(a).strip() for a in answers if isinstance(a, str) and a.strip()]
    if not answers:
        raise RowError("a summary question needs an ideal answer (a string or a list)", field=field)
    return tuple(answers)


def load_bioasq(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """The questions of one BioASQ type (`task.subset`), with their PMIDs as gold evidence."""
    kind = _check_subset(cfg)
    f = resolve_fields(cfg, BIOASQ_FIELDS, ("id", "question", "type", "exact_answer", "ideal_answer"))
    if f["contexts"] not in (None, f["snippets"]):
        raise ConfigError(f"task {cfg.name}: fields.contexts is null (phase A+) or "
                          f"'{f['snippets']}' (phase B: the gold snippets), not {f['contexts']!r}")

    def convert(rec: dict, row: int | None) -> Example:
        qid = text(rec, f["id"])
        try:
            question = text(rec, f["question"])
            evidence = tuple(dict.fromkeys(pmid(u, f["documents"]) for u in _list(rec, f["documents"])))
            snippets = _snippets(rec, f["snippets"])
            options: tuple[str, ...] = ()
            if kind == "yesno":
                answer = text(rec, f["exact_answer"]).casefold()
                if answer not in YESNO:
                    raise RowError(f"exact_answer must be 'yes' or 'no', not {answer!r}", field=f["exact_answer"])
                gold: Any = "AB"[YESNO.index(answer)]
                options = YESNO
            elif kind == "summary":
                gold = _ideal(rec, f["ideal_answer"])
            else:
                gold = _entities(rec.get(f["exact_answer"]), f["exact_answer"], kind)
        except RowError as e:
            raise RowError(f"question {qid} ({kind}): {e}", field=e.field) from None
        return Example(
            id=qid, task=cfg.name, input=question, gold=gold, options=options,
            documents=tuple(s["text"] for s in snippets) if f["contexts"] else (),
            query=question, evidence=evidence,
            metadata={"question": question, "case": "", "type": kind, "snippets": snippets,
                      "ideal_answer": rec.get(f["ideal_answer"])},
            source=f"{cfg.path}:{row}",
        )

    return build(cfg, convert, problems, _records(cfg, f["type"]), id_field=f["id"])
