"""Fine-tuning data: corpora packed for continued pre-training, or instruction pairs / chats
for supervised tuning with the loss on the responses only.

Both end as lists of {"input_ids", "labels"} (labels -100 where no loss is taken), split
into train and eval by a seeded hash of each document's or example's id, so the split does
not depend on reading order and a document never straddles it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biorag.corpora.training import (
    DataConfig,
    corpus_documents,
    corpus_fingerprints,
    file_hash,
    sft_examples,
)
from biorag.errors import InputError

log = logging.getLogger(__name__)

IGNORE = -100  # label of a token that takes no loss (transformers' CrossEntropy ignore_index)


@dataclass
class TrainingData:
    """Tokenised train and eval rows, what they came from, and a fingerprint of it all."""

    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    texts: list[tuple[str, str]]  # (id, text) of every document / example, for the audit
    fingerprint: str
    stats: dict[str, Any]
    # RAFT: each task's training items and the evaluation items they were kept apart from
    splits: list[Any] | None = None


# -- tokenising -----------------------------------------------------------------------------


def in_eval(key: str, seed: int, fraction: float) -> bool:
    """Seeded, order-free split: the same id lands on the same side in every run."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def pack(docs: list[list[int]], seq_len: int) -> list[dict[str, list[int]]]:
    """Concatenate token lists and cut blocks of seq_len (run_clm's group_texts); the short
    remainder is dropped unless it is all there is."""
    flat = [t for d in docs for t in d]
    n = len(flat) // seq_len * seq_len
    blocks = [flat[i : i + seq_len] for i in range(0, n, seq_len)]
    if not blocks and flat:
        blocks = [flat]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def pretrain_data(data: DataConfig, tokenizer: Any, seq_len: int, seed: int, eval_fraction: float) -> TrainingData:
    from biorag.models.text import TokenEncoder

    encoder = TokenEncoder(tokenizer)
    eos = tokenizer.eos_token_id
    content = hashlib.sha256()
    texts: list[tuple[str, str]] = []
    train_docs: list[list[int]] = []
    eval_docs: list[list[int]] = []
    per_corpus: dict[str, int] = {}
    for corpus, doc_id, text in corpus_documents(data):
        content.update(f"{corpus}\0{doc_id}\0{text}\0".encode())
        texts.append((f"{corpus}:{doc_id}", text))
        per_corpus[corpus] = per_corpus.get(corpus, 0) + 1
    ids = _batch_encode(encoder, [t for _, t in texts])
    for (key, _), toks in zip(texts, ids, strict=True):
        toks = toks + ([eos] if eos is not None else [])
        (eval_docs if in_eval(key, seed, eval_fraction) else train_docs).append(toks)
    if eval_fraction > 0 and not eval_docs and len(train_docs) > 1:
        eval_docs.append(train_docs.pop())
    train, evals = pack(train_docs, seq_len), pack(eval_docs, seq_len)
    if not train:
        raise InputError(f"data {data.name}: the corpora gave no text to train on")
    sources = corpus_fingerprints(data)
    fingerprint = _fingerprint(data, content.hexdigest(), sources, tokenizer, seq_len, seed, eval_fraction)
    stats = {
        "documents": len(texts), "documents_per_corpus": per_corpus,
        "train_documents": len(train_docs), "eval_documents": len(eval_docs),
        "tokens": sum(len(d) for d in train_docs) + sum(len(d) for d in eval_docs),
        "train_blocks": len(train), "eval_blocks": len(evals),
        "source_fingerprints": sources, "content_hash": content.hexdigest()[:16],
    }
    return TrainingData(train, evals, texts, fingerprint, stats)


