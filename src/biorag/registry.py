"""One strict, lazy registry: names map to "module:attr" strings.

Heavy backends (vLLM, faiss-gpu) import only when used; an unknown name answers with the
close matches. `biorag ls` lists what is here.
"""

from __future__ import annotations

import importlib
from typing import Any

from biorag.errors import ConfigError, did_you_mean

_ENTRIES: dict[str, dict[str, str]] = {
    "corpus_loader": {
        "jsonl": "biorag.corpora.tabular:JsonlReader",
        "parquet": "biorag.corpora.tabular:ParquetReader",
        "csv": "biorag.corpora.tabular:CsvReader",
        "folder": "biorag.corpora.folder:FolderReader",
        "hf": "biorag.corpora.hub:HFDatasetReader",
        "hpo": "biorag.corpora.ontology:HPOReader",
        "icd10cm": "biorag.corpora.ontology:ICD10CMReader",
        "union": "biorag.corpora.union:UnionReader",
    },
    # a retrieval mode: fn(index, embedder, rrf_k, fetch_k) -> Retriever, which
    # `biorag.retrieval.open_retriever` calls for each index a spec searches; the first is the default
    "retriever": {
        "dense": "biorag.retrieval.open:dense",
        "bm25": "biorag.retrieval.open:bm25",
        "hybrid": "biorag.retrieval.open:hybrid",
    },
    "task_loader": {
        "mcq": "biorag.tasks.loaders:load_mcq",
        "medqa": "biorag.tasks.loaders:load_medqa",
        "medmcqa": "biorag.tasks.loaders:load_medmcqa",
        "pubmedqa": "biorag.tasks.loaders:load_pubmedqa",
        "mmlu": "biorag.tasks.loaders:load_mmlu",
        "nli": "biorag.tasks.loaders:load_nli",
        "summarisation": "biorag.tasks.loaders:load_summarisation",
        "coding": "biorag.tasks.loaders:load_coding",
        "longdoc": "biorag.tasks.longhealth:load_longdoc",
        "mirage": "biorag.tasks.mirage:load_mirage",
        "bioasq": "biorag.tasks.bioasq:load_bioasq",
        "healthbench": "biorag.tasks.healthbench:load_healthbench",
        "hpo-term-mcq": "biorag.tasks.generated:generate_hpo_term_mcq",
        "icd10-code-mcq": "biorag.tasks.generated:generate_icd10_code_mcq",
        "icd10-coding": "biorag.tasks.generated:generate_icd10_coding",
    },
    "scorer": {
        "accuracy": "biorag.scoring.metrics:accuracy",
        "macro_f1": "biorag.scoring.metrics:macro_f1",
        "exact_match": "biorag.scoring.metrics:exact_match",
        "rouge": "biorag.scoring.metrics:rouge",
        "bertscore": "biorag.scoring.metrics:bertscore",
        "code_f1": "biorag.scoring.metrics:code_f1",
        "code_f1_category": "biorag.scoring.metrics:code_f1_category",
        "factoid": "biorag.scoring.answers:factoid",
        "list_f1": "biorag.scoring.answers:list_f1",
        "umls_f1": "biorag.scoring.clue:umls_f1",
        "clue_accuracy": "biorag.scoring.clue:clue_accuracy",
        "clue_icd": "biorag.scoring.clue:clue_icd",
        "rubric_score": "biorag.scoring.judged:rubric_score",
        "scale": "biorag.scoring.judged:scale",
        "support": "biorag.scoring.judged:support",
    },
    "model_backend": {
        "hf": "biorag.models.hf:HFGenerator",
        "vllm": "biorag.models.vllm:VLLMGenerator",
        "openai": "biorag.models.openai:OpenAIGenerator",
        "fake": "biorag.models.fake:FakeGenerator",
    },
    # a backend's check before an experiment opens any run (a remote server answers and
    # serves the model): fn(ModelConfig, adapters) raising BioragError; optional per backend
    "model_preflight": {
        "openai": "biorag.models.endpoint:preflight",
    },
}


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted."""
    return sorted(_table(kind))


def listed(kind: str) -> list[str]:
    """The registered names of one kind in the order they were registered."""
    return list(_table(kind))


def kinds() -> list[str]:
    return sorted(_ENTRIES)


def target(kind: str, name: str) -> str:
    """The "module:attr" string a name maps to, or a ConfigError with close matches."""
    table = _table(kind)
    if name not in table:
        raise ConfigError(did_you_mean(name, table, what=kind.replace("_", " ")))
    return table[name]


def resolve(kind: str, name: str) -> Any:
    """Import and return the object a name maps to."""
    module_name, _, attr = target(kind, name).partition(":")
    return getattr(importlib.import_module(module_name), attr)


def register(kind: str, name: str, dotted: str) -> None:
    """Add (or replace) an entry, e.g. from a plugin: register("scorer", "my", "pkg.mod:fn")."""
    if ":" not in dotted:
        raise ValueError(f"expected 'module:attr', got {dotted!r}")
    _ENTRIES.setdefault(kind, {})[name] = dotted


def _table(kind: str) -> dict[str, str]:
    if kind not in _ENTRIES:
        raise ConfigError(did_you_mean(kind, _ENTRIES, what="registry kind"))
    return _ENTRIES[kind]
