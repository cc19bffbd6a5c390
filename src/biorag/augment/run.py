"""The context of a rag cell's items under its RAG methods: the queries searched, the ranked
list the retrieval measures read, and the passages packed into the prompt.

Order per batch: rewrite the query (hyde | multi | rationale), retrieve with every query (RRF
over several), filter the top candidates (lm | cross-encoder), ask follow-up questions for
`rounds - 1` more rounds and add their passages, then add `generate` passages written by the
model. Every model call is cached (`MethodCache`, keyed by the model and adapter, the method,
its prompt's version and the text asked), so a second run asks nothing it has asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from biorag.atomic import RecordLog
from biorag.augment.prompts import TEMPLATES, version
from biorag.errors import BioragError
from biorag.models.base import Generator
from biorag.retrieval.evidence import DEPTH, retrieve_ranked
from biorag.retrieval.rerank import passage
from biorag.retrieval.retrievers import reciprocal_rank_fusion
from biorag.retrieval.spec import RetrieverConfig
from biorag.types import Chunk, Example, Hit

log = logging.getLogger(__name__)

GENERATED = "biorag-generated:"  # the id prefix of a generated passage: never a corpus document
GENERATED_TITLE = "Generated background (written by the model, not retrieved)"
_ENV = SandboxedEnvironment(undefined=StrictUndefined)
_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|Q\d*[:.)])?\s*")


class MethodCache(RecordLog):
    what = "RAG method cache"


def is_generated(chunk_id: str) -> bool:
    return chunk_id.startswith(GENERATED)


@dataclass
class Context:
    """One item's context under the arm's methods."""

    ranked: list[Hit]  # the ranked list the retrieval measures read (empty: nothing retrieved)
    hits: list[Hit]  # the passages for the prompt, in order
    queries: tuple[str, ...] = ()  # every query searched (rewrites, follow-ups), in order
    generated: tuple[str, ...] = ()  # passages the model wrote
    candidates: tuple[str, ...] | None = None  # filter: each judged passage's document (None: no filter)
    kept: int = 0  # filter: passages kept of the candidates
    tokens: int = 0  # the methods' model tokens (prompts and outputs)
    seconds: float = 0.0  # the methods' model seconds
    calls: int = 0  # the methods' model calls (cached ones included)


@dataclass
class Augmenter:
    """Runs an arm's methods for batches of items with the cell's model."""

    spec: RetrieverConfig
    generator: Generator
    model_key: str  # the model and adapter (`biorag.retrieval.rerank.model_key`)
    cache: MethodCache
    filter_generator: Generator | None = None  # filter=lm with its own filter_model
    filter_key: str = ""
    reranker: Any = None  # filter=cross-encoder: a loaded cross-encoder
    max_new_tokens: int = 64  # a rewrite, a follow-up list or a background passage
    spent: float = 0.0  # seconds of model calls made (not cached) in the last `contexts`
    _done: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._done = self.cache.load()

    # -- model calls, cached ------------------------------------------------------------

    def _render(self, name: str, **values: Any) -> str:
        text = _ENV.from_string(TEMPLATES[name]).render(**values)
        return self.generator.render_chat([{"role": "user", "content": text}])

    def _key(self, *parts: Any) -> str:
        return hashlib.sha256(json.dumps([self.model_key, *parts], default=str).encode()).hexdigest()[:32]

    def _generate(self, name: str, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Greedy outputs of rendered prompts, from the cache where asked before."""
        keys = [self._key(name, version(name), p) for p in prompts]
        todo = list(dict.fromkeys((k, p) for k, p in zip(keys, prompts, strict=True) if k not in self._done))
        if todo:
            t = time.perf_counter()
            outs = self.generator.generate([p for _, p in todo], max_new_tokens=max_new_tokens or self.max_new_tokens)
            self.spent += time.perf_counter() - t
            per = (time.perf_counter() - t) / len(todo)
            recs = [{"id": k, "text": o.strip(), "seconds": per,
                     "tokens": self.generator.count_tokens(p) + (self.generator.count_tokens(o) if o else 0)}
                    for (k, p), o in zip(todo, outs, strict=True)]
            self.cache.append(recs)
            self._done.update({r["id"]: r for r in recs})
        return [self._done[k] for k in keys]

    def _relevance(self, questions: Sequence[str], hits: Sequence[Hit]) -> list[tuple[float, float, int]]:
        """P(relevant) of each (question, passage) by log-likelihood, with its seconds and tokens."""
        from biorag.judges.run import ask_cached
        from biorag.judges.verdicts import BINARY

        gen = self.filter_generator or self.generator
        key = self.filter_key or self.model_key
        prompts = [gen.render_chat([{"role": "user", "content": _ENV.from_string(TEMPLATES["relevant"]).render(
            question=q, passage=passage(h))}]) for q, h in zip(questions, hits, strict=True)]
        keys = [hashlib.sha256(json.dumps([key, "relevant", version("relevant"), p]).encode()).hexdigest()[:32]
                for p in prompts]
        t = time.perf_counter()
        try:
            ask_cached(gen, list(zip(prompts, keys, strict=True)), BINARY, "loglikelihood", self.cache, self._done)
        except (BioragError, NotImplementedError) as e:
            raise BioragError(f"arm.retriever.filter=lm: the filter model could not score log-likelihoods ({e}); "
                              "a chat endpoint without logprobs cannot filter by P(yes): use "
                              "arm.retriever.filter=cross-encoder arm.retriever.filter_model=RERANKER") from e
        self.spent += time.perf_counter() - t
        read = [self._done[k] for k in keys]
        return [(r["prob"], r["seconds"], r["tokens_in"] + r["tokens_out"]) for r in read]

    # -- the pipeline ---------------------------------------------------------------------

    def contexts(self, batch: Sequence[Example], questions: Sequence[str], retriever: Any,
                 k: int) -> list[Context]:
        spec = self.spec
        self.spent = 0.0
        out = [Context([], []) for _ in batch]
        query_lists = self._queries(batch, questions, out)
        if spec.retrieve and retriever is not None:
            depth = max(k, DEPTH, spec.filter_candidates if spec.filter != "none" else 0)
            flat = [(i, q) for i, qs in enumerate(query_lists) for q in qs]
            found = retrieve_ranked(retriever, [batch[i] for i, _ in flat], [q for _, q in flat], depth, spec.exclude)
            lists: list[list[list[Hit]]] = [[] for _ in batch]
            for (i, _), hits in zip(flat, found, strict=True):
                lists[i].append(hits)
            for c, ranked, qs in zip(out, lists, query_lists, strict=True):
                c.ranked = _fuse(ranked, spec.rrf_k)[:depth] if len(ranked) > 1 else ranked[0]
                c.queries = (*c.queries, *qs)
                c.hits = c.ranked[:k]
            if spec.filter != "none":
                self._filter(questions, out, k)
            for _ in range(spec.rounds - 1):
                self._follow_up(batch, questions, out, retriever, k)
        if spec.generate:
            self._written(batch, questions, out)
        return out

    def _queries(self, batch: Sequence[Example], questions: Sequence[str], out: list[Context]) -> list[list[str]]:
        kind = self.spec.rewrite
        if kind == "none":
            return [[q] for q in questions]
        if kind == "multi":
            prompts = [self._render("multi", question=q, n=self.spec.rewrites) for q in questions]
        else:
            prompts = [self._render(kind, question=q) for q in questions]
        got = self._generate(kind, prompts)
        self._charge(out, got)
        lists = []
        for q, g in zip(questions, got, strict=True):
            if kind == "hyde":
                lists.append([g["text"] or q])  # an empty passage falls back to the question
            elif kind == "rationale":
                lists.append([f"{q}\n{g['text']}".strip()])
            else:
                lines = _lines(g["text"])[: self.spec.rewrites]
                lists.append([q, *[x for x in lines if x != q]])
        return lists

    def _filter(self, questions: Sequence[str], out: list[Context], k: int) -> None:
        spec = self.spec
        pairs = [(i, h) for i, c in enumerate(out) for h in c.ranked[: spec.filter_candidates]]
        if spec.filter == "lm":
            scored = self._relevance([questions[i] for i, _ in pairs], [h for _, h in pairs])
            scores = [s for s, _, _ in scored]
            for (i, _), (_, sec, tok) in zip(pairs, scored, strict=True):
                out[i].seconds += sec
                out[i].tokens += tok
                out[i].calls += 1
        else:
            t = time.perf_counter()
            scores = self.reranker.score([(questions[i], passage(h)) for i, h in pairs]) if pairs else []
            self.spent += time.perf_counter() - t
            per = (time.perf_counter() - t) / max(len(pairs), 1)
            for i, _ in pairs:
                out[i].seconds += per
        keep: dict[int, list[Hit]] = {i: [] for i in range(len(out))}
        for (i, h), s in zip(pairs, scores, strict=True):
            if s >= spec.filter_threshold:
                keep[i].append(h)
        for i, c in enumerate(out):
            cands = c.ranked[: spec.filter_candidates]
            c.candidates = tuple(h.chunk.doc_id for h in cands)
            c.kept = len(keep[i])
            c.hits = keep[i][:k]

    def _follow_up(self, batch: Sequence[Example], questions: Sequence[str], out: list[Context], retriever: Any,
                   k: int) -> None:
        n = self.spec.followups
        prompts = [self._render("followup", question=q, n=n,
                                passages="\n\n".join(f"[{j + 1}] {passage(h)}" for j, h in enumerate(c.hits)) or "(none)")
                   for q, c in zip(questions, out, strict=True)]
        got = self._generate("followup", prompts)
        self._charge(out, got)
        asks = [_lines(g["text"])[:n] for g in got]
        flat = [(i, q) for i, qs in enumerate(asks) for q in qs]
        if not flat:
            return
        found = retrieve_ranked(retriever, [batch[i] for i, _ in flat], [q for _, q in flat], k, self.spec.exclude)
        for (i, q), hits in zip(flat, found, strict=True):
            c = out[i]
            c.queries = (*c.queries, q)
            have = {h.chunk.id for h in c.hits}
            c.hits = c.hits + [h for h in hits if h.chunk.id not in have and not have.add(h.chunk.id)]

    def _written(self, batch: Sequence[Example], questions: Sequence[str], out: list[Context]) -> None:
        n = self.spec.generate
        prompts = [self._render("generate", question=q, i=j + 1, n=n) for q in questions for j in range(n)]
        got = self._generate("generate", prompts)
        for i, (e, c) in enumerate(zip(batch, out, strict=True)):
            mine = got[i * n:(i + 1) * n]
            self._charge([c] * len(mine), mine)
            c.generated = tuple(g["text"] for g in mine)
            written = [Hit(Chunk(f"{GENERATED}{e.id}:{j}", f"{GENERATED}{e.id}", g["text"], title=GENERATED_TITLE),
                           0.0, j + 1) for j, g in enumerate(mine) if g["text"]]
            if not self.spec.retrieve:
                c.hits = written
            else:  # interleaved: retrieved 1, generated 1, retrieved 2, ...
                mixed = []
                for j in range(max(len(c.hits), len(written))):
                    mixed += c.hits[j:j + 1] + written[j:j + 1]
                c.hits = mixed

    @staticmethod
    def _charge(out: Sequence[Context], got: Sequence[dict[str, Any]]) -> None:
        for c, g in zip(out, got, strict=True):
            c.tokens += int(g.get("tokens", 0))
            c.seconds += float(g.get("seconds", 0.0))
            c.calls += 1


def _lines(text: str) -> list[str]:
    """The non-empty lines of a list the model wrote, without bullets or numbering."""
    out = []
    for line in text.splitlines():
        s = _LINE.sub("", line).strip()
        if s and s not in out:
            out.append(s)
    return out


def _fuse(lists: Sequence[Sequence[Hit]], rrf_k: int) -> list[Hit]:
    """Ranked hit lists fused by reciprocal rank fusion (the existing fusion), as new hits."""
    by_id: dict[str, Hit] = {}
    for hits in lists:
        for h in hits:
            by_id.setdefault(h.chunk.id, h)
    fused = reciprocal_rank_fusion([[h.chunk.id for h in hits] for hits in lists], rrf_k)
    return [Hit(by_id[cid].chunk, score, rank) for rank, (cid, score) in enumerate(fused, 1)]
