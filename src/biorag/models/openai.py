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

Generation is greedy (`temperature=0`, `seed=0`) through `/completions` (the prompt is sent
as rendered) or `/chat/completions` (the prompt's messages; the server applies the model's
chat template itself, so with the same template the same prompt and the same greedy answer).
`options.api: auto` (the default) chooses chat where no local tokenizer renders the template
and the config does not say `chat: false`; any prompt not made by `render_chat` goes to chat
as one user message. A vLLM server should run with `--generation-config vllm`, so the
checkpoint's sampling defaults (a repetition penalty) cannot change what greedy means.

Token counts (context packing under a task's budget, the cost metrics) are exact with
`options.tokenizer`; without it they are the server's `usage` for the prompts and outputs it
reported, else about 4 characters a token: the backend says so once, and its `info` (the
`versions.token_counts` tag) records it.

Before an experiment opens any run, `biorag.models.endpoint.preflight` asks the server
whether it serves the model, so an unreachable one fails in seconds, saying what to check.
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
from biorag.models.endpoint import base_url_of, served_name
from biorag.models.text import (
    TokenEncoder,
    cut_at_stop,
    move_spaces,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}
_OPTIONS = {"api", "tokenizer", "timeout_s", "max_retries"}
APPROXIMATE = "approximate: server usage where reported, else 4 characters a token"
_MEMO_MAX = 100_000  # remembered prompts (messages, token counts): a long run stays bounded
_TOLD_APPROXIMATE: set[str] = set()  # models whose approximate token counts were logged


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
        api: str = "auto",
        tokenizer: Any = None,
        chat: str = "auto",
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        if api not in ("auto", "completions", "chat"):
            raise ConfigError(f"{name}: options.api must be auto, completions or chat, got {api!r}")
        self.auto_api = api == "auto"
        if self.auto_api:  # the server renders the chat template where no tokenizer here can
            api = "chat" if tokenizer is None and chat != "false" else "completions"
        self.model, self.name, self.batch_size, self.api = model, name, batch_size, api
        self.base_url = base_url.rstrip("/")
        self.tokenizer, self.max_retries = tokenizer, max_retries
        self.use_chat_template = tokenizer is not None and wants_template(tokenizer, chat, name)
        self._encoder = TokenEncoder(tokenizer) if tokenizer is not None else None
        # rendered prompt -> the messages it came from, for /chat/completions
        self._messages: dict[str, list[dict[str, str]]] = {}
        # text -> its token count from a server's `usage` (no tokenizer here)
        self._counted: dict[str, int] = {}
        self._warned_ll = False
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self.info = {
            "backend": "openai",
            "base_url": self.base_url,
            "api": api,
            "httpx": httpx.__version__,
            "token_counts": "tokenizer" if tokenizer is not None else APPROXIMATE,
        }
        if tokenizer is None and name not in _TOLD_APPROXIMATE:  # once per model and process
            _TOLD_APPROXIMATE.add(name)
            log.warning(
                "%s: no local tokenizer (options.tokenizer), so token counts are approximate "
                "(the server's usage where it reports it, else 4 characters a token): contexts "
                "are packed under the token budgets by that estimate", name,
            )

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> OpenAIGenerator:
        unknown = set(cfg.options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"model '{cfg.name}': unknown openai options {sorted(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
            )
        tokenizer = None
        if cfg.options.get("tokenizer"):
            from biorag.models.loading import load_tokenizer

            tokenizer = load_tokenizer(cfg, str(cfg.options["tokenizer"]))
        return cls(
            model=served_name(cfg, adapter),
            base_url=base_url_of(cfg),
            api_key=os.environ.get(cfg.api_key_env),
            name=cfg.name if adapter is None else f"{cfg.name}+{Path(adapter).name}",
            batch_size=cfg.batch_size,
            api=str(cfg.options.get("api", "auto")),
            tokenizer=tokenizer,
            chat=cfg.chat,
            timeout_s=float(cfg.options.get("timeout_s", 120.0)),
            max_retries=int(cfg.options.get("max_retries", 3)),
        )

    # -- scoring ---------------------------------------------------------------------------

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        if requests and self.api == "chat" and not self.use_chat_template and not self._warned_ll:
            self._warned_ll = True
            log.warning(
                "%s: log-likelihoods come from /completions, which gets the prompt as plain text: "
                "the server's chat template applies to generation only. Set options.tokenizer to "
                "score the prompt as the chat template renders it", self.name,
            )
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
                    # the prompt's tokens: those the server echoed before the continuation's
                    offsets = (choice.get("logprobs") or {}).get("text_offset") or []
                    self._remember(batch[j][0], sum(1 for o in offsets if o < len(context)))
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
                payload = self._post("/chat/completions", {**common, "messages": messages})
                choice = _by_index(payload, 1)[0]
                text = (choice.get("message") or {}).get("content") or ""
                outputs.append(self._counted_output(prompt, text, payload, stop, stop_after))
        else:
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                payload = self._post("/completions", {**common, "prompt": batch})
                texts = [c.get("text") or "" for c in _by_index(payload, len(batch))]
                if len(batch) == 1:  # a batch's usage is its prompts' together: one is countable
                    outputs.append(self._counted_output(batch[0], texts[0], payload, stop, stop_after))
                else:
                    outputs.extend(cut_at_stop(t, stop, stop_after) for t in texts)
        return outputs

    def _counted_output(self, prompt: str, text: str, payload: dict[str, Any],
                        stop: list[str] | None, stop_after: list[str] | None) -> str:
        """The output cut at its stop strings; the prompt's and the output's token counts
        remembered from the response's usage (the output's only if nothing was cut here)."""
        usage = payload.get("usage") or {}
        if self._encoder is None and isinstance(usage.get("prompt_tokens"), int):
            self._remember(prompt, usage["prompt_tokens"])
        out = cut_at_stop(text, stop, stop_after)
        if self._encoder is None and out == text and isinstance(usage.get("completion_tokens"), int):
            self._remember(out, usage["completion_tokens"])
        return out

    def _remember(self, text: str, n_tokens: int) -> None:
        if len(self._counted) > _MEMO_MAX:
            self._counted.clear()
        self._counted[text] = n_tokens

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        text = render_messages(self.tokenizer, self.use_chat_template, messages, add_generation_prompt)
        if self.api == "chat" and add_generation_prompt:
            if len(self._messages) > _MEMO_MAX:
                self._messages.clear()
            self._messages[text] = messages
        return text

    def count_tokens(self, text: str) -> int:
        """Exact with a local tokenizer; else the server's count where a response gave one
        (a prompt it answered, an output it generated), else about 4 characters a token."""
        if self._encoder is not None:
            return self._encoder.count(text)
        counted = self._counted.get(text)
        return counted if counted is not None else math.ceil(len(text) / 4)

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
                    hint = ""
                    if response.status_code == 400 and path == "/chat/completions" and self.auto_api:
                        hint = (" (options.api is auto and no tokenizer is set, so prompts go to "
                                "/chat/completions; a model without a chat template needs "
                                "chat=false or options.api=completions)")
                    raise BioragError(f"{self.name}: {url} answered {response.status_code}: "
                                      f"{response.text[:300]}{hint}")
            time.sleep(min(2**attempt, 8))  # rate limits and restarts pass
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()


def _by_index(payload: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    choices = sorted(payload.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != expected:
        raise BioragError(f"expected {expected} choices from the server, got {len(choices)}")
    return choices
