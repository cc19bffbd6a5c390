"""Prompts: one Jinja2 template per task for closed-book and with-context runs alike.

The template sees `context` (retrieved passages, packed under `context_tokens`; empty without
hits, so `{% if context %}` hides the block), `documents` (the item's own documents packed
under `document_tokens`), `input`, `options` (letter, text pairs) and the example's metadata.
The result is chat messages; the model backend decides whether its tokenizer has a chat
template (`Generator.render_chat`), never the task.

Multiple-choice log-likelihood scoring continues the prompt with " A", " B", ... (as
lm-evaluation-harness does for MMLU) or, with `continuation: text`, with " <option text>" —
the form where per-character length normalisation (`acc_norm`) matters.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from biorag.errors import ConfigError
from biorag.tasks.config import TaskConfig
from biorag.tasks.longhealth import DOCUMENT_SEED
from biorag.types import LETTERS, Example, Hit, adds_title, answer_text

CountTokens = Callable[[str], int]
LONG_INPUT_TYPES = ("summarisation", "coding")  # their input is cut to `document_tokens`
MIN_PARTIAL_TOKENS = 32  # a passage cut shorter than this is left out rather than kept
CLUE_DOCUMENT_SEP = "\n\n--------------\n\n"  # between shuffled LongHealth texts, as CLUE joins them


def approx_tokens(text: str) -> int:
    """About four characters a token; use the model's own `count_tokens` where there is one."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class Prompt:
    """Rendered messages and what went into them."""

    messages: list[dict[str, str]]
    hit_ids: tuple[str, ...]  # chunk ids of the passages in the prompt, in order
    truncated: bool  # a passage or document was cut to fit its budget

    @property
    def text(self) -> str:
        """The messages joined plainly (for display and for models without a chat template)."""
        return "\n\n".join(m["content"] for m in self.messages)

    @property
    def hash(self) -> str:
        return hashlib.sha256(repr(self.messages).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _template(source: str):
    # sandboxed: task YAMLs are shared between people; strict: a misspelt variable is an error
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )
    return env.from_string(source)


def check_template(cfg: TaskConfig) -> None:
    """Raise ConfigError when the task's template is missing or does not compile."""
    if not cfg.template.strip():
        raise ConfigError(f"task {cfg.name}: no template (loader '{cfg.loader}' brings none): set "
                          "template: in the task's YAML (`biorag task init` writes one to start from)")
    try:
        _template(cfg.template)
        _template(cfg.system)
        _template(cfg.shot_answer)
    except TemplateError as e:
        raise ConfigError(f"task {cfg.name}: template: {e}") from None


def truncate_to_tokens(text: str, budget: int, count_tokens: CountTokens = approx_tokens) -> str:
    """The longest prefix, cut at a word boundary and marked with "…", within `budget` tokens."""
    if count_tokens(text) <= budget:
        return text
    cuts = [m.start() for m in re.finditer(r"\s+", text)] + [len(text)]
    lo, hi, best = 0, len(cuts) - 1, ""
    while lo <= hi:  # binary search over word boundaries: O(log n) tokenizer calls
        mid = (lo + hi) // 2
        candidate = text[: cuts[mid]].rstrip() + " …"
        if count_tokens(candidate) <= budget:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


def pack(
    texts: Sequence[str],
    budget: int,
    count_tokens: CountTokens = approx_tokens,
    fmt: Callable[[int, str], str] = lambda i, t: t,
    sep: str = "\n\n",
    shuffle_seed: int | None = None,
) -> tuple[str, int, bool]:
    """Join formatted texts in order while they fit `budget`; the first that does not fit is
    cut (when at least MIN_PARTIAL_TOKENS remain) and packing stops. With `shuffle_seed`, the
    packed texts are then put in a seeded random order (LongHealth under CLUE: which texts
    fit is decided before the order is mixed).
    Returns (packed text, number of texts used, whether one was cut)."""
    parts: list[str] = []
    cut_one = False
    for i, t in enumerate(texts):
        block = fmt(i, t)
        joined = sep.join([*parts, block])
        if count_tokens(joined) <= budget:
            parts.append(block)
            continue
        room = budget - (count_tokens(sep.join(parts) + sep) if parts else 0)
        cut = truncate_to_tokens(block, room, count_tokens) if room >= MIN_PARTIAL_TOKENS else ""
        if cut:
            parts.append(cut)
        cut_one = True
        break
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(parts)
    return sep.join(parts), len(parts), cut_one


