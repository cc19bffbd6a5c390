"""Compose configs from `experiments/` with `group=option` and `key=value` overrides.

Hydra's compose API does the composing and override parsing; the result is validated
against typed dataclasses, so an unknown key anywhere (command line or YAML) is an error
that lists the close matches.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from biorag.errors import (
    ConfigError,
    check_file_name,
    did_you_mean,
    first_line,
    key_line,
    schema_keys,
)

T = TypeVar("T")

CONFIG_PATH_ENV = "BIORAG_CONFIG_PATH"  # colon-separated folders of one's own configs
CONFIG_DIR_ENV = "BIORAG_CONFIG_DIR"  # one folder (older name; comes before BIORAG_CONFIG_PATH)

# Typed bases of the primary configs: a primary YAML lists its schema first in `defaults`,
# so every field of the dataclasses can be overridden and an unknown key is an error.
SCHEMAS = {
    "_build_schema": "biorag.indexing.build:BuildConfig",
    "_run_schema": "biorag.experiment.arms:RunConfig",
    "_finetune_schema": "biorag.finetune.config:FinetuneConfig",
    "_audit_schema": "biorag.contamination:AuditConfig",
}


# -- config folders, in layers ---------------------------------------------------------------


def packaged_config_dir() -> Path:
    """The configs that come with biorag: the installed copy, or `experiments/` of a clone."""
    here = Path(__file__).resolve().parent
    for c in (here / "_experiments", here.parents[1] / "experiments"):
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise ConfigError(f"biorag's own configs are missing (looked in {here / '_experiments'} and "
                      f"{here.parents[1] / 'experiments'}); reinstall biorag")


def config_layers() -> list[Path]:
    """The config folders, lowest priority first: the packaged configs, ./experiments, then
    $BIORAG_CONFIG_DIR and the folders in $BIORAG_CONFIG_PATH (the first of those wins, as in
    PATH). A file in a later layer replaces the file of the same name in an earlier one; a
    folder may hold only what it adds (just `task/mytask.yaml`)."""
    packaged = packaged_config_dir()
    layers = [packaged]
    user = [Path.cwd() / "experiments"]
    if os.environ.get(CONFIG_DIR_ENV):
        user.insert(0, Path(os.environ[CONFIG_DIR_ENV]))
    user[:0] = [Path(x) for x in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if x]
    for folder in reversed(user):  # highest priority first in the list: last in the layers
        folder = folder.expanduser().resolve()
        if folder in layers:
            continue
        if not folder.is_dir():
            if folder != (Path.cwd() / "experiments").resolve():
                raise ConfigError(f"config folder {folder} (from ${CONFIG_PATH_ENV} or "
                                  f"${CONFIG_DIR_ENV}) does not exist")
            continue
        layers.append(folder)
    return layers


def config_files() -> dict[str, Path]:
    """Every config file by its path relative to a layer ("task/medqa.yaml"), from the layer
    that wins for it."""
    files: dict[str, Path] = {}
    for layer in config_layers():
        for f in sorted(layer.rglob("*.yaml")):
            files[f.relative_to(layer).as_posix()] = f
    return files


def option_sources(group: str) -> dict[str, Path]:
    """The options of a config group (`task`, `model`, ...) and the file each comes from."""
    out = {}
    for rel, path in config_files().items():
        folder, _, file = rel.rpartition("/")
        if folder == group:
            out[file.removesuffix(".yaml")] = path
    return dict(sorted(out.items()))


def options(group: str) -> list[str]:
    """The options of a config group: its YAML files over all config layers."""
    return list(option_sources(group))


def groups() -> list[str]:
    return sorted({rel.rpartition("/")[0] for rel in config_files() if "/" in rel})


def option_path(group: str, name_or_path: str | os.PathLike) -> Path:
    """The YAML of a config option, by name (over the layers) or as a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"{group} config file {p} does not exist")
        return p
    sources = option_sources(group)
    if str(name_or_path) not in sources:
        raise ConfigError(did_you_mean(str(name_or_path), sources, what=group))
    return sources[str(name_or_path)]


def load_option(group: str, name_or_path: str | os.PathLike, schema: type[T]) -> T:
    """A config option by name or path, validated against its schema."""
    path = option_path(group, name_or_path)
    return to_typed(extended(read_yaml(path), path, group), schema, where=str(path))


