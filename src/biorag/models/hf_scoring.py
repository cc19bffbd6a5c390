"""Log-likelihood on a transformers model: how scoring requests become forward passes.

Follows lm-eval's `_loglikelihood_tokens`: context and context+continuation are encoded
separately and the continuation tokens are the suffix of the whole encoding (so a token
spanning the boundary is scored), longest first, results back in the caller's order.
Requests whose model input is identical (one context scored against single-token options
" A" … " E") share one row. A context scored against several multi-token continuations
(option texts) runs one of three ways, all giving the same log-likelihoods:

- `rows`: one right-padded row per continuation, context included, as lm-eval does;
- `shared`: the context runs once (left-padded, keeping its KV cache), then the
  continuations' later tokens run on copies of that cache, one row each;
- `packed`: the context and its continuations are one row, the continuations side by side
  after the context; a 4D attention mask lets each see only the context and itself, and
  its positions restart where the context ends. One pass, no cache copies.

`auto` (the default) prices each from the token lengths (padded tokens through the model
body, positions through the vocabulary projection, attention pairs, each weighted by its
share of a token's multiply-adds for this model) and runs the cheapest. `packed` needs an
attention that honours a 4D mask (sdpa, eager); flash-attention ignores it, so it is never
picked there. On every path the tokens all sequences of a batch start with (chat template,
instruction, few-shot examples) run once, as one row, and the rows continue from copies of
its KV cache. A pass holds at most `batch_size` rows and, with `token_budget`, at most that
many padded tokens (rows x width), whichever comes first.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from biorag import progress
from biorag.errors import BioragError
from biorag.models.base import LoglikelihoodResult
from biorag.models.text import common_prefix, fit_request

log = logging.getLogger(__name__)

_MASKED_ATTENTION = ("sdpa", "eager")  # honour a custom 4D mask (flash-attention does not)
_MIN_PREFILL = 8  # shorter common prefixes are not worth a separate forward pass

_Request = tuple[int, list[int], int]  # request index, continuation ids, continuation characters


@dataclass
class _Group:
    """A context and the requests scored after it."""

    ctx: tuple[int, ...]
    requests: list[_Request]

    @cached_property  # read by the cost estimate, the batching and the passes
    def tails(self) -> list[tuple[int, ...]]:
        """The distinct continuation[:-1] of its multi-token requests, sorted: what runs after
        the context (each continuation's first token is predicted by the context's last)."""
        return sorted({tuple(c[:-1]) for _, c, _ in self.requests if len(c) > 1})

    @property
    def packed_width(self) -> int:
        return len(self.ctx) + sum(map(len, self.tails))


class Scorer:
    """One `loglikelihood` call of an `HFGenerator` (read for its model, tokenizer encoding,
    padding id, batch size, token budget and strategy)."""

    def __init__(self, gen: Any) -> None:
        self.gen, self.model = gen, gen.model
        self.batch_size, self.budget = gen.batch_size, gen.token_budget
        self.strategy = gen.loglikelihood_strategy
        self.chosen = "rows"
        self._head: tuple[tuple[int, ...], Any] | None = None  # the last prefilled head, its cache
        self._common = 0  # tokens every sequence of the current phase starts with

    def __call__(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        gen = self.gen
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[_Request]] = defaultdict(list)
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = gen.encode_pair(context, continuation)
            if not cont:
                results[i] = LoglikelihoodResult(0.0, 0, len(continuation), True)
                continue
            # the model reads all but the last token: max_length + 1 tokens are scored
            full = fit_request(ctx, cont, gen.max_length + 1, gen.name)
            by_context[tuple(full[: len(full) - len(cont)])].append((i, cont, len(continuation)))

        groups = [_Group(ctx, reqs) for ctx, reqs in by_context.items()
                  if ctx and len({tuple(c[:-1]) for _, c, _ in reqs}) > 1]
        self.chosen = self.choose(groups) if groups else "rows"
        if self.chosen == "rows":  # every request a row of its own input
            groups = []
        grouped = {g.ctx for g in groups}
        by_input: dict[tuple[int, ...], list[_Request]] = defaultdict(list)
        for ctx, reqs in by_context.items():
            if ctx not in grouped:
                for r in reqs:
                    by_input[ctx + tuple(r[1][:-1])].append(r)

        steps = len(by_input) + len(groups) > self.batch_size
        with progress.bar_if(f"{gen.name} log-likelihood", len(requests), steps) as b:
            inputs = sorted(by_input, key=len, reverse=True)  # similar lengths pad least
            self._common = _shared(inputs)
            for batch in self._batches(inputs, width=len, rows=lambda _: 1, head=self._common):
                for i, result in self._score_rows(batch, by_input):
                    results[i] = result
                b.advance(sum(len(by_input[inp]) for inp in batch))
            run = self._score_shared if self.chosen == "shared" else self._score_packed
            self._common = _shared([g.ctx for g in groups])
            for batch in self._group_batches(groups, self.chosen):
                for i, result in run(batch):
                    results[i] = result
                b.advance(sum(len(g.requests) for g in batch))
        return results  # type: ignore[return-value]

    # -- choosing ----------------------------------------------------------------------------

    def choose(self, groups: list[_Group]) -> str:
        """The strategy asked for, or under `auto` the one with the lowest estimated cost."""
        attention = getattr(self.model.config, "_attn_implementation", "eager")
        packs = attention in _MASKED_ATTENTION
        if self.strategy == "packed" and not packs:
            raise BioragError(f"{self.gen.name}: loglikelihood=packed needs an attention that "
                              f"honours a 4D mask ({', '.join(_MASKED_ATTENTION)}), not {attention}")
        if self.strategy != "auto":
            return self.strategy
        costs = self.costs(groups, packed=packs)
        best = min(costs, key=costs.__getitem__)
        # said once per generator and whenever the choice changes, not for every batch
        level = logging.INFO if self.gen.info.get("loglikelihood_strategy") != best else logging.DEBUG
        log.log(level, "%s: log-likelihood of %d contexts with several continuations: %s "
                "(estimated cost %s)", self.gen.name, len(groups), best,
                ", ".join(f"{k} {v:,.0f}" for k, v in costs.items()))
        return best

    def costs(self, groups: list[_Group], *, packed: bool = True) -> dict[str, float]:
        """Each strategy's work on these groups in token-equivalents: padded tokens through
        the model body, plus positions through the vocabulary projection and attention
        pairs, weighted by their multiply-adds relative to one token's."""
        head_w, pair_w = cost_weights(self.model)

        def passes(batches: Iterator[list], width: Callable, first: Callable) -> float:
            total = 0.0
            for batch in batches:
                w = max(map(width, batch))
                total += len(batch) * (w + head_w * (w - min(map(first, batch))) + pair_w * w * w)
            return total

        row_inputs = sorted((len(g.ctx) + len(t) for g in groups for t in g.tails), reverse=True)
        out = {"rows": passes(self._batches(row_inputs, width=int, rows=lambda _: 1),
                              int, lambda w: w - 1)}  # ~ one projected position a short tail
        shared = 0.0
        for batch in self._group_batches(groups, "shared"):
            c = max(len(g.ctx) for g in batch)
            tails = [len(t) for g in batch for t in g.tails]
            t = max(tails)
            shared += len(batch) * (c + head_w + pair_w * c * c)
            shared += len(tails) * (t + head_w * t + pair_w * t * (c + t))
        out["shared"] = shared
        if packed:
            out["packed"] = passes(self._group_batches(groups, "packed"),
                                   lambda g: g.packed_width, lambda g: len(g.ctx) - 1)
        return out

    # -- batching ----------------------------------------------------------------------------

    def _batches(
        self, items: Sequence, *, width: Callable, rows: Callable, head: int = 0
    ) -> Iterator[list]:
        """`items` (longest first) in passes of at most batch_size rows and, with a token
        budget, at most that many padded tokens past the `head` all share (which runs once);
        a single item always makes a pass."""
        batch: list = []
        n_rows, widest = 0, 0
        for item in items:
            r, w = rows(item), width(item) - head
            over_budget = self.budget is not None and (n_rows + r) * max(widest, w) > self.budget
            if batch and (n_rows + r > self.batch_size or over_budget):
                yield batch
                batch, n_rows, widest = [], 0, 0
            batch.append(item)
            n_rows, widest = n_rows + r, max(widest, w)
        if batch:
            yield batch

    def _group_batches(self, groups: list[_Group], strategy: str) -> Iterator[list[_Group]]:
        if strategy == "shared":  # rows are the continuations', each as wide as the widest tail
            ordered = sorted(groups, key=lambda g: len(g.ctx), reverse=True)
            return self._batches(ordered, width=lambda g: max(map(len, g.tails)),
                                 rows=lambda g: len(g.tails))
        ordered = sorted(groups, key=lambda g: g.packed_width, reverse=True)
        return self._batches(ordered, width=lambda g: g.packed_width, rows=lambda _: 1,
                             head=self._common)

    # -- the passes --------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any) -> Any:
        device = self.model.device
        return self.model(input_ids=ids.to(device),
                          attention_mask=None if mask is None else mask.to(device),
                          **{k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()})

    def _score_rows(
        self, batch: list[tuple[int, ...]], by_input: dict[tuple[int, ...], list[_Request]]
    ) -> list[tuple[int, LoglikelihoodResult]]:
        # only the positions that predict continuation tokens need the vocabulary projection
        first = min(len(inp) - max(len(c) for _, c, _ in by_input[inp]) for inp in batch)
        last = max(len(inp) for inp in batch)
        head, kwargs = self._prefill(batch, limit=first)
        ids, _ = padded([inp[head:] for inp in batch], self.gen._pad, left=False)
        if head:
            kwargs["position_ids"] = (head + torch.arange(ids.shape[1])).expand_as(ids)
        offset = head
        if self.gen._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(first - head, last - head)
            offset = first
        # right-padded, so no row attends to padding under the causal mask alone: without an
        # attention mask, sdpa runs its causal kernel (6% faster on CPU than with the mask)
        logprobs = torch.log_softmax(self._forward(ids, None, **kwargs).logits.float(), dim=-1)
        out = []
        for row, inp in enumerate(batch):
            for i, cont, n_chars in by_input[inp]:
                start = len(inp) - len(cont) - offset
                lp, greedy = _score(logprobs[row, start : start + len(cont)], cont)
                out.append((i, LoglikelihoodResult(lp, len(cont), n_chars, greedy)))
        return out

    def _score_shared(self, batch: list[_Group]) -> list[tuple[int, LoglikelihoodResult]]:
        """One pass over the contexts (left-padded, keeping their KV cache and the logits of
        their last token, which predict every continuation's first token), then one pass
        over the continuations' later tokens on the cache, each row on its context's."""
        contexts = [g.ctx for g in batch]
        # the limit keeps each context's last token in this pass: its logits are needed
        head, kwargs = self._prefill(contexts, limit=min(map(len, contexts)) - 1)
        ids, mask = padded([c[head:] for c in contexts], self.gen._pad, left=True, cached=head)
        positions = head + (mask[:, head:].cumsum(-1) - 1).clamp(min=0)
        kwargs["use_cache"] = True
        out = self._forward(ids, mask, position_ids=positions, **kwargs,
                            **self._last_logits(ids.shape[1]))
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (contexts, vocab)

        tails = sorted(((row, t) for row, g in enumerate(batch) for t in g.tails),
                       key=lambda rt: len(rt[1]), reverse=True)  # like lengths pad least
        t_ids, t_mask = padded([t for _, t in tails], self.gen._pad, left=False)
        owner = torch.tensor([row for row, _ in tails])
        cache = getattr(out, self.gen._cache_arg)
        cache.reorder_cache(owner.to(self.model.device))  # each row: a copy of its context's
        lengths = torch.tensor([len(contexts[row]) for row, _ in tails])
        logits = self._forward(
            t_ids, torch.cat([mask[owner], t_mask], dim=1),
            position_ids=lengths[:, None] + torch.arange(t_ids.shape[1])[None, :],
            use_cache=True, **{self.gen._cache_arg: cache},
        ).logits
        tail_lp = dict(zip(tails, torch.log_softmax(logits.float(), dim=-1), strict=True))
        return _results(batch, first, lambda row, t: tail_lp[(row, t)])

    def _score_packed(self, batch: list[_Group]) -> list[tuple[int, LoglikelihoodResult]]:
        """One pass: each row is a context followed by its continuations' later tokens, each
        continuation attending to the context and to itself, its positions after the context."""
        contexts = [g.ctx for g in batch]
        head, kwargs = self._prefill(contexts, limit=min(map(len, contexts)) - 1)
        width = max(g.packed_width for g in batch) - head
        ids = torch.full((len(batch), width), self.gen._pad, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        segment = torch.full((len(batch), width), -1)  # 0 context, j the j-th tail, -1 padding
        starts: list[dict[tuple[int, ...], int]] = []  # row -> tail -> its column
        for row, g in enumerate(batch):
            n = len(g.ctx) - head
            ids[row, :n] = torch.tensor(g.ctx[head:])
            positions[row, :n] = torch.arange(head, len(g.ctx))
            segment[row, :n] = 0
            starts.append({})
            for j, t in enumerate(g.tails, 1):
                ids[row, n : n + len(t)] = torch.tensor(t)
                positions[row, n : n + len(t)] = torch.arange(len(g.ctx), len(g.ctx) + len(t))
                segment[row, n : n + len(t)] = j
                starts[-1][t] = n
                n += len(t)
        q, k = segment[:, :, None], segment[:, None, :]
        # causal, and a key is the context's or the query's own segment (padding sees padding)
        mask = torch.ones(width, width, dtype=torch.bool).tril() & ((k == 0) | (k == q))
        mask = torch.cat([torch.ones(len(batch), width, head, dtype=torch.bool), mask], dim=-1)
        if getattr(self.model.config, "_attn_implementation", "eager") != "sdpa":  # additive
            low = torch.finfo(self.model.dtype).min
            mask = torch.zeros(mask.shape, dtype=self.model.dtype).masked_fill(~mask, low)
        first = min(len(c) for c in contexts) - 1 - head  # the first position that predicts
        offset = 0
        if self.gen._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(first, width)
            offset = first
        logits = self._forward(ids, mask[:, None], position_ids=positions, **kwargs).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        last = [len(c) - 1 - head - offset for c in contexts]
        return _results(batch, logprobs[torch.arange(len(batch)), last],
                        lambda row, t: logprobs[row, starts[row][t] - offset :])

    def _prefill(self, seqs: Sequence[Sequence[int]], *, limit: int) -> tuple[int, dict[str, Any]]:
        """Run the tokens all `seqs` start with (at most `limit`) once, as one row.

        Returns how many tokens that was and the keyword arguments that hand its KV cache,
        copied to one row per sequence, to the pass over the rest; (0, {}) when the
        sequences share too little for a separate pass to pay. The last head run is kept,
        so later passes (a token budget makes many) that start with it copy its cache.
        """
        # a lone row (a token budget makes them) still starts with what the whole call shares
        head = min(common_prefix(seqs) if len(seqs) > 1 else self._common, limit)
        known = self._head[0] if self._head else ()
        # the kept head serves every pass it begins, if it covers what the whole phase shares
        if known and min(head, self._common) <= len(known) <= limit and all(
                tuple(s[: len(known)]) == known for s in seqs):
            head, cache = len(known), copy.deepcopy(self._head[1])  # run once per call
        elif head >= _MIN_PREFILL:
            device = self.model.device
            out = self.model(input_ids=torch.tensor([seqs[0][:head]], device=device),
                             use_cache=True, **self._last_logits(head))
            cache = getattr(out, self.gen._cache_arg)
            self._head = (tuple(seqs[0][:head]), copy.deepcopy(cache))
        else:
            return 0, {}
        cache.reorder_cache(torch.zeros(len(seqs), dtype=torch.long, device=self.model.device))
        return head, {self.gen._cache_arg: cache, "use_cache": True}

    def _last_logits(self, width: int) -> dict[str, Any]:
        """Keep only the last position's logits. As an index tensor, not `logits_to_keep=1`:
        that slices the hidden states without copying, and for parameters that do not require
        grad (a merged LoRA model) torch's matmul then broadcasts the whole vocabulary
        projection over the batch (a bmm on a copied weight, 50% slower forward passes)."""
        if not self.gen._keeps_logits:
            return {}
        return {"logits_to_keep": torch.tensor([width - 1], device=self.model.device)}


# -- helpers ---------------------------------------------------------------------------------


def padded(
    seqs: Sequence[Sequence[int]], pad: int, *, left: bool, cached: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token sequences padded to the longest, on the left (the last
    tokens line up) or on the right (the first tokens line up). The mask also covers `cached`
    tokens every row has in its KV cache ahead of the ids."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), cached + width), dtype=torch.long)
    mask[:, :cached] = 1
    for row, seq in enumerate(seqs):
        start = width - len(seq) if left else 0
        ids[row, start : start + len(seq)] = torch.tensor(seq)
        mask[row, cached + start : cached + start + len(seq)] = 1
    return ids, mask


def _shared(seqs: Sequence[Sequence[int]]) -> int:
    """How many tokens all `seqs` start with, when enough for the head to run on its own."""
    head = common_prefix(seqs) if len(seqs) > 1 else 0
    return head if head >= _MIN_PREFILL else 0


def cost_weights(model: Any) -> tuple[float, float]:
    """(vocabulary projection of one position, attention of one query-key pair), each as a
    share of one token's multiply-adds through the model body. For SmolLM2-135M: 0.27 and
    0.0003 (a 49k vocabulary is a quarter of a small model's work; a tenth of an 8B's)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    embeddings = model.get_input_embeddings().weight.numel()
    body = max(sum(p.numel() for p in model.get_decoder().parameters()) - embeddings, 1)
    hidden = getattr(config, "hidden_size", 0)
    layers = getattr(config, "num_hidden_layers", 0)
    return embeddings / body, 2 * hidden * layers / body


def _score(rows: torch.Tensor, cont: Sequence[int]) -> tuple[float, bool]:
    """Summed log-probability of `cont` under rows of log-probabilities, and whether each
    token was the argmax."""
    target = torch.tensor(cont, device=rows.device)
    token_lp = rows.gather(-1, target[:, None]).squeeze(-1)
    return float(token_lp.sum()), bool((rows.argmax(-1) == target).all())


def _results(
    batch: list[_Group], first: torch.Tensor, tail: Callable[[int, tuple[int, ...]], torch.Tensor]
) -> list[tuple[int, LoglikelihoodResult]]:
    """Each request of each group: its first token from its context's last position (`first`,
    one row of log-probabilities per group), its later tokens from `tail(row, tail tokens)`."""
    scored = []
    for row, g in enumerate(batch):
        for i, cont, n_chars in g.requests:
            lp, greedy = float(first[row, cont[0]]), int(first[row].argmax()) == cont[0]
            if len(cont) > 1:
                tail_lp, tail_greedy = _score(tail(row, tuple(cont[:-1]))[: len(cont) - 1], cont[1:])
                lp, greedy = lp + tail_lp, greedy and tail_greedy
            scored.append((i, LoglikelihoodResult(lp, len(cont), n_chars, greedy)))
    return scored
