"""Plain data passed between stages, so any stage can be tested or swapped alone."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"  # option letters of a multiple-choice item, in order


def adds_title(title: str, text: str) -> bool:
    """Whether a text should be shown with its title in front: it has one and does not
    already start with it (ontology terms often do)."""
    return bool(title) and not text.startswith(title)


def titled(title: str, text: str, sep: str = ". ") -> str:
    """The text with its title in front, unless it already starts with it."""
    return f"{title}{sep}{text}" if adds_title(title, text) else text


def answer_text(value: Any) -> str:
    """An answer or gold answer as one line: codes and answers joined by ", ", an entity's
    synonyms by " | " (BioASQ: `idarucizumab | Praxbind, protamine sulfate`)."""
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return ", ".join(" | ".join(map(str, v)) if isinstance(v, tuple | list) else str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Document:
    """One document of a corpus, as a loader yields it."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it came from, for error messages: "file.jsonl:12"


@dataclass(frozen=True)
class Chunk:
    """A piece of a document that is embedded and retrieved."""

    id: str
    doc_id: str
    text: str
    title: str = ""
    start: int = 0  # character offsets into the document text
    end: int = 0
    ordinal: int = 0  # position of the chunk within its document


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score and 1-based rank."""

    chunk: Chunk
    score: float
    rank: int
    first_rank: int | None = None  # its rank in the first stage, when a reranker reordered it


@dataclass(frozen=True)
class Example:
    """One evaluation item, whatever the task type."""

    id: str
    task: str
    input: str  # what the model reads: case + question, note, premise/hypothesis, document
    # letter ("C"), label ("entailment"), reference text(s), codes, or entities as synonyms
    gold: str | tuple[str, ...] | tuple[tuple[str, ...], ...]
    options: tuple[str, ...] = ()  # option texts of a multiple-choice item, in order A, B, ...
    documents: tuple[str, ...] = ()  # documents given with the item (PubMedQA, long-document QA)
    query: str = ""  # what retrieval searches with; empty means `input`
    # ids of the corpus documents that answer it (retrieval metrics; none: no metrics) and of
    # the documents it was made from (what `retriever.exclude=gold_source` leaves out)
    evidence: tuple[str, ...] = ()
    source_docs: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "file.jsonl:12", for error messages
    # solved items put before this one as user/assistant turns (few-shot); never scored
    shots: tuple[Example, ...] = ()


@dataclass
class Prediction:
    """A model's answer to one example, with its per-example scores."""

    example_id: str
    output: str  # generated text ("" when options were scored by log-likelihood)
    parsed: str | tuple[str, ...] | None  # the extracted answer
    gold: str | tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)  # per-example metric values
    option_logprobs: tuple[float, ...] = ()
    retrieved: tuple[str, ...] = ()  # chunk ids put in the prompt
    prompt_hash: str = ""
    tokens: int | None = None  # prompt and generated tokens (the runner fills it from the cell record)
    queries: tuple[str, ...] = ()  # RAG methods: every query searched (rewrites, follow-ups)
    generated: tuple[str, ...] = ()  # RAG methods: passages the model wrote (never evidence)

    def to_json(self) -> str:
        """One line of a cell's `predictions.jsonl`: every field, tuples as lists; the RAG
        methods' queries and generated passages only where an arm has them."""
        row = asdict(self)
        for key in ("queries", "generated"):
            if not row[key]:
                del row[key]
        return json.dumps(row, default=str)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Prediction:
        """A `predictions.jsonl` row read back (lists as tuples, scores as floats); rows of
        earlier versions lack some fields, which take their defaults. ValueError names a
        field that is missing or malformed."""
        if not isinstance(row, Mapping):
            raise ValueError(f"not a prediction: {_short(row)}")
        return cls(
            example_id=_get(row, "example_id", _str),
            output=_get(row, "output", _str, ""),
            parsed=_get(row, "parsed", _answer, None),
            gold=_get(row, "gold", _answer, ""),
            scores=_get(row, "scores", _scores, {}),
            option_logprobs=_get(row, "option_logprobs", lambda v: tuple(map(_float, _list(v))), ()),
            retrieved=_get(row, "retrieved", _strs, ()),
            prompt_hash=_get(row, "prompt_hash", _str, ""),
            tokens=_get(row, "tokens", _int, None),
            queries=_get(row, "queries", _strs, ()),
            generated=_get(row, "generated", _strs, ()),
        )


