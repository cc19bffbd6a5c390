"""Predicting one cell's items: retrieve (when the arm has a retriever), render prompts,
score options by log-likelihood and/or generate, and append each step's raw records to the
prediction cache as it finishes, so a stopped cell resumes where it stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from biorag import progress
from biorag.experiment.arms import RunConfig, cell_name
from biorag.experiment.cache import PredictionCache, cache_root
from biorag.experiment.resources import LoadedModels, PreparedCell
from biorag.models.base import Generator, LoglikelihoodResult
from biorag.retrieval.cache import CachedRetriever, queries_cut
from biorag.retrieval.evidence import DEPTH, doc_ranking, retrieve_ranked
from biorag.retrieval.rerank import RerankingRetriever, bind_generator, find, model_key
from biorag.retrieval.retrievers import Retriever
from biorag.retrieval.spec import search_query
from biorag.scoring.evaluate import majority_output
from biorag.tasks.config import TaskConfig
from biorag.types import CellRecord, Example, Hit, RankedChunk


def _batches(items: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict(
    cfg: RunConfig,
    examples: Sequence[Example],
    generator: Generator,
    retriever: Retriever | None,
    cache: PredictionCache,
    augmenter: Any = None,
) -> tuple[list[CellRecord], int]:
    """The record of every example (from the cache where present), in example order, and how
    many came from the cache."""
    from biorag.prompting import build_prompt, mcq_continuations

    done = cache.load_records()
    resumed = sum(1 for e in examples if e.id in done)
    todo = [e for e in examples if e.id not in done]
    task = cfg.task
    use_ll = task.scoring in ("loglikelihood", "both") and task.type in ("mcq", "longdoc")
    use_gen = task.scoring in ("generate", "both") or not use_ll
    spec = cfg.arm.retriever
    k = spec.k if spec else 0
    with progress.bar(cell_name(cfg.arm.name, cfg.model.name, task.name, task.protocol), total=len(examples),
                      completed=resumed) as bar:
        for batch in _batches(todo, cfg.batch_size):
            with progress.step(bar, len(batch)):  # the bar moves as the backend's batches finish
                t0 = time.perf_counter()
                ranked: list[list[Hit]] = [[] for _ in batch]
                cut, rerank_s = [False] * len(batch), None
                contexts = None
                if augmenter is not None and spec is not None:  # RAG methods around retrieval
                    queries = [search_query(e, spec.query) for e in batch]
                    cut = queries_cut(retriever, queries) if retriever is not None else cut
                    contexts = augmenter.contexts(batch, queries, retriever, k)
                    ranked = [c.ranked for c in contexts]
                elif retriever is not None and spec is not None:
                    queries = [search_query(e, spec.query) for e in batch]
                    cut = queries_cut(retriever, queries)
                    stage = find(retriever, RerankingRetriever)
                    before = stage.seconds if stage is not None else 0.0
                    # deep enough for every retrieval measure; the prompt gets the top k
                    ranked = retrieve_ranked(retriever, batch, queries, max(k, DEPTH), spec.exclude)
                    rerank_s = (stage.seconds - before) / len(batch) if stage is not None else None
                hits = [c.hits for c in contexts] if contexts is not None else [h[:k] for h in ranked]
                # the methods' model calls are theirs (method_s), not retrieval's
                t_retrieval = time.perf_counter() - t0 - (augmenter.spent if contexts is not None else 0.0)
                prompts = [build_prompt(task, e, h, generator.count_tokens) for e, h in zip(batch, hits, strict=True)]
                texts = [generator.render_chat(p.messages) for p in prompts]
                t1 = time.perf_counter()
                lls: list[list[LoglikelihoodResult]] = [[] for _ in batch]
                if use_ll:
                    requests, owners = [], []
                    for i, (e, text) in enumerate(zip(batch, texts, strict=True)):
                        for cont in mcq_continuations(task, e):
                            requests.append((text, cont))
                            owners.append(i)
                    for i, res in zip(owners, generator.loglikelihood(requests), strict=True):
                        lls[i].append(res)
                outputs, samples = [""] * len(batch), [[] for _ in batch]
                if use_gen:
                    outputs, samples = _generate(generator, texts, batch, task, cfg.seed)
                t_model = time.perf_counter() - t1
                records = []
                for j, (e, p, text, out, ll, hs, sampled, c) in enumerate(zip(batch, prompts, texts, outputs, lls, ranked,
                                                                              samples, cut, strict=True)):
                    ctx = contexts[j] if contexts is not None else None
                    in_prompt = set(p.hit_ids)
                    n_out = generator.count_tokens(out) if out else 0  # the output kept (budget, truncation)
                    n_gen = sum(generator.count_tokens(x) for x in sampled) if sampled else n_out  # all generated
                    records.append(CellRecord(
                        id=e.id,
                        prompt_hash=p.hash,
                        retrieved=tuple(p.hit_ids),
                        output=out,
                        ll=tuple((r.logprob, r.n_tokens, r.n_chars, r.is_greedy) for r in ll),
                        tokens=generator.count_tokens(text) + n_gen,
                        retrieval_s=t_retrieval / len(batch),
                        model_s=t_model / len(batch),
                        truncated=p.truncated,
                        # with a rerank stage, each hit's first-stage rank follows its rerank score
                        ranked=tuple(RankedChunk(h.chunk.id, h.chunk.doc_id, h.score, h.first_rank) for h in hs),
                        prompt_docs=tuple(doc_ranking([h for h in hs if h.chunk.id in in_prompt])),
                        samples=tuple(sampled),
                        gen_tokens=n_out,
                        rerank_s=rerank_s,
                        query_cut=c,
                        **(_method_fields(ctx) if ctx is not None else {}),
                    ))
                cache.append_records(records)
                done.update((r.id, r) for r in records)
    return [done[e.id] for e in examples], resumed


@contextmanager
def augmenter_of(cfg: RunConfig, generator: Generator, key: str) -> Iterator[Any]:
    """The cell's RAG methods (`biorag.augment`), or None for an arm without any; a filter
    model of its own is loaded for the cell and released after it."""
    spec = cfg.arm.retriever
    if spec is None or not spec.methods():
        yield None
        return
    from biorag.augment.run import Augmenter, MethodCache
    from biorag.experiment.cache import cache_root

    extra: dict[str, Any] = {}
    opened = None
    if spec.filter == "lm" and spec.filter_model:
        from biorag.models.loading import load_generator, load_model_config
        from biorag.retrieval.rerank import model_key

        fcfg = load_model_config(spec.filter_model)
        opened = extra["filter_generator"] = load_generator(fcfg)
        extra["filter_key"] = model_key(fcfg, "none")
    elif spec.filter == "cross-encoder":
        from biorag.retrieval.rerank import load_reranker, load_reranker_config

        extra["reranker"] = load_reranker(load_reranker_config(str(spec.filter_model)))
    cache = MethodCache(cache_root(cfg) / "augment" / f"{_safe(key)}.jsonl")
    try:
        with cache.lock():  # one writer per model's method cache
            yield Augmenter(spec, generator, key, cache, **extra)
    finally:
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)


def _method_fields(ctx: Any) -> dict[str, Any]:
    """A record's RAG-method fields from its item's context (`biorag.augment.run.Context`)."""
    return {"queries": ctx.queries, "generated": ctx.generated, "candidate_docs": ctx.candidates,
            "kept": ctx.kept, "method_tokens": ctx.tokens, "method_s": ctx.seconds, "method_calls": ctx.calls}


def _generate(generator: Generator, texts: list[str], batch: Sequence[Example], task: TaskConfig,
              seed: int) -> tuple[list[str], list[list[str]]]:
    """Each prompt's output, greedy; or, with `task.samples`, the majority output of samples
    drawn at `task.temperature` with seeds seed, seed+1, ... (and the samples themselves)."""
    kw: dict[str, Any] = {"max_new_tokens": task.max_new_tokens, "stop": task.stop or None}
    if task.stop_after:
        kw["stop_after"] = task.stop_after
    if task.temperature == 0:
        return generator.generate(texts, **kw), [[] for _ in texts]
    drawn = [generator.generate(texts, **kw, temperature=task.temperature, seed=seed + j) for j in range(task.samples)]
    samples = [list(s) for s in zip(*drawn, strict=True)]
    return [majority_output(task, s, e.options) for s, e in zip(samples, batch, strict=True)], samples


@dataclass
class Predicted:
    """What predicting a cell gave: its records in example order, how many came from the cache,
    the seconds it took, the backend's `info`, and the retriever it searched through."""

    records: list[CellRecord]
    resumed: int
    wall: float
    info: dict[str, str]
    retriever: CachedRetriever | None