def sft_data(
    data: DataConfig, tokenizer: Any, seq_len: int, seed: int, eval_fraction: float, *, chat: str = "auto",
) -> TrainingData:
    from biorag.models.text import TokenEncoder, wants_template

    encoder = TokenEncoder(tokenizer)
    use_template = wants_template(tokenizer, chat, f"data {data.name}")
    content = hashlib.sha256()
    texts: list[tuple[str, str]] = []
    train: list[dict[str, list[int]]] = []
    evals: list[dict[str, list[int]]] = []
    truncated = dropped = 0
    for ex_id, messages in sft_examples(data):
        content.update(json.dumps([ex_id, messages]).encode())
        texts.append((ex_id, "\n".join(m["content"] for m in messages)))  # as data_texts
        input_ids, labels = render_sft(messages, tokenizer, encoder, use_template)
        if len(input_ids) > seq_len:
            truncated += 1
            input_ids, labels = input_ids[:seq_len], labels[:seq_len]
        if all(x == IGNORE for x in labels):
            dropped += 1  # the prompt alone fills seq_len: nothing left to learn from
            continue
        (evals if in_eval(ex_id, seed, eval_fraction) else train).append(
            {"input_ids": input_ids, "labels": labels}
        )
    if eval_fraction > 0 and not evals and len(train) > 1:
        evals.append(train.pop())
    if not train:
        raise InputError(f"data {data.name}: no example left to train on ({dropped} too long)", file=data.path)
    if truncated or dropped:
        log.warning("data %s: %d example(s) cut to %d tokens, %d dropped (prompt too long)",
                    data.name, truncated, seq_len, dropped)
    source = {"file": f"sha256:{file_hash(Path(data.path or ''))}"}
    fingerprint = _fingerprint(data, content.hexdigest(), source, tokenizer, seq_len, seed, eval_fraction)
    stats = {
        "examples": len(texts), "train_examples": len(train), "eval_examples": len(evals),
        "truncated": truncated, "dropped": dropped, "chat_template": use_template,
        "tokens": sum(len(r["input_ids"]) for r in train + evals),
        "response_tokens": sum(sum(1 for x in r["labels"] if x != IGNORE) for r in train + evals),
        "source_fingerprints": source, "content_hash": content.hexdigest()[:16],
    }
    return TrainingData(train, evals, texts, fingerprint, stats)


def render_sft(
    messages: list[dict[str, str]], tokenizer: Any, encoder: Any, use_template: bool
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation; only assistant turns (with the template's
    end-of-turn tokens, or EOS without a template) take loss.

    The conversation is rendered as evaluation renders prompts (the chat template, or the
    contents a blank line apart) and tokenised once, whole; a token is learned when it starts
    inside an assistant turn (character offsets), so no boundary is tokenised differently
    from how the model will see it.
    """
    text, spans = _render_turns(messages, tokenizer, use_template)
    return tokenise_spans(text, spans, tokenizer, encoder)


def tokenise_spans(text: str, spans: list[tuple[int, int]], tokenizer: Any, encoder: Any) -> tuple[list[int], list[int]]:
    """`text` tokenised once, whole; a token takes loss when it starts inside one of the
    character `spans` (BOS first when the model's tokenizer adds one)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    labels = [t if any(a <= start < b for a, b in spans) else IGNORE for t, (start, _) in zip(ids, offsets, strict=True)]
    if encoder.prepend_bos and not (ids and ids[0] == encoder.bos):
        ids, labels = [encoder.bos, *ids], [IGNORE, *labels]
    return ids, labels


def _render_turns(
    messages: list[dict[str, str]], tokenizer: Any, use_template: bool
) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as text, and the character spans of the assistant turns."""
    from biorag.models.text import apply_template

    spans: list[tuple[int, int]] = []
    if not use_template:
        text = ""
        for m in messages:
            text += "\n\n" if text else ""
            if m["role"] == "assistant":
                start = len(text)
                text += m["content"] + (tokenizer.eos_token or "")
                spans.append((start, len(text)))
            else:
                text += m["content"]
        return text, spans
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = apply_template(tokenizer, messages[:i], add_generation_prompt=True)
        full = apply_template(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise InputError(
                "the chat template does not render a conversation prefix by prefix; "
                "use prompt/response pairs or set model.chat=false"
            )
        spans.append((len(prompt), len(full)))
        done = full
    return done, spans


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _batch_encode(encoder: Any, texts: list[str], batch: int = 2048) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        ids = encoder.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        if encoder.prepend_bos:
            ids = [[encoder.bos, *x] if not (x and x[0] == encoder.bos) else x for x in ids]
        out.extend(ids)
    return out


def _fingerprint(data: DataConfig, content: str, sources: dict[str, str], tokenizer: Any,
                 seq_len: int, seed: int, eval_fraction: float) -> str:
    payload = {
        "objective": data.objective, "content": content, "sources": sources,
        "tokenizer": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer),
        "seq_len": seq_len, "seed": seed, "eval_fraction": eval_fraction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
