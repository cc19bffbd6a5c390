"""Any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, OpenAI) over plain HTTP.

Log-likelihood uses `/completions` with `echo=true, logprobs=1, max_tokens=1` (lm-eval's
`local-completions` recipe): the server returns the prompt's own token log-probabilities.
With `options.tokenizer` (a hub id or folder holding the served model's tokenizer) the prompt
goes as token ids, made as the hf and vllm backends make them, and the continuation's tokens
are the prompt's last ones, so the scores equal the vllm backend's on the same engine.
Without it the prompt goes as text and the tokens overlapping the continuation's characters
are summed. Which servers echo prompt log-probabilities: vLLM's `vllm serve` (token-id prompts
tested against a real one; text prompts against a stand-in server only); OpenAI's current chat
models do not (the error says so: score such a task by generation). Other servers are untested.

Generation is greedy (`temperature=0`, `seed=0`) through `/completions` (default: the
prompt is sent as rendered) or `/chat/completions` (`options.api: chat`). With `api: chat` a
prompt made by `render_chat` is sent as its messages, and the server applies the model's chat
template itself (with the same template, the same prompt, so the same greedy answer); any
other prompt is sent as one user message. Without `options.tokenizer` there is no local chat
template and `count_tokens` is an estimate (4 characters a token). A vLLM server should run
with `--generation-config vllm`, so the checkpoint's sampling defaults (a repetition penalty)
cannot change what greedy means.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import httpx

from biorag.errors import BioragError, ConfigError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.text import (
    TokenEncoder,
    cut_at_stop,
    move_spaces,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_OPTIONS = {"api", "tokenizer", "timeout_s", "max_retries"}


class OpenAIGenerator:
    """A model served behind an OpenAI-compatible HTTP API."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str | None = None,
        name: str = "openai",
        batch_size: int = 8,
        api: str = "completions",
        tokenizer: Any = None,
        chat: str = "auto",
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        if api not in ("completions", "chat"):
            raise ConfigError(f"{name}: options.api must be completions or chat, got {api!r}")
        self.model, self.name, self.batch_size, self.api = model, name, batch_size, api
        self.base_url = base_url.rstrip("/")
        self.tokenizer, self.max_retries = tokenizer, max_retries
        self.use_chat_template = tokenizer is not None and wants_template(tokenizer, chat, name)
        self._encoder = TokenEncoder(tokenizer) if tokenizer is not None else None
        # rendered prompt -> the messages it came from, for /chat/completions
        self._messages: dict[str, list[dict[str, str]]] = {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self.info = {
            "backend": "openai",
            "base_url": self.base_url,
            "api": api,
            "httpx": httpx.__version__,
        }

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> OpenAIGenerator:
        unknown = set(cfg.options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"model '{cfg.name}': unknown openai options {sorted(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
            )
        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        tokenizer = None
        if cfg.options.get("tokenizer"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                cfg.options["tokenizer"],
                revision=cfg.revision,
                trust_remote_code=cfg.trust_remote_code,
            )
        # vLLM serves a LoRA adapter under its own model name: `--lora-modules NAME=PATH`, NAME
        # being the adapter's folder name (the arm's `adapter`)
        model = Path(adapter).name if adapter else cfg.id
        if not model:
            raise ConfigError(f"model '{cfg.name}': set `id` to the model name the server knows")
        return cls(
            model=model,
            base_url=base_url,
            api_key=os.environ.get(cfg.api_key_env),
            name=cfg.name if adapter is None else f"{cfg.name}+{Path(adapter).name}",
            batch_size=cfg.batch_size,
            api=str(cfg.options.get("api", "completions")),
            tokenizer=tokenizer,
            chat=cfg.chat,
            timeout_s=float(cfg.options.get("timeout_s", 120.0)),
            max_retries=int(cfg.options.get("max_retries", 3)),
        )

    # -- scoring ---------------------------------------------------------------------------

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        results: list[LoglikelihoodResult] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            if self._encoder is not None:
                pairs = [self._encoder.encode_pair(c, x) for c, x in batch]
                prompts: list[Any] = [ctx + cont for ctx, cont in pairs]
            else:
                texts = [move_spaces(c, x) for c, x in batch]
                prompts = [c + x for c, x in texts]
            body = {
                "model": self.model,
                "prompt": prompts,
                "max_tokens": 1,
                "temperature": 0,
                "echo": True,
                "logprobs": 1,
                "seed": 0,
            }
            choices = _by_index(self._post("/completions", body), len(batch))
            for j, ((_, original), choice) in enumerate(zip(batch, choices, strict=True)):
                if self._encoder is not None:
                    ctx, cont = pairs[j]
                    results.append(self._score_tokens(choice, len(ctx), len(cont), len(original)))
                else:
                    context, continuation = texts[j]
                    results.append(self._score(choice, context, continuation, len(original)))
        return results

    def _logprobs(self, choice: dict) -> dict:
        lp = choice.get("logprobs") or {}
        if not lp.get("tokens") or lp.get("token_logprobs") is None or lp.get("text_offset") is None:
            raise BioragError(
                f"{self.name}: the server at {self.base_url} returned no prompt log-probabilities "
                "(echo=true, logprobs); score this task by generation instead"
            )
        return lp

    def _score_tokens(self, choice: dict, n_ctx: int, n_cont: int, n_chars: int) -> LoglikelihoodResult:
        """Token-id prompts: the continuation is prompt positions [n_ctx, n_ctx + n_cont)."""
        lp = self._logprobs(choice)
        tokens, logprobs, top = lp["tokens"], lp["token_logprobs"], lp.get("top_logprobs") or []
        if len(tokens) < n_ctx + n_cont:
            raise BioragError(f"{self.name}: the server echoed {len(tokens)} tokens of a "
                              f"{n_ctx + n_cont}-token prompt")
        total, greedy = 0.0, True
        for j in range(n_ctx, n_ctx + n_cont):
            total += logprobs[j]
            alternatives = top[j] if j < len(top) and top[j] else None
            greedy = greedy and bool(alternatives) and max(alternatives, key=alternatives.get) == tokens[j]
        return LoglikelihoodResult(total, n_cont, n_chars, greedy and n_cont > 0)

    def _score(
        self, choice: dict, context: str, continuation: str, n_chars: int
    ) -> LoglikelihoodResult:
        lp = self._logprobs(choice)
        tokens, logprobs = lp["tokens"], lp["token_logprobs"]
        offsets, top = lp["text_offset"], lp.get("top_logprobs") or []
        begin, end = len(context), len(context) + len(continuation)
        total, n_tokens, greedy = 0.0, 0, True
        for j, token in enumerate(tokens):
            start = offsets[j]
            stop = offsets[j + 1] if j + 1 < len(offsets) else start + len(token)
            if (
                start >= end or stop <= begin
            ):  # outside the continuation (incl. the generated token)
                continue
            if logprobs[j] is None:  # the very first prompt token has no log-probability
                continue
            total += logprobs[j]
            n_tokens += 1
            alternatives = top[j] if j < len(top) and top[j] else None
            greedy = (
                greedy and bool(alternatives) and max(alternatives, key=alternatives.get) == token
            )
        return LoglikelihoodResult(total, n_tokens, n_chars, greedy and n_tokens > 0)

    # -- generation ------------------------------------------------------------------------

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None,
        stop_after: list[str] | None = None, temperature: float = 0.0, seed: int = 0,
    ) -> list[str]:
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if stop:
            common["stop"] = list(stop)[:4]  # OpenAI accepts at most four; the rest are cut here
        # `stop_after` is not sent: a server drops the stop string it ended on, and could not
        # say which one; the output is cut here instead (generation runs to EOS or the budget)
        outputs: list[str] = []
        if self.api == "chat":
            for prompt in prompts:
                messages = self._messages.get(prompt) or [{"role": "user", "content": prompt}]
                body = {**common, "messages": messages}
                choice = _by_index(self._post("/chat/completions", body), 1)[0]
                outputs.append((choice.get("message") or {}).get("content") or "")
        else:
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                choices = _by_index(
                    self._post("/completions", {**common, "prompt": batch}), len(batch)
                )
                outputs.extend(c.get("text") or "" for c in choices)
        return [cut_at_stop(text, stop, stop_after) for text in outputs]

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        text = render_messages(self.tokenizer, self.use_chat_template, messages, add_generation_prompt)
        if self.api == "chat" and add_generation_prompt:
            if len(self._messages) > 100_000:  # a long run: keep memory bounded
                self._messages.clear()
            self._messages[text] = messages
        return text

    def count_tokens(self, text: str) -> int:
        if self._encoder is not None:
            return self._encoder.count(text)
        return math.ceil(len(text) / 4)

    # -- HTTP ------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError as e:
                if attempt == self.max_retries:
                    raise BioragError(f"{self.name}: cannot reach {url}: {e}") from None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise BioragError(f"{self.name}: {url} did not answer JSON") from None
                if response.status_code not in _RETRY_STATUS or attempt == self.max_retries:
                    raise BioragError(
                        f"{self.name}: {url} answered {response.status_code}: {response.text[:300]}"
                    )
            time.sleep(min(2**attempt, 8))  # rate limits and restarts pass
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()


def _by_index(payload: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    choices = sorted(payload.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != expected:
        raise BioragError(f"expected {expected} choices from the server, got {len(choices)}")
    return choices