# -- the per-item record of a cell ------------------------------------------------------------

# one option's log-likelihood as a cell record keeps it: the fields of
# `biorag.models.base.LoglikelihoodResult` in order (logprob, n_tokens, n_chars, is_greedy)
OptionLoglikelihood = tuple[float, int, int, bool]


@dataclass(frozen=True)
class RankedChunk:
    """One chunk of an item's ranked list, as a cell record keeps it."""

    chunk_id: str
    doc_id: str
    score: float  # the last stage's score (the reranker's, with a rerank stage)
    first_rank: int | None = None  # its rank in the first stage, when a rerank stage reordered it

    def to_json(self) -> list[Any]:
        """`[chunk_id, doc_id, score]`, then the first-stage rank when there is one."""
        return [self.chunk_id, self.doc_id, self.score, *([self.first_rank] if self.first_rank else [])]

    @classmethod
    def from_json(cls, row: Any) -> RankedChunk:
        items = _list(row)
        if len(items) not in (3, 4):
            raise ValueError(f"a ranked chunk is [chunk_id, doc_id, score(, first_rank)], not {_short(row)}")
        return cls(_str(items[0]), _str(items[1]), _float(items[2]), _int(items[3]) if len(items) == 4 else None)


@dataclass(frozen=True)
class CellRecord:
    """What a cell keeps of one item: the runner appends it to the prediction cache as soon as
    the item's batch is done, scores the cell from these records (answers, retrieval measures,
    cost) and writes the cell's TREC run from them; a killed run resumes from them.

    `to_json` gives the cache line, key for key as biorag has written it since the rankings
    were kept; `from_json` also reads the lines of earlier versions, which lack the fields
    marked "older caches" (they take the defaults, which the cell's scoring reads as before).
    """

    id: str  # the example's id
    prompt_hash: str  # of the rendered prompt (`Prompt.hash`)
    retrieved: tuple[str, ...]  # chunk ids put in the prompt, in prompt order
    output: str  # the generated text ("" when options were scored by log-likelihood alone);
    # with self-consistency, the majority of `samples`
    ll: tuple[OptionLoglikelihood, ...]  # each option's log-likelihood in option order; () if not scored
    tokens: int  # the prompt's tokens and every generated token (the cell's token count)
    retrieval_s: float  # seconds of retrieval (rerank included) per item of its batch
    model_s: float  # seconds of model calls per item of its batch
    truncated: bool = False  # a passage or document was cut to fit the prompt's budget
    # the retrieved chunks in rank order, deep enough for every retrieval measure ((): closed
    # book; None: older caches, whose cells get no retrieval measures), and the documents of
    # the passages that went into the prompt, in rank order (evidence-in-prompt)
    ranked: tuple[RankedChunk, ...] | None = None
    prompt_docs: tuple[str, ...] | None = None
    samples: tuple[str, ...] = ()  # the outputs sampled for self-consistency (empty: greedy)
    gen_tokens: int = 0  # tokens of `output` (the budget check of truncated outputs); 0 in older caches
    rerank_s: float | None = None  # the rerank stage's part of retrieval_s; None without one
    query_cut: bool = False  # the query was longer than the query encoder reads and was cut
    # -- RAG methods (biorag.augment); absent from the lines of arms without them --
    queries: tuple[str, ...] = ()  # every query searched: rewrites, follow-up questions
    generated: tuple[str, ...] = ()  # passages the model wrote for the context
    candidate_docs: tuple[str, ...] | None = None  # filter: documents of the passages judged
    kept: int = 0  # filter: passages kept
    method_tokens: int = 0  # the methods' model tokens, seconds and calls for this item
    method_s: float = 0.0
    method_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        """The record as a prediction cache line holds it (JSON types, in the cache's key order)."""
        out: dict[str, Any] = {"id": self.id, "prompt_hash": self.prompt_hash, "retrieved": list(self.retrieved)}
        if self.ranked is not None:
            out["ranked"] = [h.to_json() for h in self.ranked]
        if self.prompt_docs is not None:
            out["prompt_docs"] = list(self.prompt_docs)
        out["output"] = self.output
        if self.samples:
            out["samples"] = list(self.samples)
        out.update({
            "ll": [list(x) for x in self.ll], "tokens": self.tokens, "gen_tokens": self.gen_tokens,
            "retrieval_s": self.retrieval_s, "rerank_s": self.rerank_s, "query_cut": self.query_cut,
            "model_s": self.model_s, "truncated": self.truncated,
        })
        if self.method_calls or self.queries or self.generated or self.candidate_docs is not None:
            out.update({"queries": list(self.queries), "generated": list(self.generated),
                        "candidate_docs": None if self.candidate_docs is None else list(self.candidate_docs),
                        "kept": self.kept, "method_tokens": self.method_tokens, "method_s": self.method_s,
                        "method_calls": self.method_calls})
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellRecord:
        """A cache line's record, today's or an older version's. ValueError names a field that
        is missing or malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"not a cell record: {_short(data)}")
        return cls(
            id=_get(data, "id", _str),
            prompt_hash=_get(data, "prompt_hash", _str),
            retrieved=_get(data, "retrieved", _strs),
            output=_get(data, "output", _str),
            ll=_get(data, "ll", lambda v: tuple(_option_ll(x) for x in _list(v))),
            tokens=_get(data, "tokens", _int),
            retrieval_s=_get(data, "retrieval_s", _float),
            model_s=_get(data, "model_s", _float),
            truncated=_get(data, "truncated", _bool, False),
            ranked=_get(data, "ranked", lambda v: tuple(RankedChunk.from_json(x) for x in _list(v)), None),
            prompt_docs=_get(data, "prompt_docs", _strs, None),
            samples=_get(data, "samples", _strs, ()),
            gen_tokens=_get(data, "gen_tokens", _int, 0),
            rerank_s=_get(data, "rerank_s", lambda v: None if v is None else _float(v), None),
            query_cut=_get(data, "query_cut", _bool, False),
            queries=_get(data, "queries", _strs, ()),
            generated=_get(data, "generated", _strs, ()),
            candidate_docs=_get(data, "candidate_docs", lambda v: None if v is None else _strs(v), None),
            kept=_get(data, "kept", _int, 0),
            method_tokens=_get(data, "method_tokens", _int, 0),
            method_s=_get(data, "method_s", _float, 0.0),
            method_calls=_get(data, "method_calls", _int, 0),
        )


# -- reading JSON back: the value as it was written, or a ValueError naming the field ----------

_REQUIRED: Any = object()


def _get(data: Mapping[str, Any], key: str, read: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
    if key not in data:
        if default is _REQUIRED:
            raise ValueError(f"field '{key}' is missing")
        return default
    try:
        return read(data[key])
    except ValueError as e:
        raise ValueError(f"field '{key}': {e}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {_short(value)}")
    return list(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_short(value)}")
    return value


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(_str(x) for x in _list(value))


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_short(value)}")
    return value


def _float(value: Any) -> float:
    """A number as written (an int stays an int, so it is written back the same way)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_short(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_short(value)}")
    return value


def _option_ll(value: Any) -> OptionLoglikelihood:
    items = _list(value)
    if len(items) != 4:
        raise ValueError(f"an option's log-likelihood is [logprob, n_tokens, n_chars, is_greedy], not {_short(value)}")
    return (_float(items[0]), _int(items[1]), _int(items[2]), _bool(items[3]))


def _answer(value: Any) -> Any:
    """An answer as written: a string, None, or lists (of lists) of strings, as tuples."""
    return tuple(_answer(x) for x in value) if isinstance(value, list | tuple) else value


def _scores(value: Any) -> dict[str, float]:
    """Per-example scores as floats: a value the writer could not encode as a number was
    written as its text, and a null is an unscored item (NaN)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object of scores, got {_short(value)}")
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = math.nan if v is None else float(v)
        except (TypeError, ValueError):
            raise ValueError(f"score '{k}' is not a number: {_short(v)}") from None
    return out
