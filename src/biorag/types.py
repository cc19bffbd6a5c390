"""Plain data passed between stages, so any stage can be tested or swapped alone."""

from __future__ import annotations

from dataclasses import dataclass, field
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
