"""Configs: every YAML validates; overrides compose; typos are errors with close matches."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biorag import registry
from biorag.config import compose, flatten, packaged_config_dir, to_typed
from biorag.errors import ConfigError

# config group -> the dataclass its YAMLs validate against
SCHEMAS = {
    "corpus": "biorag.corpora.base:CorpusConfig",
    "embedder": "biorag.indexing.embedding:EmbedderConfig",
    "index": "biorag.indexing.index:IndexConfig",
    "task": "biorag.tasks.config:TaskConfig",
    "model": "biorag.models.config:ModelConfig",
    "arm": "biorag.experiment.arms:ArmConfig",
    "study": "biorag.experiment.arms:StudyConfig",
    "data": "biorag.finetune.data:DataConfig",
    "protocol": "biorag.tasks.protocols:ProtocolConfig",
    "reranker": "biorag.retrieval.rerank:RerankerConfig",
    "judge": "biorag.judges.config:JudgeConfig",
    "launcher": "biorag.experiment.arms:LauncherConfig",
}


def _schema(group: str):
    module, _, attr = SCHEMAS[group].partition(":")
    return getattr(importlib.import_module(module), attr)


def _group_yamls() -> list[Path]:
    return sorted(p for p in packaged_config_dir().glob("*/*.yaml"))


@pytest.mark.parametrize("path", _group_yamls(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_group_yaml_validates(path: Path) -> None:
    group = path.parent.name
    assert group in SCHEMAS, f"config group '{group}' has no schema in this test"
    text = path.read_text()
    assert text.startswith("#"), f"{path} must start with a comment giving the command that uses it"
    raw = OmegaConf.load(path)
    # LongHealth's settings 2 and 3 extend its task, lora_rag-hyde extends rag-hyde (Hydra `defaults`)
    from biorag.config import extended

    raw = extended(raw, path, group)
    cfg = to_typed(raw, _schema(group), where=str(path))
    if hasattr(cfg, "name"):
        assert cfg.name == path.stem, f"{path}: name must equal the file name"


@pytest.mark.parametrize("path", sorted(packaged_config_dir().glob("*.yaml")), ids=lambda p: p.name)
def test_every_primary_yaml_composes(path: Path) -> None:
    assert path.read_text().startswith("#")
    cfg = compose(path.stem, [])
    schema = {"build": "BuildConfig", "run": "RunConfig", "finetune": "FinetuneConfig",
              "audit": "AuditConfig"}[path.stem]
    from biorag import config as config_module

    module, _, attr = config_module.SCHEMAS[f"_{path.stem}_schema"].partition(":")
    assert attr == schema
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), attr))}
    assert fields <= set(cfg.keys()), f"{path.name} lacks {fields - set(cfg.keys())}"
    if path.stem == "build":
        from biorag.indexing.build import load_build_config

        assert load_build_config([]).corpus.name


def test_group_option_and_key_overrides() -> None:
    from biorag.indexing.build import load_build_config

    cfg = load_build_config(["index=hnsw", "embedder=minilm", "chunking.chunk_size=64", "name=x"])
    assert cfg.index.type == "hnsw"
    assert cfg.index.ef_search == 128
    assert cfg.chunking.chunk_size == 64
    assert cfg.name == "x"
    assert cfg.index_name() == "x"


def test_unknown_option_lists_close_matches() -> None:
    from biorag.indexing.build import load_build_config

    with pytest.raises(ConfigError) as e:
        load_build_config(["index=hnws"])
    assert "Did you mean 'hnsw'" in str(e.value)
    assert "flat" in str(e.value)


def test_unknown_key_is_an_error_with_close_matches() -> None:
    from biorag.indexing.build import load_build_config

    with pytest.raises(ConfigError) as e:
        load_build_config(["chunking.chunk_sise=10"])
    assert "chunk_size" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_build_config(["shard_sise=10"])
    assert "shard_size" in str(e.value)


def test_a_new_key_of_a_free_mapping_needs_no_plus() -> None:
    """`task.fields.contexts=null` adds a key to a mapping field (as the task YAMLs tell
    users to); a new key of a typed config stays an error."""
    cfg = compose("run", ["task=pubmedqa", "task.fields.contexts=null", "model=fake", "model.options.mode=context"])
    assert cfg.task.fields.contexts is None and cfg.model.options.mode == "context"
    with pytest.raises(ConfigError, match="unknown key 'contxt_tokens'"):
        compose("run", ["task=pubmedqa", "task.contxt_tokens=5"])


def test_typo_inside_a_yaml_is_an_error(tmp_path: Path) -> None:
    from biorag.indexing.embedding import EmbedderConfig

    bad = OmegaConf.create({"name": "x", "model": "m", "batch_sise": 4})
    with pytest.raises(ConfigError) as e:
        to_typed(bad, EmbedderConfig, where="x.yaml")
    assert "batch_size" in str(e.value) and "x.yaml" in str(e.value)


def test_wrong_type_is_an_error() -> None:
    from biorag.indexing.build import load_build_config

    with pytest.raises(ConfigError):
        load_build_config(["shard_size=lots"])


def test_flatten_gives_dotted_keys() -> None:
    from biorag.indexing.build import load_build_config

    flat = flatten(load_build_config([]))
    assert flat["chunking.chunk_size"] == 200
    assert flat["embedder.name"] == "minilm"
    assert flat["index.type"] == "flat"


def test_registry_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError) as e:
        registry.resolve("corpus_loader", "jsnl")
    assert "Did you mean 'jsonl'" in str(e.value)
    with pytest.raises(ConfigError):
        registry.names("no_such_kind")


def test_every_registry_entry_imports() -> None:
    # heavy optional libraries (vllm) are imported inside the backends, so every module imports
    for kind in registry.kinds():
        for name in registry.names(kind):
            obj = registry.resolve(kind, name)
            assert callable(obj), (kind, name)
