"""MIRAGE (Xiong et al. 2024), the benchmark of MedRAG: `benchmark.json` as MedRAG ships it.

The file is one JSON object per subset (`mmlu`, `medqa`, `medmcqa`, `pubmedqa`, `bioasq`),
each an object of items keyed by id:

    {"pubmedqa": {"12345678": {"question": "...", "options": {"A": "yes", "B": "no",
                                "C": "maybe"}, "answer": "A", "PMID": ["12345678"]}, ...}, ...}

`task.subset` picks the subset. Items carry no context (PubMedQA* is evaluated as MedRAG
does, from retrieval alone). Where an item lists gold PMIDs (`PMID`, a string or a list),
they become its gold evidence, matched against a PubMed corpus keyed by PMID
(`corpus=pubmed`); for PubMedQA they are also its source (what `exclude=gold_source`
leaves out). MIRAGE's PubMedQA PMIDs are the original annotations and many are not in
MedRAG's PubMed snippets (Teddy-XiongGZ/MIRAGE#4): the cell's recall says how many.
"""

from __future__ import annotations

from collections.abc import Iterator

from biorag.errors import InputError, did_you_mean
from biorag.tasks.config import TaskConfig
from biorag.tasks.records import Problem, RowError, build, read_json, resolve_fields, text
from biorag.types import LETTERS, Example

SUBSETS = ("mmlu", "medqa", "medmcqa", "pubmedqa", "bioasq")
MIRAGE_FIELDS = {"question": "question", "options": "options", "answer": "answer", "evidence": "PMID"}


def _records(cfg: TaskConfig) -> Iterator[tuple[int | None, dict | Problem]]:
    _, data = read_json(cfg, "MIRAGE's benchmark.json", "github.com/Teddy-XiongGZ/MIRAGE")
    if not isinstance(data, dict):
        raise InputError("expected MIRAGE's layout: an object of subsets (medqa, pubmedqa, ...)", file=cfg.path)
    subset = cfg.subset
    if subset not in data:
        raise InputError(did_you_mean(str(subset), list(data), what="MIRAGE subset") + " (task.subset)",
                         file=cfg.path, field="subset")
    items = data[subset]
    if not isinstance(items, dict):
        raise InputError(f"subset {subset!r} is not an object of items keyed by id", file=cfg.path)
    for i, (key, rec) in enumerate(items.items(), 1):
        if not isinstance(rec, dict):
            yield i, Problem(cfg.path, i, None, f"item {key!r} of {subset} is not a JSON object")
        else:
            yield i, {"__id__": str(key), **rec}


def load_mirage(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """One MIRAGE subset as a multiple-choice task, with gold PMIDs as evidence where given."""
    f = resolve_fields(cfg, MIRAGE_FIELDS, ("question", "options", "answer"))

    def convert(rec: dict, row: int | None) -> Example:
        ex_id = f"{cfg.subset}-{rec['__id__']}"
        question = text(rec, f["question"])
        opts = rec.get(f["options"])
        if not isinstance(opts, dict) or not opts:
            raise RowError(f"item {rec['__id__']}: options must be an object {{A: ..., B: ...}}", field=f["options"])
        letters = sorted(opts)
        if letters != list(LETTERS[: len(letters)]):
            raise RowError(f"item {rec['__id__']}: option keys {letters} are not A, B, ...", field=f["options"])
        answer = text(rec, f["answer"]).strip()
        if answer not in letters:
            raise RowError(f"item {rec['__id__']}: answer {answer!r} is not one of {', '.join(letters)}",
                           field=f["answer"])
        raw = rec.get(f["evidence"]) if f["evidence"] else None
        evidence = tuple(str(p) for p in ([raw] if isinstance(raw, str | int) else raw or ()))
        return Example(
            id=ex_id, task=cfg.name, input=question, gold=answer,
            options=tuple(str(opts[k]) for k in letters), evidence=evidence,
            source_docs=evidence if cfg.subset == "pubmedqa" else (),  # PubMedQA's items are made from them
            metadata={"question": question, "case": "", "subset": cfg.subset, "mirage_id": rec["__id__"]},
            source=f"{cfg.path}:{cfg.subset}:{rec['__id__']}",
        )

    return build(cfg, convert, problems, _records(cfg), id_field="__id__")
