"""transformers backend: batched log-likelihood (lm-evaluation-harness style) and greedy generation.

Log-likelihood follows lm-eval's `_loglikelihood_tokens`: context and context+continuation
are encoded separately and the continuation tokens are the suffix of the whole encoding
(so a token spanning the boundary is scored), requests run longest first, right-padded,
one forward pass per batch, and results come back in the caller's order. Requests whose
model input is identical (typically one context scored against single-token options
" A" … " D") share one forward pass. A context scored against several multi-token
continuations (option texts) runs once: its KV cache is copied to one row per continuation,
so an item costs one prefill plus its options' tokens rather than one prefill per option.
On both paths the tokens every prompt of a batch starts with (chat template, instruction,
few-shot examples) run once, as one row, and the rows continue from copies of its KV cache.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from biorag import progress
from biorag.errors import BioragError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.hf_info import backend_info, folder_name, greedy_config, model_max_length
from biorag.models.text import (
    TokenEncoder,
    common_prefix,
    cut_at_stop,
    fit_request,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

_Request = tuple[int, list[int], int]  # request index, continuation ids, continuation characters
# Shorter common prefixes are not worth a separate forward pass.
_MIN_PREFILL = 8


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
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
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
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[_Request]] = defaultdict(list)
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                results[i] = LoglikelihoodResult(0.0, 0, len(continuation), True)
                continue
            # the model reads all but the last token: max_length + 1 tokens are scored
            full = fit_request(ctx, cont, self.max_length + 1, self.name)
            by_context[tuple(full[: len(full) - len(cont)])].append((i, cont, len(continuation)))

        # A context scored against several multi-token continuations (option texts) runs
        # once and its KV cache is shared by the continuations; otherwise one row per
        # distinct model input, so single-token options (" A" ... " E") share a row.
        shared: dict[tuple[int, ...], list[_Request]] = {}
        by_input: dict[tuple[int, ...], list[_Request]] = defaultdict(list)
        for ctx, reqs in by_context.items():
            if ctx and len({tuple(c[:-1]) for _, c, _ in reqs}) > 1:
                shared[ctx] = reqs
            else:
                for r in reqs:
                    by_input[ctx + tuple(r[1][:-1])].append(r)

        with progress.bar_if(f"{self.name} log-likelihood", len(requests),
                  len(by_input) + len(shared) > self.batch_size) as b:
            inputs = sorted(by_input, key=len, reverse=True)  # similar lengths pad least
            for start in range(0, len(inputs), self.batch_size):
                batch = inputs[start : start + self.batch_size]
                for inp, scored in zip(batch, self._score_batch(batch, by_input), strict=True):
                    for i, result in scored:
                        results[i] = result
                    b.advance(len(by_input[inp]))
            for batch in self._prefix_batches(shared):
                for i, result in self._score_shared(batch, shared):
                    results[i] = result
                b.advance(sum(len(shared[c]) for c in batch))
        return results  # type: ignore[return-value]

    def _score_batch(
        self,
        batch: list[tuple[int, ...]],
        by_input: dict[tuple[int, ...], list[_Request]],
    ) -> list[list[tuple[int, LoglikelihoodResult]]]:
        # only the positions that predict continuation tokens need the vocabulary projection
        first = min(len(inp) - max(len(c) for _, c, _ in by_input[inp]) for inp in batch)
        last = max(len(inp) for inp in batch)
        # the tokens every row starts with (a chat template, an instruction, few-shot
        # examples) run once; the rows run on a copy of their KV cache
        head, kwargs = self._prefill(batch, limit=first)
        ids, mask = self._padded([inp[head:] for inp in batch], left=False, cached=head)
        if head:
            kwargs["position_ids"] = (head + torch.arange(ids.shape[1])).expand_as(ids)
        offset = head
        if self._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(first - head, last - head)
            offset = first
        device = self.model.device
        logits = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **{k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()},
        ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for row, inp in enumerate(batch):
            scored = []
            for i, cont, n_chars in by_input[inp]:
                start = len(inp) - len(cont) - offset
                rows = logprobs[row, start : start + len(cont)]
                target = torch.tensor(cont, device=rows.device)
                token_lp = rows.gather(-1, target[:, None]).squeeze(-1)
                greedy = bool((rows.argmax(-1) == target).all())
                scored.append(
                    (i, LoglikelihoodResult(float(token_lp.sum()), len(cont), n_chars, greedy))
                )
            out.append(scored)
        return out

    def _prefix_batches(
        self, shared: dict[tuple[int, ...], list[_Request]]
    ) -> Iterator[list[tuple[int, ...]]]:
        """Contexts, longest first, packed so a batch's continuation rows stay within
        batch_size (the memory of the row-per-request path) unless one context needs more."""
        batch: list[tuple[int, ...]] = []
        rows = 0
        for ctx in sorted(shared, key=len, reverse=True):
            n = len(_tails(shared[ctx]))
            if batch and rows + n > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append(ctx)
            rows += n
        if batch:
            yield batch

    def _score_shared(
        self,
        batch: list[tuple[int, ...]],
        shared: dict[tuple[int, ...], list[_Request]],
    ) -> list[tuple[int, LoglikelihoodResult]]:
        """One pass over the contexts (left-padded, keeping their KV cache and the logits of
        their last token, which predict every continuation's first token), then one pass
        over the continuations' remaining tokens on the cache, each row on its context's."""
        device = self.model.device
        # the tokens every context starts with run once (the limit keeps each context's
        # last token in this pass: its logits predict the continuations' first tokens)
        head, kwargs = self._prefill(batch, limit=min(map(len, batch)) - 1)
        ids, mask = self._padded([ctx[head:] for ctx in batch], left=True, cached=head)
        positions = head + (mask[:, head:].cumsum(-1) - 1).clamp(min=0)
        kwargs["use_cache"] = True
        kwargs.update(self._last_logits(ids.shape[1]))
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            **kwargs,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (contexts, vocab)

        # the continuations' tokens after the first, one row per distinct continuation
        tails: list[tuple[int, tuple[int, ...]]] = []  # (context row, continuation[:-1])
        for row, ctx in enumerate(batch):
            tails += [(row, t) for t in _tails(shared[ctx])]
        tails.sort(key=lambda rt: len(rt[1]), reverse=True)  # rows of like lengths pad least
        tail_lp: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        if tails:
            t_ids, t_mask = self._padded([t for _, t in tails], left=False)
            t_width = t_ids.shape[1]
            owner = torch.tensor([row for row, _ in tails])
            cache = getattr(out, self._cache_arg)
            cache.reorder_cache(owner.to(device))  # each row gets a copy of its context's cache
            lengths = torch.tensor([len(batch[row]) for row, _ in tails])
            logits = self.model(
                input_ids=t_ids.to(device),
                attention_mask=torch.cat([mask[owner], t_mask], dim=1).to(device),
                position_ids=(lengths[:, None] + torch.arange(t_width)[None, :]).to(device),
                use_cache=True,
                **{self._cache_arg: cache},
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            tail_lp = {key: logprobs[j] for j, key in enumerate(tails)}

        scored = []
        for row, ctx in enumerate(batch):
            for i, cont, n_chars in shared[ctx]:
                lp = float(first[row, cont[0]])
                greedy = int(first[row].argmax()) == cont[0]
                if len(cont) > 1:
                    rows = tail_lp[(row, tuple(cont[:-1]))][: len(cont) - 1]
                    target = torch.tensor(cont[1:], device=rows.device)
                    lp += float(rows.gather(-1, target[:, None]).sum())
                    greedy = greedy and bool((rows.argmax(-1) == target).all())
                scored.append((i, LoglikelihoodResult(lp, len(cont), n_chars, greedy)))
        return scored

    def _prefill(
        self, seqs: Sequence[Sequence[int]], *, limit: int
    ) -> tuple[int, dict[str, Any]]:
        """Run the tokens all `seqs` start with (at most `limit`) once, as one row.

        Returns how many tokens that was and the keyword arguments that hand its KV cache,
        copied to one row per sequence, to the pass over the rest; (0, {}) when the
        sequences share too little for a separate pass to pay.
        """
        head = min(common_prefix(seqs), limit)
        if len(seqs) < 2 or head < _MIN_PREFILL:
            return 0, {}
        device = self.model.device
        out = self.model(
            input_ids=torch.tensor([seqs[0][:head]], device=device),
            use_cache=True,
            **self._last_logits(head),
        )
        cache = getattr(out, self._cache_arg)
        cache.reorder_cache(torch.zeros(len(seqs), dtype=torch.long, device=device))
        return head, {self._cache_arg: cache, "use_cache": True}

    def _last_logits(self, width: int) -> dict[str, Any]:
        """Keep only the last position's logits. As an index tensor, not `logits_to_keep=1`:
        that slices the hidden states without copying, and for parameters that do not require
        grad (a merged LoRA model) torch's matmul then broadcasts the whole vocabulary
        projection over the batch (a bmm on a copied weight, 50% slower forward passes)."""
        if not self._keeps_logits:
            return {}
        return {"logits_to_keep": torch.tensor([width - 1], device=self.model.device)}

    def _padded(
        self, seqs: Sequence[Sequence[int]], *, left: bool, cached: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of token sequences padded to the longest, on the left
        (the last tokens line up) or on the right (the first tokens line up). The mask also
        covers `cached` tokens every row has in its KV cache ahead of the ids."""
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), cached + width), dtype=torch.long)
        mask[:, :cached] = 1
        for row, seq in enumerate(seqs):
            start = width - len(seq) if left else 0
            ids[row, start : start + len(seq)] = torch.tensor(seq)
            mask[row, cached + start : cached + start + len(seq)] = 1
        return ids, mask

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
        ids, mask = self._padded(batch, left=True)  # every prompt ends at the same column
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


# -- helpers ---------------------------------------------------------------------------------


def _tails(requests: list[_Request]) -> list[tuple[int, ...]]:
    """The distinct continuations[:-1] of multi-token requests, sorted: what the shared-context
    path runs on the cached context, one row each (the first token needs no row)."""
    return sorted({tuple(c[:-1]) for _, c, _ in requests if len(c) > 1})