def extended(cfg: Any, path: str | os.PathLike, group: str, depth: int = 0) -> Any:
    """A group option's YAML over the options its Hydra `defaults` list names (`defaults:
    [longhealth, _self_]` in experiments/task/: LongHealth's settings 2 and 3 are its setting 1
    with `setting` changed), as Hydra composes it for experiment runs."""
    parents = [d for d in cfg.get("defaults") or [] if d != "_self_"]
    if not parents:
        return cfg
    if depth > 8 or not all(isinstance(d, str) for d in parents):
        raise ConfigError(f"{path}: defaults: list {group} names (e.g. [longhealth, _self_])")
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "defaults"])
    merged = [extended(read_yaml(option_path(group, d)), path, group, depth + 1) for d in parents]
    return OmegaConf.merge(*merged, own)


def read_yaml(path: str | os.PathLike) -> Any:
    """A config file as OmegaConf reads it; a YAML syntax error names the file."""
    try:
        return OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: {e}") from None


def config_dir() -> Path:
    """One folder Hydra composes from: every layer's files, the winning one of each name
    (linked, so edits show at once), rebuilt when the layers change."""
    files = config_files()
    signature = tuple((rel, str(path)) for rel, path in files.items())
    global _MERGED
    if _MERGED is None or _MERGED[0] != signature:
        if len(config_layers()) == 1:  # nothing of the user's: compose from the package
            _MERGED = (signature, packaged_config_dir())
            return _MERGED[1]
        folder = Path(tempfile.mkdtemp(prefix="biorag-configs-"))
        atexit.register(shutil.rmtree, folder, True)
        for rel, path in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).symlink_to(path)
        _MERGED = (signature, folder)
    return _MERGED[1]


_MERGED: tuple[tuple[tuple[str, str], ...], Path] | None = None


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose `experiments/<config_name>.yaml` with Hydra-style overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    _register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        for _ in range(len(overrides) + 1):
            try:
                cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
                return _checked_options(cfg, overrides)
            except HydraException as e:
                cause = e.__cause__
                if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
                    # a value of the wrong type: say which field, what it got and what it takes
                    raise ConfigError(f"{cause.full_key}: {first_line(str(cause))}") from None
                in_file = _explain_composing(str(e), config_name)
                if in_file:  # a bad key or value inside a group option's YAML: name the file
                    raise ConfigError(in_file) from None
                opened = _add_to_open_dict(str(e), config_name, overrides)
                if opened is None:
                    raise ConfigError(_explain_hydra_error(str(e), config_name, overrides)) from None
                overrides = opened
            except OmegaConfBaseException as e:
                raise ConfigError(str(e)) from None
    raise AssertionError("unreachable: every retry adds one key")


