"""A deterministic stand-in model for runner, scoring and tracking tests.

No weights, no torch: answers are a pure function of the text, so a test can assert on them.

`loglikelihood` scores each (context, continuation) with a seeded hash in [-10, -1).
In `mode="context"` it also finds what the continuation stands for — for a letter such as
" B", the text after "B." / "B)" on an option line of the context, else the continuation
itself — and adds 10 for every other place that text appears in the context. A prompt that
lists only the options scores by hash; a prompt whose retrieved passages name one option
scores that option highest. So retrieval measurably helps the fake model, and nothing else.

`generate` fills the `answer` pattern per prompt: `{choice}` is the option letter the
log-likelihood above would pick among the prompt's option lines ("" if it has none),
`{hash}` 8 hex characters of the prompt. Output is cut at stop strings and to
`max_new_tokens` whitespace-separated words; `count_tokens` counts such words.

`exit_once: PATH` stands in for a worker killed mid-cell (launcher tests): the process exits
at once (`os._exit`, no cleanup) on its second batch, unless PATH exists; it creates PATH
first, so it dies once.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from biorag.errors import ConfigError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.text import cut_at_stop, plain_join

MODES = ("hash", "context")
_OPTION_LINE = re.compile(r"^\s*\(?([A-Za-z0-9])[.)]\s+(.+?)\s*$", re.MULTILINE)
_CONTEXT_BONUS = 10.0


class FakeGenerator:
    """Deterministic scores and answers from hashes (and, in context mode, the prompt)."""

    def __init__(
        self, *, name: str = "fake", mode: str = "hash", seed: int = 0, answer: str = "{choice}",
        delay_s: float = 0.0, exit_once: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"fake model: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.name, self.mode, self.seed, self.answer = name, mode, seed, answer
        self.delay_s = delay_s  # seconds per prompt, to stand in for a slow model (signal tests)
        self.exit_once = exit_once
        self.calls = 0
        self.n_scored = 0  # requests seen, so tests can check caching and resumption
        self.n_generated = 0
        self.info = {"backend": "fake", "mode": mode, "seed": str(seed)}

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> FakeGenerator:
        unknown = set(cfg.options) - {"mode", "seed", "answer", "delay_s", "exit_once"}
        if unknown:
            raise ConfigError(
                f"model '{cfg.name}': unknown fake options {sorted(unknown)}; known: answer, delay_s, exit_once, "
                "mode, seed"
            )
        name = cfg.name if adapter is None else f"{cfg.name}+{adapter}"
        # an adapter changes the seed, so "fine-tuned" answers differ from the base ones
        seed = int(cfg.options.get("seed", 0)) + (_hash_int(adapter) % 1000 if adapter else 0)
        return cls(
            name=name,
            mode=str(cfg.options.get("mode", "hash")),
            seed=seed,
            answer=str(cfg.options.get("answer", "{choice}")),
            delay_s=float(cfg.options.get("delay_s", 0.0)),
            exit_once=cfg.options.get("exit_once"),
        )

    def _step(self) -> None:
        self.calls += 1
        if self.exit_once and self.calls == 2 and not Path(self.exit_once).exists():
            Path(self.exit_once).touch()
            os._exit(3)  # killed mid-cell: no cleanup, no exception

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        self._step()
        self.n_scored += len(requests)
        if self.delay_s:
            time.sleep(self.delay_s * len({context for context, _ in requests}))
        return [self._score(context, continuation) for context, continuation in requests]

    def _score(self, context: str, continuation: str) -> LoglikelihoodResult:
        # a hash of the pair mapped to [-10, -1): stable across runs and platforms
        logprob = (
            -1.0 - 9.0 * (_hash_int(f"{self.seed}\x00{context}\x00{continuation}") % 10**6) / 10**6
        )
        if self.mode == "context":
            logprob += _CONTEXT_BONUS * _mentions(context, continuation)
        n_tokens = max(1, len(continuation.split()))
        return LoglikelihoodResult(logprob, n_tokens, len(continuation), is_greedy=False)

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None,
        stop_after: list[str] | None = None, temperature: float = 0.0, seed: int = 0,
    ) -> list[str]:
        self._step()
        self.n_generated += len(prompts)
        if self.delay_s:
            time.sleep(self.delay_s * len(prompts))
        outputs = []
        for prompt in prompts:
            choice = self._choice(prompt)
            if temperature > 0 and choice and _hash_int(f"{seed}\x00{prompt}") % 100 < min(100, 50 * temperature):
                letters = list(dict.fromkeys(m.group(1) for m in _OPTION_LINE.finditer(prompt)))
                choice = letters[_hash_int(f"{seed}\x01{prompt}") % len(letters)]  # a "sampled" letter
            text = self.answer.format(choice=choice, hash=_hash_hex(prompt)[:8])
            text = cut_at_stop(text, stop, stop_after)
            words = text.split(" ")
            outputs.append(" ".join(words[:max_new_tokens]))
        return outputs

    def _choice(self, prompt: str) -> str:
        letters = list(dict.fromkeys(m.group(1) for m in _OPTION_LINE.finditer(prompt)))
        if not letters:
            return ""
        scores = [self._score(prompt, f" {letter}").logprob for letter in letters]
        return letters[scores.index(max(scores))]

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        return plain_join(messages)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _mentions(context: str, continuation: str) -> int:
    """How often the option a continuation stands for appears in the context, beyond its
    own option line."""
    key = continuation.strip()
    if not key:
        return 0
    target, own_line = key, None
    for m in _OPTION_LINE.finditer(context):
        if m.group(1) == key:
            target, own_line = m.group(2), m.group(0)
            break
    if own_line is None and len(target) < 2:  # a bare letter with no option line to resolve it
        return 0
    haystack = context.replace(own_line, " ", 1) if own_line else context
    return haystack.lower().count(target.lower())


def _hash_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_int(text: str) -> int:
    return int(_hash_hex(text)[:16], 16)
