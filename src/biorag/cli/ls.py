"""`biorag ls`: the configs, built indexes and registered code there are."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

# what `biorag ls X` lists: a config group (experiments/<group>/*.yaml) or a registry kind
_GROUPS = {
    "corpora": "corpus",
    "embedders": "embedder",
    "index-types": "index",
    "rerankers": "reranker",
    "tasks": "task",
    "models": "model",
    "arms": "arm",
    "studies": "study",
    "protocols": "protocol",  # answer protocols (task.protocol=NAME)
    "judges": "judge",  # LLM judges (judges=[NAME])
    "data": "data",  # fine-tuning sets (biorag finetune data=NAME)
}
_REGISTRY = {
    "loaders": "corpus_loader",
    "retrievers": "retriever",
    "task-loaders": "task_loader",
    "scorers": "scorer",
    "backends": "model_backend",
}


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)


def ls(
    what: str = typer.Argument(
        ..., help=f"One of: {', '.join([*_GROUPS, 'indexes', *_REGISTRY])}."
    ),
) -> None:
    """List what exists: configs (corpora, embedders, tasks, models, arms, ...), built indexes,
    or registered code (loaders, retrievers, scorers, backends)."""
    from omegaconf import OmegaConf

    from biorag.cli.console import console
    from biorag.config import config_layers, option_sources
    from biorag.errors import ConfigError, did_you_mean

    known = [*_GROUPS, "indexes", *_REGISTRY]
    if what == "indexes":
        _ls_indexes()
        return
    if what in _REGISTRY:
        from biorag import registry

        t = Table(title=f"{what} (registry '{_REGISTRY[what]}')")
        t.add_column("name")
        t.add_column("implemented by")
        for name in registry.names(_REGISTRY[what]):
            t.add_row(name, registry.target(_REGISTRY[what], name))
        console.print(t)
        return
    if what not in _GROUPS:
        raise ConfigError(did_you_mean(what, known, what="listing"))
    group = _GROUPS[what]
    use = {"reranker": "arm.retriever.rerank=NAME or index search --rerank NAME"}.get(group, f"{group}=NAME")
    t = Table(title=f"{what} ({group}/ in the config folders; use as {use})")
    t.add_column("name")
    t.add_column("description", overflow="fold")
    t.add_column("from", overflow="fold")
    packaged = config_layers()[0]
    for name, path in option_sources(group).items():
        try:
            cfg = OmegaConf.load(path)
            desc = cfg.get("description") if hasattr(cfg, "get") else ""
            if group == "model" and not desc:
                from biorag.config import load_option
                from biorag.models.config import ModelConfig, where_it_runs

                desc = where_it_runs(load_option("model", str(path), ModelConfig))
        except Exception as e:  # a user's broken YAML: list it, say why, go on
            desc = f"[red]unreadable: {str(e).splitlines()[0]}[/]"
        where = "biorag" if path.is_relative_to(packaged) else _shown(path)
        t.add_row(name, str(desc or ""), where)
    console.print(t)


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    return str(path.relative_to(Path.cwd().resolve())) if path.is_relative_to(Path.cwd().resolve()) else str(path)


def _ls_indexes() -> None:
    from biorag.cli.console import console
    from biorag.indexing.manifest import IndexManifest, index_root, list_indexes

    root = index_root()
    t = Table(title=f"indexes in {root}/")
    for col in ("name", "corpus", "embedder", "type", "chunks", "built"):
        t.add_column(col)
    for name in list_indexes():
        m = IndexManifest.read(root / name)
        t.add_row(name, m.corpus.name, m.embedder["name"], m.index.type, str(m.counts.chunks), m.created_at)
    console.print(t)
    if not list_indexes():
        console.print("none yet: biorag index build corpus=hpo name=hpo-minilm")
