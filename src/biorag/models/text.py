"""Prompt-text helpers shared by the backends (no torch): chat templates, stop strings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from biorag.errors import BioragError

log = logging.getLogger(__name__)


def plain_join(messages: list[dict[str, str]]) -> str:
    """Messages without a chat template: the contents, a blank line apart."""
    return "\n\n".join(m["content"] for m in messages if m.get("content"))


def render_messages(
    tokenizer: Any, use_template: bool, messages: list[dict[str, str]], add_generation_prompt: bool
) -> str:
    """One prompt string from chat messages: the tokenizer's chat template, or plain text."""
    if not use_template:
        return plain_join(messages)
    return apply_template(tokenizer, messages, add_generation_prompt)


def wants_template(tokenizer: Any, chat: str, name: str) -> bool:
    """Whether to use the tokenizer's chat template: the config's chat=true|false, or
    (auto) whether the tokenizer has one. Never decided from the model's name."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat == "true" and not has:
        raise BioragError(f"{name}: chat=true but the tokenizer has no chat template")
    return has if chat == "auto" else chat == "true"


def apply_template(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool
) -> str:
    """The tokenizer's chat template; a system message folds into the first user turn when
    the template rejects system roles (Mistral-Instruct v0.1 and models built on it)."""
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError:
        if len(messages) < 2 or messages[0]["role"] != "system":
            raise
        system, first, *rest = messages
        merged = {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}
        log.info("the chat template rejects a system message; folding it into the first turn")
        return tokenizer.apply_chat_template(
            [merged, *rest], tokenize=False, add_generation_prompt=add_generation_prompt
        )


def cut_at_stop(text: str, stop: list[str] | None, stop_after: list[str] | None = None) -> str:
    """Text up to the earliest stop string, or through the earliest `stop_after` string
    (kept: a protocol's answer line, "Final answer: C"), whichever comes first."""
    ends = [(i, i) for i in (text.find(s) for s in stop or () if s) if i >= 0]
    ends += [(i, i + len(s)) for s in stop_after or () if s and (i := text.find(s)) >= 0]
    return text[: min(ends)[1]] if ends else text


class TokenEncoder:
    """Prompt text to token ids the way the tokenizer itself would, shared by hf and vllm.

    BOS is added only if the tokenizer adds one by default (Llama, Mistral) and the text
    does not already start with it (chat templates often write it), so it is never doubled.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token_id
        self.prepend_bos = self.bos is not None and tokenizer("a", add_special_tokens=True)[
            "input_ids"
        ][:1] == [self.bos]
        # an empty context scores its first token after bos (or eos), as lm-eval does
        self.prefix = self.bos if self.bos is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.prepend_bos and not (ids and ids[0] == self.bos):
            ids = [self.bos, *ids]
        return ids

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids): the continuation is the suffix of the whole
        encoding after the context's tokens, so a token spanning the boundary is scored."""
        context, continuation = move_spaces(context, continuation)
        whole = self.encode(context + continuation)
        n_ctx = len(self.encode(context))
        ctx, cont = whole[:n_ctx], whole[n_ctx:]
        if not ctx and self.prefix is not None:
            ctx = [self.prefix]
        return ctx, cont


def fit_request(ctx: list[int], cont: list[int], keep: int, name: str) -> list[int]:
    """The last `keep` tokens of context + continuation: the continuation whole and the
    context nearest to it. A continuation that does not fit with one context token is an error."""
    if len(cont) >= keep:
        raise BioragError(
            f"{name}: a continuation of {len(cont)} tokens does not fit the model's "
            f"{keep - 1}-token window after its context"
        )
    return (ctx + cont)[-keep:]


def move_spaces(context: str, continuation: str) -> tuple[str, str]:
    """Trailing spaces of the context go to the continuation ("Answer: " + "B" scores as
    "Answer:" + " B"), as tokenizers attach a space to the word after it."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all the sequences share."""
    shortest, longest = min(seqs), max(seqs)  # lexicographic: they differ first where any do
    n = min(len(shortest), len(longest))
    return next((i for i in range(n) if shortest[i] != longest[i]), n)
