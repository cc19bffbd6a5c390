"""Reading answers out of model outputs: letters, labels and ICD-10 codes, robust to the
ways models write them ("The answer is (C)", "**C**", "c) ...", an option's text, full-width
letters). Pure functions; `biorag.scoring.metrics` re-exports them."""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Sequence

from biorag.types import LETTERS

Parsed = str | tuple[str, ...] | None


# -- text normalisation --------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """NFKC (full-width letters, non-breaking spaces), casefold, collapse whitespace."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


def strip_punct(text: str) -> str:
    return " ".join(re.sub(rf"[{re.escape(string.punctuation)}]", " ", text).split())


# -- answer extraction ---------------------------------------------------------------------

_ANSWER_STATEMENT = re.compile(
    r"(?i:\banswer\b)[^A-Za-z0-9]{0,3}(?i:(?:is|would be|will be|should be|=)\s*)?[:\-]?\s*"
    r"(?i:(?:option|choice)\s+)?[\(\[\*\"']*"
    # a lower-case letter only when no word follows: "answer: c" but not "answer is a fever"
    r"(?:([A-J])|([a-j])(?!\s+[a-z]))(?![A-Za-z0-9])"
)
_ALSO = re.compile(r"^[\)\]\*\"']*\s*(?:or|and|/|,)\s*[\(\[\*]*([A-J])(?![A-Za-z0-9])")
_WHOLE = re.compile(r"^\W*([A-Ja-j])\W*$")
# "E. coli", "H. pylori": a capital, a full stop and a lower-case word is a genus, not an answer
_GENUS = r"(?!\.\s+[a-z]{3,})"
_LEADING = re.compile(rf"^\W*([A-Ja-j]){_GENUS}\s*[).:\]]")  # "C.", "c) …"
_MARKED = re.compile(
    rf"\(([A-J])\)|\[([A-J])\]|\*\*([A-J])\*\*|(?<![A-Za-z0-9])([A-J]){_GENUS}[).:](?=\s|$)"
    r"|(?:option|choice)\s+([A-J])(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_BARE = re.compile(rf"(?<![A-Za-z0-9'])([A-J]){_GENUS}(?![A-Za-z0-9'])")
_CONJUNCTIONS = {"or", "and", "nor", "is", "vs", "versus", "was", "seems", "because"}


def _single(letters: list[str], valid: str) -> str | None:
    found = {c.upper() for c in letters if c and c.upper() in valid}
    return found.pop() if len(found) == 1 else None


def extract_letter(
    text: str, options: Sequence[str] = (), n_options: int | None = None
) -> str | None:
    """The answer letter in a model's output, or None when there is none or it is ambiguous.

    In order: an explicit statement ("The answer is (C)", "Answer: C"); an output that is
    only a letter ("C.", "**C**"); a leading letter ("c) ..."); marked letters ("(C)",
    "option C"); bare capital letters; finally an option's text instead of its letter.
    Two different letters at the first level that has any give None.
    """
    text = unicodedata.normalize("NFKC", text or "").strip()
    if not text:
        return None
    valid = LETTERS[: n_options or len(options) or 5]
    stated = []
    for m in _ANSWER_STATEMENT.finditer(text):
        stated.append(m.group(1) or m.group(2))
        also = _ALSO.match(text[m.end() :])  # "the answer is A or C" names two
        if also:
            stated.append(also.group(1))
    if stated:
        return _single(stated, valid)
    for pattern in (_WHOLE, _LEADING):
        m = pattern.match(text)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    marked = [next(g for g in m.groups() if g) for m in _MARKED.finditer(text)]
    marked = [c for c in marked if c.upper() in valid]
    if marked:
        return _single(marked, valid)
    bare = []
    for m in _BARE.finditer(text):
        if m.group(1) == "A":  # "A 45-year-old man ..." is an article, "A or C" is not
            nxt = re.match(r"\s+([a-z0-9]+)", text[m.end() :])
            if nxt and nxt.group(1) not in _CONJUNCTIONS:
                continue
        bare.append(m.group(1))
    bare = [c for c in bare if c in valid]
    if bare:
        return _single(bare, valid)
    return _match_option_text(text, options)


def _match_option_text(text: str, options: Sequence[str]) -> str | None:
    """The letter of the one option whose text the output contains (the longest wins over
    options it contains, e.g. "Asthma NOS" over "Asthma")."""
    out = strip_punct(normalise_text(text))
    norm = [strip_punct(normalise_text(o)) for o in options]
    hits = [i for i, o in enumerate(norm) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", out)]
    hits = [i for i in hits if not any(j != i and norm[i] in norm[j] for j in hits)]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def extract_label(text: str, labels: Sequence[str]) -> str | None:
    """The one label (e.g. entailment / neutral / contradiction) named in the output; word
    forms count ("entails", "contradicts"); a lettered answer maps to the label in order."""
    norm = normalise_text(text)
    if not norm:
        return None
    found = set()
    for label in labels:
        stem = normalise_text(label)[: max(5, len(label) - 4)]
        if re.search(rf"(?<!\w){re.escape(stem)}", norm):
            found.add(label)
    if len(found) == 1:
        return found.pop()
    if not found:
        letter = extract_letter(text, labels)
        return labels[LETTERS.index(letter)] if letter else None
    return None


# a letter, a digit, then a digit (J45) or, only with an extension, a letter (Z3A.01): "T2D"
# and "B12" alone are not codes we can tell apart from prose, so "B12" still matches
_CODE = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z]\d(?:\d|[A-Za-z](?=\s?\.\s?[0-9A-Za-z]|[0-9A-Za-z]))"
    r"(?:\s?\.\s?[0-9A-Za-z]{1,4}|[0-9A-Za-z]{1,4})?)(?![A-Za-z0-9])"
)


