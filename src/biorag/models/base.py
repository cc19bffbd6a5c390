"""The interface every model backend implements.

`loglikelihood` scores continuations (multiple-choice options) given a context;
`generate` produces free text. Both take batches; backends decide how to batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Log-probability of a continuation given its context."""

    logprob: float  # sum of the continuation tokens' log-probabilities
    n_tokens: int  # number of continuation tokens
    n_chars: int  # number of continuation characters (for length normalisation)
    is_greedy: bool  # every continuation token is the argmax


@runtime_checkable
class Generator(Protocol):
    """A model that can score continuations and generate text."""

    name: str
    # the backend and its library versions ({"backend": "hf", "transformers": "5.2", ...}):
    # every cell run logs them as `versions.*` tags
    info: dict[str, str]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        """Score (context, continuation) pairs; the context is already a full prompt."""
        ...

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None,
        stop_after: list[str] | None = None, temperature: float = 0.0, seed: int = 0,
    ) -> list[str]:
        """Completions of already-rendered prompts, ending before a `stop` string or right
        after a `stop_after` one (which stays in the output). Greedy at temperature 0 (the
        default); above it, sampled from the full distribution with `seed`."""
        ...

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Messages to a prompt string: the tokenizer's chat template when it has one,
        otherwise the contents joined plainly."""
        ...

    def count_tokens(self, text: str) -> int:
        ...
