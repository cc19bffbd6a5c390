"""Readers of fine-tuning data sets (`experiments/data/<name>.yaml`): corpora read as
documents for continued pre-training, or JSONL instruction pairs / chats for supervised
tuning. `biorag.finetune.data` tokenises and packs what these yield; the contamination audit
reads the same texts."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biorag.corpora.base import CorpusConfig, hash_file
from biorag.errors import ConfigError, InputError
from biorag.types import titled

log = logging.getLogger(__name__)

OBJECTIVES = ("pretrain", "sft", "raft")
SFT_FORMATS = ("auto", "prompt_response", "messages")


@dataclass
class RaftSettings:
    """Retrieval-augmented fine-tuning (RAFT, Zhang et al. 2024): SFT examples made from a
    task's training items, each prompt rendered with the task's rag template and k passages
    retrieved as `arm` retrieves them at test time: the gold evidence plus distractors in a
    `p_gold` share of the examples, distractors only in the rest."""

    tasks: list[str] = field(default_factory=list)  # tasks whose training items are rendered
    arm: str = "rag"  # the arm whose retriever (index, k, mode, reranker) the prompts get
    # run overrides as the study sets them (task.*, arm.retriever.*): the prompts must be the
    # ones the raft arm sees at test time
    overrides: list[str] = field(default_factory=list)
    # task overrides that give the training items instead of the evaluation items: another
    # seed for an embedded task (task.seed=1), task.split=train or task.path=TRAIN_FILE
    train: list[str] = field(default_factory=list)
    # task overrides of the evaluation items kept out, besides `overrides` (task.n=200: the
    # first 200 items of an embedded task, so any task.n up to 200 stays disjoint)
    exclude: list[str] = field(default_factory=list)
    n: int | None = 100  # training items per task (after leaving out evaluation items); null: all
    p_gold: float = 0.8  # share of examples whose prompt holds the gold passage (RAFT's P)
    depth: int = 20  # passages retrieved per item to draw distractors from
    seed: int = 0  # which examples get the gold passage, and where it goes among the k
    rationale: bool = False  # the response quotes the gold passage before the answer
    # leave out training items that are, or share an n-gram with, an evaluation item (false:
    # keep them, and the audit before training refuses unless --allow-overlap)
    keep_apart: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.p_gold <= 1:
            raise ConfigError(f"data.raft.p_gold is a share (0..1), not {self.p_gold}")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"data.raft.n must be at least 1, not {self.n}")
        if self.depth < 1:
            raise ConfigError(f"data.raft.depth must be at least 1, not {self.depth}")


@dataclass
class DataConfig:
    """A fine-tuning set, as `experiments/data/<name>.yaml` describes it."""

    name: str = "???"
    description: str = ""
    # pretrain: continued pre-training on corpora (packed to train.seq_len);
    # sft: instruction tuning on JSONL prompt/response pairs or chat messages;
    # raft: retrieval-augmented SFT on a task's training items (see `raft`)
    objective: str = "pretrain"
    # pretrain: corpus configs (experiments/corpus/<name>.yaml or YAML paths) or data files
    # (.jsonl, .parquet, .csv of id, title, text), read in order
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
    raft: RaftSettings = field(default_factory=RaftSettings)

    def __post_init__(self) -> None:
        where = f"data {self.name}"
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"{where}: objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.format not in SFT_FORMATS:
            raise ConfigError(f"{where}: format must be one of {', '.join(SFT_FORMATS)}, not {self.format!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}: limit must be at least 1, not {self.limit}")
        if self.objective == "raft" and not self.raft.tasks:
            raise ConfigError(f"{where}: objective raft needs raft.tasks (the tasks to train for)")


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
            yield cfg.name, doc.id, titled(doc.title, doc.text, "\n")


FILE_LOADERS = {".jsonl": "jsonl", ".gz": "jsonl", ".parquet": "parquet", ".csv": "csv"}


def load_corpus_config(name: str) -> CorpusConfig:
    """A corpus config by name (experiments/corpus/NAME.yaml) or path; or a data file of one's
    own (.jsonl, .jsonl.gz, .parquet, .csv with id, title and text fields), read as the
    matching loader reads it."""
    from biorag.config import load_option

    file = Path(name).expanduser()
    if file.suffix in FILE_LOADERS and file.is_file():
        return CorpusConfig(name=file.name.split(".")[0], loader=FILE_LOADERS[file.suffix], path=str(file))
    return load_option("corpus", name, CorpusConfig)


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
    elif data.objective == "raft":
        from biorag.tasks.splits import item_text, training_splits

        for split in training_splits(data.raft):
            yield from ((e.id, item_text(e)) for e in split.cut().train)
    else:
        for ex_id, messages in sft_examples(data):
            yield ex_id, "\n".join(m["content"] for m in messages)


def data_source_fingerprint(data: DataConfig) -> str:
    """What the source data is (package versions, file hashes), without reading it whole."""
    if data.objective == "pretrain":
        sources = corpus_fingerprints(data)
    elif data.objective == "raft":
        sources = {"raft": json.dumps(asdict(data.raft), sort_keys=True)}
    else:
        sources = {"file": f"sha256:{file_hash(Path(data.path or ''))}"}
    payload = {"sources": sources, "limit": data.limit}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    """The first 16 hex digits of a file's sha256, or 'missing'."""
    return hash_file(str(path))[:16] if path.is_file() else "missing"