def _passage(i: int, hit: Hit) -> str:
    title = f" {hit.chunk.title}" if adds_title(hit.chunk.title, hit.chunk.text) else ""
    return f"[{i + 1}]{title}\n{hit.chunk.text.strip()}"


def build_prompt(
    cfg: TaskConfig,
    example: Example,
    hits: Sequence[Hit] | None = None,
    count_tokens: CountTokens | None = None,
) -> Prompt:
    """Render the task's template for one example, with retrieved passages when given, after
    its few-shot items (`example.shots`) as user/assistant turns."""
    count = count_tokens or approx_tokens
    check_template(cfg)
    hits = list(hits or [])
    context, n_hits, cut_context = (
        pack(hits, cfg.context_tokens, count, fmt=_passage) if hits else ("", 0, False)
    )
    variables, cut_item = _item_variables(cfg, example, count)
    variables["context"] = context
    try:
        user = _template(cfg.template).render(**variables).strip()
        # the system message is a template too (MedRAG's differs with and without passages)
        system = _template(cfg.system).render(**variables).strip() if "{" in cfg.system else cfg.system.strip()
        turns = []
        for shot in example.shots:
            shown, _ = _item_variables(cfg, shot, count)
            shown.update(context="", gold=answer_text(shot.gold))
            turns += [{"role": "user", "content": _template(cfg.template).render(**shown).strip()},
                      {"role": "assistant", "content": answer_turn(cfg, shot, count)}]
    except TemplateError as e:
        raise ConfigError(f"task {cfg.name}: template: {e}") from None
    messages = [{"role": "system", "content": system}] if system else []
    messages += [*turns, {"role": "user", "content": user}]
    return Prompt(messages, tuple(h.chunk.id for h in hits[:n_hits]), cut_context or cut_item)


def answer_turn(cfg: TaskConfig, example: Example, count_tokens: CountTokens | None = None) -> str:
    """The task's `shot_answer` for a solved item: what an assistant turn answering it says
    (a few-shot turn, a fine-tuning response)."""
    shown, _ = _item_variables(cfg, example, count_tokens or approx_tokens)
    shown.update(context="", gold=answer_text(example.gold))
    try:
        return _template(cfg.shot_answer).render(**shown).strip()
    except TemplateError as e:
        raise ConfigError(f"task {cfg.name}: shot_answer: {e}") from None


def _item_variables(cfg: TaskConfig, example: Example, count: CountTokens) -> tuple[dict, bool]:
    """What the template sees of one item (all but `context`), and whether a document was cut."""
    seed = example.metadata.get(DOCUMENT_SEED)
    fmt = _document_fmt(len(example.documents)) if seed is None else (lambda i, t: t.strip())
    documents, _, cut_docs = (
        pack(list(example.documents), cfg.document_tokens, count, fmt=fmt,
             sep="\n\n" if seed is None else CLUE_DOCUMENT_SEP, shuffle_seed=seed)
        if example.documents
        else ("", 0, False)
    )
    body, cut_input = example.input, False
    if cfg.type in LONG_INPUT_TYPES:  # a note to summarise or code is the item's document
        body = truncate_to_tokens(example.input, cfg.document_tokens, count)
        cut_input = body != example.input
    variables = {
        **example.metadata,
        "input": body,
        "options": [(LETTERS[i], o) for i, o in enumerate(example.options)],
        "letters": list(LETTERS[: len(example.options)]),
        "documents": documents,
        "protocol_question": cfg.protocol_question,
        "example": example,
    }
    return variables, cut_docs or cut_input


def _document_fmt(n: int) -> Callable[[int, str], str]:
    return (lambda i, t: f"Document {i + 1}:\n{t.strip()}") if n > 1 else (lambda i, t: t.strip())


def render_prompt(
    cfg: TaskConfig,
    example: Example,
    hits: Sequence[Hit] | None = None,
    count_tokens: CountTokens | None = None,
) -> list[dict[str, str]]:
    """The chat messages for one example (see `build_prompt` for what went into them)."""
    return build_prompt(cfg, example, hits, count_tokens).messages


def mcq_continuations(cfg: TaskConfig, example: Example) -> list[str]:
    """What log-likelihood scoring appends to the prompt, one per option, in order."""
    if not example.options:
        raise ValueError(f"example {example.id} has no options to score")
    if cfg.continuation == "text":
        return [f" {o}" for o in example.options]
    return [f" {LETTERS[i]}" for i in range(len(example.options))]