def _checked_options(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The composed config without Hydra's own node, each chosen option checked against its
    file: named as the file (a missing `name:` is taken from it) and every required value set."""
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    overridden = {o.partition("=")[0].lstrip("+~") for o in overrides}
    for group, option in choices.items():
        node = cfg.get(group) if "/" not in group and group in cfg else None
        path = option_sources(group).get(str(option)) if isinstance(node, DictConfig) else None
        if path is None:
            continue
        if "name" in node.keys() and OmegaConf.is_missing(node, "name"):  # noqa: SIM118 (`in` is False for ???)
            node.name = option
        elif "name" in node and f"{group}.name" not in overridden:
            check_file_name(node.name, path)
        if missing := sorted(OmegaConf.missing_keys(node)):
            raise ConfigError(f"{path}: " + "; ".join(_missing(k) for k in missing))
    return cfg


def _missing(key: str) -> str:
    """A sentence for a required setting left out."""
    from biorag import registry

    last = key.rpartition(".")[2]
    kind = {"loader": "task_loader", "backend": "model_backend"}.get(last)
    return f"`{last}:` is required and not set" + (f" (one of: {', '.join(registry.names(kind))})" if kind else "")


_COMPOSING = re.compile(r"In '([^']+)': (\w+) raised while composing config:\s*(.*)", re.S)


def _explain_composing(msg: str, config_name: str) -> str | None:
    """Hydra's 'In 'task/mytask': ConfigKeyError raised while composing config:' with the
    file, the line, the key and its close matches (Hydra puts them on lines below)."""
    m = _COMPOSING.search(msg)
    if not m:
        return None
    option, error, detail = m.groups()
    group, _, name = option.rpartition("/")
    full_key = next(iter(re.findall(r"full_key: (\S+)", detail)), "")
    key = full_key.rpartition(".")[2]
    path = option_sources(group).get(name) if group else None
    line = key_line(path, key) if path and key else None
    where = f"{path or option}" + (f":{line}" if line else "")
    if error == "ConfigKeyError" and key:
        schema = SCHEMAS.get(f"_{config_name}_schema")
        known = schema_keys(_import(schema), full_key) if schema else []
        return f"{where}: " + did_you_mean(key, known, what="key") + f" (at {full_key})"
    return f"{where}: {first_line(detail)}" + (f" (at {full_key})" if full_key else "")


def _add_to_open_dict(msg: str, config_name: str, overrides: list[str]) -> list[str] | None:
    """The overrides again, with `key=value` made `++key=value` when `key` is new in a field
    that is a free mapping (`task.fields.contexts=null`, `model.options.mode=context`): Hydra
    wants `+` for a key it has not seen, and users should not have to know that. None when
    the key belongs to a typed config, where it is a misspelling."""
    from hydra import compose as hydra_compose

    m = re.search(r"Could not override '([^']+)'", msg)
    if not m:
        return None
    dotted = m.group(1)
    parent = dotted.rpartition(".")[0]
    hits = [i for i, o in enumerate(overrides) if o.partition("=")[0] == dotted]
    if not parent or not hits:
        return None
    try:
        base = hydra_compose(config_name=config_name, overrides=[o for i, o in enumerate(overrides) if i not in hits])
    except Exception:
        return None
    node = OmegaConf.select(base, parent)
    if not isinstance(node, DictConfig) or node._metadata.object_type not in (None, dict):
        return None
    return [f"++{o}" if i in hits else o for i, o in enumerate(overrides)]


def _register_schemas() -> None:
    """Put the primary configs' typed schemas in Hydra's store. A schema that does not import
    is a bug in biorag, and fails loudly rather than leaving its config untyped."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, target in SCHEMAS.items():
        store.store(name=name, node=_import(target))


def _import(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def to_typed(cfg: DictConfig | dict[str, Any], schema: type[T], where: str = "config",
             source: str | os.PathLike | None = None) -> T:
    """Validate a composed config against a dataclass schema and return the dataclass; an
    error names `where` (and the line of `source`, the YAML it was read from, when given)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as e:
        key = str(getattr(e, "key", "") or "")
        full_key = str(getattr(e, "full_key", "") or key)
        known = schema_keys(schema, full_key)
        line = key_line(source, key) if source and key else None
        at = f" line {line}" if line else ""
        raise ConfigError(f"{where}{at}: {did_you_mean(key, known, what='key')} (at {full_key})") from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{where}: {_missing(str(getattr(e, 'full_key', '') or '?'))}") from None
    except (ValidationError, OmegaConfBaseException) as e:
        raise ConfigError(
            f"{where}: {first_line(str(e))} (at {getattr(e, 'full_key', '?')})"
        ) from None


def to_yaml(obj: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(obj) if is_dataclass(obj) else obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a dataclass / dict config to dotted keys (MLflow params, fingerprints)."""
    if is_dataclass(obj):
        obj = OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)
    elif isinstance(obj, DictConfig):
        obj = OmegaConf.to_container(obj, resolve=True)
    out: dict[str, Any] = {}
    for k, v in (obj or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _explain_hydra_error(msg: str, config_name: str, overrides: list[str]) -> str:
    m = re.search(r"Could not find '([^/']+)/([^']+)'", msg)
    if m:
        group, option = m.groups()
        known = options(group)
        if known or (config_dir() / group).is_dir():
            return did_you_mean(option, known, what=f"{group}")
        return did_you_mean(group, groups(), what="config group")
    m = re.search(r"Could not override '([^']+)'", msg) or re.search(
        r"Key '([^']+)' is not in struct", msg
    )
    if m:
        dotted = m.group(1)
        parent, _, key = dotted.rpartition(".")
        try:
            from hydra import compose as hydra_compose

            base = hydra_compose(
                config_name=config_name,
                overrides=[o for o in overrides if not o.lstrip("+~").startswith(dotted)],
            )
            node = OmegaConf.select(base, parent) if parent else base
            known = list(node.keys()) if isinstance(node, DictConfig) else []
        except Exception:  # the explanation is best effort; the original message stays
            known = []
        return did_you_mean(key, known, what="key") + (f" (at {dotted})" if parent else "")
    return first_line(msg)


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """Comma lists sweep, Hydra-multirun style: `arm=base,rag task=a,b` gives four override
    lists. Parsing is Hydra's own (its override grammar), not ours."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for o in overrides:
        try:
            parsed += parser.parse_overrides([o])
        except OverrideParseException as e:
            raise ConfigError(f"cannot read the override {o!r}: {first_line(str(e))} (quote a "
                              "value holding '=', spaces or brackets: key='a=b')") from None
    choices: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(combo) for combo in itertools.product(*choices)]