def normalise_code(code: str) -> str:
    """J45.909, j45909 and ' J45. 909 ' are the same code: upper case, no dot, no spaces."""
    return re.sub(r"[\s.]", "", unicodedata.normalize("NFKC", code)).upper()


def extract_codes(text: str) -> tuple[str, ...]:
    """ICD-10-style codes in an output, normalised and de-duplicated in order of appearance."""
    seen: dict[str, None] = {}
    for m in _CODE.finditer(unicodedata.normalize("NFKC", text or "")):
        seen.setdefault(normalise_code(m.group(1)), None)
    return tuple(seen)


_ANSWERS_LABEL = re.compile(r"^\s*(?:(?:the\s+)?(?:exact\s+)?answers?(?:\s+(?:is|are))?\s*[:\-]\s*)", re.I)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)]|\(?[a-z][)])\s+")


def extract_answers(text: str) -> tuple[str, ...]:
    """Short answers in an output, in the order given: one per line (bullets and numbers
    stripped), else separated by semicolons, else by commas followed by a space and a last
    "and" ("A, B and C"; "1,25-dihydroxyvitamin D" and "salt and pepper" stay whole). An "Answer:" label and a final full stop go;
    answers that normalise alike are kept once. BioASQ factoid and list questions."""
    text = unicodedata.normalize("NFKC", text or "").strip()
    lines = [ln for ln in (_BULLET.sub("", _ANSWERS_LABEL.sub("", ln)).strip() for ln in text.splitlines()) if ln]
    if len(lines) == 1:
        one = lines[0]
        if ";" in one:
            lines = re.split(r"\s*;\s*", one)
        elif re.search(r",\s", one):  # "A, B and C": the last "and" separates too
            *head, last = re.split(r",\s+", one)
            lines = [*head, *re.split(r"^and\s+|\s+and\s+", last, maxsplit=1)]
    seen: dict[str, str] = {}
    for answer in lines:
        answer = answer.strip().strip("\"'*`").rstrip(".").strip()
        key = strip_punct(normalise_text(answer))
        if key and key not in seen:
            seen[key] = answer
    return tuple(seen.values())


_FINAL = re.compile(r"(?im)^[\W_]*final\s+answer[\W_]*?(?:is\s*)?[:\-]\s*(.+)$")
_JSON_CHOICE = re.compile(r'"answer_choice"\s*:\s*"([^"]*)"?')


def answer_segments(text: str, answer_format: str) -> list[str] | None:
    """Where a protocol's answer stands in an output: the text of each "Final answer:" line
    (final_line), or the `answer_choice` of the output's JSON objects (json: fenced or
    followed by text; a cut-off object still gives its choice). None when there is none,
    and the whole output is read instead; "plain" is always the whole output."""
    text = unicodedata.normalize("NFKC", text or "")
    if answer_format == "final_line":
        found = [m.group(1).strip() for m in _FINAL.finditer(text)]
        return found or None
    if answer_format == "json":
        decoder, found = json.JSONDecoder(), []
        for m in re.finditer(r"\{", text):
            try:
                obj, _ = decoder.raw_decode(text, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "answer_choice" in obj:
                found.append(str(obj["answer_choice"]))
        return found or [m.group(1) for m in _JSON_CHOICE.finditer(text)] or None
    return None


def parse_output(
    answer_type: str, text: str, options: Sequence[str] = (), answer_format: str = "plain"
) -> Parsed:
    """A generated output to the answer a metric compares with gold, by answer type; with a
    protocol's answer format, read from its answer lines first. Answer lines that disagree
    give None (no answer), never one of them."""
    segments = answer_segments(text, answer_format) if answer_format != "plain" else None
    if segments is not None:
        answers = {parse_output(answer_type, seg, options) for seg in segments}
        answers.discard(None)
        return answers.pop() if len(answers) == 1 else None
    if answer_type == "letter":
        return extract_letter(text, options)
    if answer_type == "label":
        return extract_label(text, options)
    if answer_type == "codes":
        return extract_codes(text)
    if answer_type == "text":
        return (text or "").strip()
    if answer_type == "answers":
        return extract_answers(text)
    raise ValueError(f"unknown answer type {answer_type!r}")
