"""Retrieval-augmented fine-tuning data (RAFT, Zhang et al. 2024): SFT examples whose
prompts carry retrieved passages, so the model learns to use evidence and to ignore noise.

For each training item of each task in `data.raft.tasks` (`biorag.tasks.splits`: never an
evaluation item), the passages are retrieved as the raft arm retrieves them at test time
(the retriever spec of arm `data.raft.arm` under the `arm.retriever.*` entries of
`data.raft.overrides`: its index, k, mode and reranker, opened by `biorag.retrieval`'s one
opener) and the prompt is rendered with the task's own rag template (the task under the
`task.*` entries), exactly as the runner renders it:

- a seeded draw of exactly round(p_gold x n) items gets the gold passage (the best-ranked
  chunk of a gold document, or its first chunk when retrieval missed it) at a seeded place
  among k - 1 distractors;
- the other items get k distractors;
- a distractor is a retrieved passage of no gold document, in rank order (hard negatives).

The response is what the evaluation scores: the gold option's continuation for
log-likelihood scoring (" <option text>" or " B"), else the task's `shot_answer`; with
`rationale: true` it first quotes the gold passage ("Passage [2] says: ...") or says no
passage answers. The loss is on the response only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from biorag.corpora.training import RaftSettings
from biorag.errors import ConfigError, ContaminationError, InputError
from biorag.finetune.adapters import item_fingerprints
from biorag.finetune.data import IGNORE, TrainingData, in_eval, tokenise_spans
from biorag.retrieval.spec import RetrieverConfig
from biorag.tasks.splits import TaskSplit, item_text
from biorag.types import LETTERS, Example, Hit

log = logging.getLogger(__name__)

QUOTE_WORDS = 30  # a rationale quotes at most this many words of the gold passage


@dataclass
class RaftExample:
    """One training item rendered: its messages and which passages went in."""

    id: str
    task: str
    messages: list[dict[str, str]]  # the prompt's messages, then the assistant's response
    gold_drawn: bool  # the item was drawn to get the gold passage
    gold_in_prompt: bool  # a gold passage is among the prompt's passages (after packing)
    passages: tuple[str, ...]  # document ids of the prompt's passages, in order


def gold_share(n: int, p_gold: float) -> int:
    """How many of n items get the gold passage: p_gold x n rounded half up."""
    return math.floor(p_gold * n + 0.5)


def draw_gold(ids: list[str], p_gold: float, seed: int) -> set[str]:
    """The items (of those whose gold passage can be had) that get it: exactly
    gold_share(len(ids), p_gold) of them, the same for the same seed."""
    return set(random.Random(seed).sample(sorted(ids), gold_share(len(ids), p_gold)))


def gold_hit(example: Example, ranked: list[Hit], index: Any, doc_rows: dict[str, list[int]],
             banned: set[str] = frozenset()) -> Hit | None:
    """The gold passage of an item: its best-ranked chunk of a gold document, else the first
    chunk of its first gold document the index holds (`doc_rows`, from `index.rows_of_docs`);
    None when it holds none."""
    gold = [d for d in example.evidence if d not in banned]
    for h in ranked:
        if h.chunk.doc_id in gold:
            return h
    for doc in gold:
        if doc_rows.get(doc):
            return Hit(index.chunk(doc_rows[doc][0]), math.nan, 0)
    return None


def choose_passages(example: Example, ranked: list[Hit], gold: Hit | None, k: int,
                    rng: random.Random) -> list[Hit]:
    """k passages: the gold one at a random place among k - 1 distractors when `gold` is
    given, else k distractors; ranks renumbered from 1 in prompt order."""
    evidence = set(example.evidence)
    distractors = [h for h in ranked if h.chunk.doc_id not in evidence]
    if gold is None:
        picked = distractors[:k]
    else:
        picked = distractors[: k - 1]
        picked.insert(rng.randrange(len(picked) + 1), gold)
    return [Hit(h.chunk, h.score, i) for i, h in enumerate(picked, 1)]


def response(task: Any, example: Example, count: Any, rationale: bool = False,
             gold_at: int | None = None, gold_text: str = "") -> str:
    """What the model learns to say: the answer as the evaluation scores it, after a quote of
    the gold passage with `rationale`."""
    from biorag.prompting import answer_turn, mcq_continuations

    if task.type in ("mcq", "longdoc") and task.scoring in ("loglikelihood", "both"):
        answer = mcq_continuations(task, example)[LETTERS.index(str(example.gold))]
    else:
        answer = answer_turn(task, example, count)
    if not rationale:
        return answer
    if gold_at is None:
        lead = "No passage answers this."
    else:
        words = re.split(r"(?<=[.!?])\s", gold_text.strip(), maxsplit=1)[0].split()
        quote = " ".join(words[:QUOTE_WORDS]) + (" …" if len(words) > QUOTE_WORDS else "")
        lead = f'Passage [{gold_at}] says: "{quote}"'
    return f"{lead}\nAnswer:{answer if answer.startswith(' ') else ' ' + answer}"


def retriever_spec(raft: RaftSettings) -> RetrieverConfig:
    """The retriever the prompts get: the spec of arm `data.raft.arm` (its index, k, mode and
    reranker) under the `arm.retriever.*` entries of `data.raft.overrides`."""
    from omegaconf import OmegaConf

    from biorag.config import extended, option_path, read_yaml, to_typed

    path = option_path("arm", raft.arm)
    spec = extended(read_yaml(path), path, "arm").get("retriever")
    if spec is None:
        raise ConfigError(f"data.raft.arm={raft.arm} is closed-book: RAFT needs an arm that retrieves (rag)")
    own = [o.removeprefix("arm.retriever.") for o in raft.overrides if o.startswith("arm.retriever.")]
    other = [o for o in raft.overrides if not o.lstrip("+~").startswith(("task.", "arm.retriever.", "index_root="))]
    if other:
        raise ConfigError(f"data.raft.overrides: {', '.join(other)} do not apply to RAFT data: give task.*, "
                          "arm.retriever.* or index_root= entries")
    return to_typed(OmegaConf.merge(spec, OmegaConf.from_dotlist(own)), RetrieverConfig,
                    where=f"data.raft.arm={raft.arm} retriever ({path})")


def _index_root(raft: RaftSettings) -> str | None:
    """The `index_root=` entry of `data.raft.overrides` (None: $BIORAG_INDEX_DIR or ./indexes)."""
    roots = [o.split("=", 1)[1] for o in raft.overrides if o.startswith("index_root=")]
    return roots[-1] if roots else None


def render_task(split: TaskSplit, raft: RaftSettings, count: Any) -> tuple[list[RaftExample], dict]:
    """Every training item of one task as a RaftExample, and the task's figures: the task as
    `data.raft.overrides` sets it, the passages retrieved as the raft arm's spec says."""
    from biorag.prompting import build_prompt
    from biorag.retrieval.evidence import DEPTH, retrieve_ranked
    from biorag.retrieval.open import IndexContext, open_retriever
    from biorag.retrieval.spec import search_query
    from biorag.tasks import load_task_config
    from biorag.tasks.splits import task_overrides

    task, spec, items = load_task_config(split.task, task_overrides(raft.overrides)), retriever_spec(raft), split.train
    retriever = open_retriever(spec, IndexContext(owner=f"data.raft.arm={raft.arm}", task=task.name,
                                                  task_index=task.index, task_corpus=task.corpus,
                                                  root=_index_root(raft)))
    queries = [search_query(e, spec.query) for e in items]
    ranked = retrieve_ranked(retriever, items, queries, max(spec.k + 1, raft.depth, DEPTH), spec.exclude)
    banned = lambda e: set(e.source_docs) if spec.exclude == "gold_source" else set()  # noqa: E731
    doc_rows = retriever.index.rows_of_docs(d for e in items for d in e.evidence)  # one pass for all
    golds = {e.id: gold_hit(e, r, retriever.index, doc_rows, banned(e)) for e, r in zip(items, ranked, strict=True)}
    drawn = draw_gold([i for i, g in golds.items() if g is not None], raft.p_gold,
                      _seed(raft.seed, split.task))
    rng = random.Random(_seed(raft.seed, split.task, "places"))
    out: list[RaftExample] = []
    for e, r in zip(items, ranked, strict=True):
        gold = golds[e.id] if e.id in drawn else None
        hits = choose_passages(e, r, gold, spec.k, rng)
        prompt = build_prompt(task, e, hits, count)
        docs = tuple(h.chunk.doc_id for h in hits if h.chunk.id in set(prompt.hit_ids))
        at = next((i for i, h in enumerate(hits, 1) if gold is not None and h.chunk.id == gold.chunk.id
                   and h.chunk.id in prompt.hit_ids), None)
        said = response(task, e, count, raft.rationale, at, gold.chunk.text if gold else "")
        out.append(RaftExample(e.id, split.task, [*prompt.messages, {"role": "assistant", "content": said}],
                               e.id in drawn, bool(set(e.evidence) & set(docs)), docs))
    stats = {
        "candidates": split.candidates, "left_out_as_evaluation_items": len(split.dropped),
        "evaluation_items": len(split.evaluation), "items": len(out),
        "gold_available": sum(g is not None for g in golds.values()), "gold_drawn": len(drawn),
        "gold_in_prompt": sum(x.gold_in_prompt for x in out),
        "retriever": {"index": retriever.index.name, "fingerprint": retriever.index.fingerprint,
                      "mode": spec.mode, "k": spec.k, "rerank": spec.rerank, "query": spec.query},
    }
    if stats["gold_in_prompt"] < len(drawn):
        log.warning("task %s: %d of %d gold passages drawn did not fit the prompt's context_tokens",
                    split.task, len(drawn) - stats["gold_in_prompt"], len(drawn))
    return out, stats


