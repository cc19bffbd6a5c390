"""Fine-tuning data: corpora packed for continued pre-training, or instruction pairs / chats
for supervised tuning with the loss on the responses only.

Both end as lists of {"input_ids", "labels"} (labels -100 where no loss is taken), split
into train and eval by a seeded hash of each document's or example's id, so the split does
not depend on reading order and a document never straddles it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.errors import ConfigError, InputError

log = logging.getLogger(__name__)

OBJECTIVES = ("pretrain", "sft")
SFT_FORMATS = ("auto", "prompt_response", "messages")
IGNORE = -100  # label of a token that takes no loss (transformers' CrossEntropy ignore_index)


@dataclass
class DataConfig:
    """A fine-tuning set, as `experiments/data/<name>.yaml` describes it."""

    name: str = "???"
    description: str = ""
    # pretrain: continued pre-training on corpora (packed to train.seq_len);
    # sft: instruction tuning on JSONL prompt/response pairs or chat messages
    objective: str = "pretrain"
    # pretrain: corpus configs (experiments/corpus/<name>.yaml or YAML paths), read in order
    corpora: list[str] = field(default_factory=list)
    limit: int | None = None  # documents per corpus (pretrain) or examples (sft); null: all
    # sft: a JSONL file (.gz too) of {"prompt", "response"} or {"messages": [{role, content}]}
    path: str | None = None
    format: str = "auto"  # auto | prompt_response | messages
    id_field: str | None = "id"  # sft: example ids (line numbers when missing)
    prompt_field: str = "prompt"
    response_field: str = "response"
    messages_field: str = "messages"
    system: str | None = None  # sft: a system message put first in every example

    def __post_init__(self) -> None:
        where = f"data {self.name}"
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"{where}: objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.format not in SFT_FORMATS:
            raise ConfigError(f"{where}: format must be one of {', '.join(SFT_FORMATS)}, not {self.format!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}: limit must be at least 1, not {self.limit}")


@dataclass
class TrainingData:
    """Tokenised train and eval rows, what they came from, and a fingerprint of it all."""

    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    texts: list[tuple[str, str]]  # (id, text) of every document / example, for the audit
    fingerprint: str
    stats: dict[str, Any]


# -- reading --------------------------------------------------------------------------------


def corpus_documents(data: DataConfig) -> Iterator[tuple[str, str, str]]:
    """(corpus name, document id, text as the model reads it) for a pretrain data config."""
    from biorag.corpora import open_corpus

    if not data.corpora:
        raise ConfigError(f"data {data.name}: objective pretrain needs `corpora` (corpus config names)")
    for name in data.corpora:
        cfg = load_corpus_config(name)
        if data.limit is not None:
            cfg.limit = data.limit if cfg.limit is None else min(cfg.limit, data.limit)
        for doc in open_corpus(cfg):
            text = doc.text
            if doc.title and not text.startswith(doc.title):
                text = f"{doc.title}\n{text}"
            yield cfg.name, doc.id, text


def load_corpus_config(name: str) -> Any:
    from omegaconf import OmegaConf

    from biorag.config import config_dir, options, to_typed
    from biorag.corpora import CorpusConfig
    from biorag.errors import did_you_mean

    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name not in options("corpus"):
            raise ConfigError(did_you_mean(name, options("corpus"), what="corpus"))
        path = config_dir() / "corpus" / f"{name}.yaml"
    return to_typed(OmegaConf.load(path), CorpusConfig, where=str(path))


def corpus_fingerprints(data: DataConfig) -> dict[str, str]:
    from biorag.corpora import open_corpus

    return {n: open_corpus(load_corpus_config(n)).source_fingerprint() for n in data.corpora}


def sft_examples(data: DataConfig) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(example id, chat messages) from a JSONL file; bad rows name file, line and field."""
    if not data.path:
        raise ConfigError(f"data {data.name}: objective sft needs `path` (a JSONL file)")
    path = Path(data.path).expanduser()
    if not path.is_file():
        raise InputError("no such file", file=str(path), field="path")
    opener = gzip.open if path.suffix == ".gz" else open
    taken = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if data.limit is not None and taken >= data.limit:
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not JSON ({e.msg})", file=str(path), line=line_no) from None
            if not isinstance(row, dict):
                raise InputError("expected a JSON object", file=str(path), line=line_no)
            messages = _messages(row, data, str(path), line_no)
            ex_id = str(row.get(data.id_field) or line_no) if data.id_field else str(line_no)
            taken += 1
            yield ex_id, messages


def _messages(row: dict[str, Any], data: DataConfig, file: str, line: int) -> list[dict[str, str]]:
    fmt = data.format
    if fmt == "auto":
        fmt = "messages" if data.messages_field in row else "prompt_response"
    system = [{"role": "system", "content": data.system}] if data.system else []
    if fmt == "messages":
        msgs = row.get(data.messages_field)
        if not isinstance(msgs, list) or not msgs:
            raise InputError("expected a non-empty list of {role, content}", file=file, line=line,
                             field=data.messages_field)
        for m in msgs:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise InputError("each message needs string 'role' and 'content'", file=file,
                                 line=line, field=data.messages_field)
        if not any(m["role"] == "assistant" for m in msgs):
            raise InputError("no assistant message to learn from", file=file, line=line,
                             field=data.messages_field)
        has_system = msgs[0]["role"] == "system"
        return [*([] if has_system else system), *({"role": m["role"], "content": m["content"]} for m in msgs)]
    for key in (data.prompt_field, data.response_field):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise InputError("missing or empty text", file=file, line=line, field=key)
    return [*system, {"role": "user", "content": row[data.prompt_field]},
            {"role": "assistant", "content": row[data.response_field]}]


def data_texts(data: DataConfig) -> Iterator[tuple[str, str]]:
    """(id, text) of every document or example, as the contamination audit reads them."""
    if data.objective == "pretrain":
        for corpus, doc_id, text in corpus_documents(data):
            yield f"{corpus}:{doc_id}", text
    else:
        for ex_id, messages in sft_examples(data):
            yield ex_id, "\n".join(m["content"] for m in messages)


def data_source_fingerprint(data: DataConfig) -> str:
    """What the source data is (package versions, file hashes), without reading it whole."""
    if data.objective == "pretrain":
        sources = corpus_fingerprints(data)
    else:
        sources = {"file": f"sha256:{_file_hash(Path(data.path or ''))}"}
    payload = {"sources": sources, "limit": data.limit}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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
    source = {"file": f"sha256:{_file_hash(Path(data.path or ''))}"}
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


def _file_hash(path: Path) -> str:
    from biorag.corpora.base import hash_file

    return hash_file(str(path))[:16] if path.is_file() else "missing"


def _fingerprint(data: DataConfig, content: str, sources: dict[str, str], tokenizer: Any,
                 seq_len: int, seed: int, eval_fraction: float) -> str:
    payload = {
        "objective": data.objective, "content": content, "sources": sources,
        "tokenizer": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer),
        "seq_len": seq_len, "seed": seed, "eval_fraction": eval_fraction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