def cell_cache(cfg: RunConfig, prep: PreparedCell) -> PredictionCache:
    """The cell's prediction cache, named by its fingerprint."""
    return PredictionCache(cache_root(cfg) / "predictions" / f"{prep.fingerprint}.jsonl")


def cell_retrieval_cache(cfg: RunConfig, prep: PreparedCell) -> CachedRetriever | None:
    return CachedRetriever(prep.retriever, cache_root(cfg) / "retrieval") if prep.retriever else None


def predict_cell(cfg: RunConfig, prep: PreparedCell, models: LoadedModels,
                 examples: Sequence[Example] | None = None, cache: PredictionCache | None = None) -> Predicted:
    """The prediction part of a cell: the model over its items (`examples`, default all of
    them) into its prediction cache (`cache`, default the cell's own), resuming from it."""
    generator = models.get(cfg.model, prep.adapter)
    cache = cache or cell_cache(cfg, prep)
    started = time.perf_counter()
    bind_generator(prep.retriever, generator, model_key(cfg.model, prep.adapter_fingerprint))
    retriever = cell_retrieval_cache(cfg, prep)
    with cache.lock(), augmenter_of(cfg, generator, model_key(cfg.model, prep.adapter_fingerprint)) as augmenter:
        records, resumed = predict(cfg, prep.examples if examples is None else examples, generator, retriever,
                                   cache, augmenter)
    return Predicted(records, resumed, time.perf_counter() - started, dict(generator.info), retriever)