def keep_apart(splits: list[TaskSplit], settings: Any) -> None:
    """Leave out of each split the training items the contamination audit finds in an
    evaluation item (an n-gram of it in the training item's text: templated definitions
    share them), until the audit finds none; the audit before training checks again."""
    from biorag.contamination import audit_texts

    for s in splits:
        while s.train:
            report = audit_texts([(e.id, item_text(e)) for e in s.train], {s.task: s.evaluation}, settings)
            hits = {src for item in report.tasks[0].items for src in item.sources}
            if not hits:
                break
            s.dropped += sorted(hits)
            s.train = [e for e in s.train if e.id not in hits]
            log.info("task %s: %d training item(s) left out, sharing a %d-gram with an evaluation item",
                     s.task, len(hits), settings.ngram)


def raft_data(cfg: Any, tokenizer: Any) -> TrainingData:
    """The RAFT training set of a finetune config (objective raft), tokenised, with the
    training items kept apart from the evaluation items and figures for the manifest."""
    from biorag.models.text import TokenEncoder, wants_template
    from biorag.tasks.splits import training_splits

    raft, t = cfg.data.raft, cfg.train
    encoder = TokenEncoder(tokenizer)
    use_template = wants_template(tokenizer, cfg.model.chat, f"data {cfg.data.name}")
    splits = training_splits(raft)
    if raft.keep_apart:
        keep_apart(splits, cfg.audit)
    splits = [s.cut() for s in splits]
    examples: list[RaftExample] = []
    per_task: dict[str, dict] = {}
    for split in splits:
        if not split.train:
            raise InputError(f"data {cfg.data.name}: task {split.task} gave no training item apart from its "
                             f"{len(split.evaluation)} evaluation items (data.raft.train={raft.train})")
        rendered, per_task[split.task] = render_task(split, raft, encoder.count)
        examples += rendered
    train, evals, too_long, longest, content = [], [], 0, 0, hashlib.sha256()
    for x in examples:
        content.update(json.dumps([x.id, x.messages]).encode())
        ids, labels = render_response(x.messages, tokenizer, encoder, use_template)
        longest = max(longest, len(ids))
        if len(ids) > t.seq_len:  # cutting would change the prompt the model learns from
            too_long += 1
            continue
        (evals if in_eval(x.id, t.seed, t.eval_fraction) else train).append({"input_ids": ids, "labels": labels})
    if t.eval_fraction > 0 and not evals and len(train) > 1:
        evals.append(train.pop())
    if too_long:
        log.warning("data %s: %d of %d RAFT examples are longer than train.seq_len=%d and are left out; "
                    "train.seq_len=%d keeps them all", cfg.data.name, too_long, len(examples), t.seq_len, longest)
    if not train:
        raise InputError(f"data {cfg.data.name}: no RAFT example fits train.seq_len={t.seq_len} "
                         f"(the longest has {longest} tokens); set train.seq_len={longest}")
    stats = {
        "examples": len(examples), "train_examples": len(train), "eval_examples": len(evals),
        "too_long": too_long, "longest": longest, "chat_template": use_template, "tasks": per_task,
        "gold_share": round(sum(x.gold_in_prompt for x in examples) / max(len(examples), 1), 4),
        "tokens": sum(len(r["input_ids"]) for r in train + evals),
        "response_tokens": sum(sum(1 for x in r["labels"] if x != IGNORE) for r in train + evals),
        # what the runner checks a raft cell's evaluation items against (hashes, no text)
        "train_items": {s.task: item_fingerprints(s.train, s.one_source) for s in splits},
        "content_hash": content.hexdigest()[:16],
    }
    payload = {"objective": "raft", "raft": asdict(raft), "content": content.hexdigest(),
               "retrievers": {k: v["retriever"] for k, v in per_task.items()},
               "tokenizer": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer),
               "seq_len": t.seq_len, "seed": t.seed, "eval_fraction": t.eval_fraction}
    fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    texts = [(e.id, item_text(e)) for s in splits for e in s.train]
    return TrainingData(train, evals, texts, fingerprint, stats, splits)


