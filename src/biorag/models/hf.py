"""transformers backend: batched log-likelihood (lm-evaluation-harness style; how requests
become forward passes is `hf_scoring`) and greedy or seeded-sampling generation."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from biorag import progress
from biorag.errors import BioragError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.hf_info import backend_info, folder_name, greedy_config, model_max_length
from biorag.models.hf_scoring import Scorer, padded
from biorag.models.text import (
    TokenEncoder,
    cut_at_stop,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

# Padded tokens a forward pass holds on a CPU unless model.token_budget says otherwise: passes
# of ~512 tokens stay in cache and ran 24-29% faster than 16 rows of 82-523 tokens (SmolLM2,
# fp32, 2 AVX2 cores; benchmarks/eval_throughput.py --lm-eval --budgets). A GPU takes rows only.
CPU_TOKEN_BUDGET = 512


def cpu_token_budget(configured: int | None, model: Any) -> int | None:
    """model.token_budget as a pass limit: null = CPU_TOKEN_BUDGET on a CPU, none on a GPU;
    0 = none."""
    if configured is None:
        return CPU_TOKEN_BUDGET if model.device.type == "cpu" else None
    return configured or None



class HFGenerator:
    """A transformers causal LM behind the `Generator` interface.

    Build one from a config with `HFGenerator.from_config(cfg, adapter=...)`, or wrap a
    model and tokenizer already in memory with `HFGenerator(model, tokenizer)`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "hf",
        batch_size: int = 8,
        max_length: int | None = None,
        chat: str = "auto",
        loglikelihood: str = "auto",
        token_budget: int | None = None,
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
        # rows | shared | packed | auto (the cheapest for the lengths at hand): `hf_scoring`
        self.loglikelihood_strategy, self.token_budget = loglikelihood, token_budget
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.use_chat_template = wants_template(tokenizer, chat, name)
        self._encoder = TokenEncoder(tokenizer)
        pad = tokenizer.pad_token_id
        pad = tokenizer.eos_token_id if pad is None else pad
        self._pad = 0 if pad is None else pad  # padded positions are masked; any id will do
        self._stops: dict[tuple[str, ...], Any] = {}  # stop strings -> their criteria, built once
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        # transformers 5.x renames past_key_values to cache
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.info = backend_info(model)

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> HFGenerator:
        from biorag.models.loading import load_hf

        model, tokenizer = load_hf(cfg, adapter)
        name = cfg.name if adapter is None else f"{cfg.name}+{folder_name(adapter)}"
        gen = cls(
            model,
            tokenizer,
            name=name,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            chat=cfg.chat,
            loglikelihood=cfg.loglikelihood,
            token_budget=cpu_token_budget(cfg.token_budget, model),
        )
        gen.info.update({"model_id": cfg.id or cfg.source, "adapter": adapter or ""})
        return gen

    # -- text <-> tokens -------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with the tokenizer's own BOS if it adds one (never twice)."""
        return self._encoder.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) with the boundary handled as lm-eval does."""
        return self._encoder.encode_pair(context, continuation)

    def count_tokens(self, text: str) -> int:
        return self._encoder.count(text)

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        return render_messages(self.tokenizer, self.use_chat_template, messages, add_generation_prompt)

    # -- scoring ---------------------------------------------------------------------------

    @torch.inference_mode()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        scorer = Scorer(self)
        results = scorer(requests)
        self.info["loglikelihood_strategy"] = scorer.chosen
        return results

    # -- generation ------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None,
        stop_after: list[str] | None = None, temperature: float = 0.0, seed: int = 0,
    ) -> list[str]:
        budget = self.max_length - max_new_tokens
        if budget < 1:
            raise BioragError(
                f"{self.name}: max_new_tokens {max_new_tokens} >= max_length {self.max_length}"
            )
        encoded = []
        for ids in map(self.encode, prompts):
            if len(ids) > budget:
                log.warning(
                    "%s: prompt of %d tokens cut to its last %d", self.name, len(ids), budget
                )
                ids = ids[-budget:]
            encoded.append(ids)
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
        ends = [*(stop or ()), *(stop_after or ())]
        config = greedy_config(self.model, self.tokenizer, self._pad, max_new_tokens, None)
        if temperature > 0:  # sampling from the whole distribution (no top-k / top-p), seeded
            config.do_sample, config.temperature, config.top_k = True, temperature, 0
            torch.manual_seed(seed)
        outputs: list[str] = [""] * len(prompts)
        with progress.bar_if(f"{self.name} generate", len(prompts), len(prompts) > self.batch_size) as b:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                texts = self._generate_batch([encoded[i] for i in batch], config, ends)
                for i, text in zip(batch, texts, strict=True):
                    outputs[i] = cut_at_stop(text, stop, stop_after)
                b.advance(len(batch))
        return outputs

    def _stopping(self, stop: tuple[str, ...]) -> Any:
        """transformers' stop-string criteria, kept: building one scans the whole vocabulary
        (half a second a string for a 49k vocabulary), which `stop_strings=` does per call."""
        if stop not in self._stops:
            from transformers import StoppingCriteriaList
            from transformers.generation.stopping_criteria import StopStringCriteria

            self._stops[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
        return self._stops[stop]

    def _generate_batch(
        self, batch: list[list[int]], config: Any, stop: list[str] | None
    ) -> list[str]:
        ids, mask = padded(batch, self._pad, left=True)  # every prompt ends at the same column
        device = self.model.device
        extra = {"stopping_criteria": self._stopping(tuple(stop))} if stop else {}
        out = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            **extra,
        )
        new_tokens = out[:, ids.shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return texts