def overlap(cfg: Any, data: TrainingData) -> tuple[Any, dict[str, list[str]]]:
    """The contamination audit of RAFT training items against the evaluation items they were
    kept apart from: the n-gram audit (`biorag.contamination`) and, for items too short for
    it, the same input (or id); returns the report and each task's overlapping items."""
    from biorag.contamination import audit_texts
    from biorag.tasks.splits import shared_items

    splits = data.splits or []
    report = audit_texts(data.texts, {s.task: s.evaluation for s in splits}, cfg.audit,
                         source=f"RAFT training items of '{cfg.data.name}'", source_fingerprint=data.fingerprint)
    found = {t.task: [i.example_id for i in t.items] for t in report.tasks}
    for s in splits:
        same = shared_items(s.evaluation, s.train, by_id=s.one_source)
        found[s.task] = list(dict.fromkeys([*found.get(s.task, []), *same]))
    return report, {t: ids for t, ids in found.items() if ids}


def refuse_overlap(name: str, found: dict[str, list[str]]) -> None:
    """Raise when RAFT training items overlap evaluation items (the CLI's --allow-overlap
    trains anyway)."""
    if found:
        listed = "; ".join(f"{task}: {len(ids)} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
                           for task, ids in found.items())
        raise ContaminationError(
            f"data {name}: RAFT training items overlap the evaluation items they must be kept apart from "
            f"(evaluation items overlapping, by task: {listed}). Train on other items (data.raft.train, "
            "data.raft.exclude) or pass --allow-overlap to train anyway."
        )


def render_response(messages: list[dict[str, str]], tokenizer: Any, encoder: Any,
                    use_template: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels of a prompt and its response, the prompt rendered as the runner
    renders it (`render_messages` with the generation prompt) and the response appended as
    the evaluation appends an option: the loss is on the response (and the template's
    end-of-turn), the text on both sides of the boundary tokenised as one."""
    from biorag.models.text import apply_template, render_messages

    prompt, answer = messages[:-1], messages[-1]["content"]
    context = render_messages(tokenizer, use_template, prompt, True)
    if use_template:
        text = apply_template(tokenizer, messages, add_generation_prompt=False)
        if not text.startswith(context):
            raise InputError("the chat template does not render the prompt as a prefix of the "
                             "conversation; set model.chat=false")
    else:
        text = context + answer + (tokenizer.eos_token or "")
    return tokenise_spans(text, [(len(context), len(text))], tokenizer, encoder)


def _seed(seed: int, *parts: str) -> int:
    return int(hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()[:8], 16)
