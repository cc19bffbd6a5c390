"""Compose configs from `experiments/` with `group=option` and `key=value` overrides.

Hydra's compose API does the composing and override parsing; the result is validated
against typed dataclasses, so an unknown key anywhere (command line or YAML) is an error
that lists the close matches.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from biorag.errors import ConfigError, did_you_mean

T = TypeVar("T")

CONFIG_DIR_ENV = "BIORAG_CONFIG_DIR"

# Typed bases of the primary configs: a primary YAML lists its schema first in `defaults`,
# so every field of the dataclasses can be overridden and an unknown key is an error.
SCHEMAS = {
    "_build_schema": "biorag.build:BuildConfig",
    "_run_schema": "biorag.runner:RunConfig",
    "_finetune_schema": "biorag.finetune:FinetuneConfig",
    "_audit_schema": "biorag.audit:AuditConfig",
}


def config_dir() -> Path:
    """Where configs are read from: $BIORAG_CONFIG_DIR, ./experiments, or the installed copy."""
    candidates = []
    if os.environ.get(CONFIG_DIR_ENV):
        candidates.append(Path(os.environ[CONFIG_DIR_ENV]))
    candidates.append(Path.cwd() / "experiments")
    here = Path(__file__).resolve().parent
    candidates.append(here / "_experiments")  # wheel install (force-include)
    candidates.append(here.parents[1] / "experiments")  # editable install from a clone
    for c in candidates:
        if c.is_dir() and any(c.glob("*.yaml")):
            return c.resolve()
    raise ConfigError("no config folder found; looked in " + ", ".join(str(c) for c in candidates))


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in `experiments/<group>/`."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def groups() -> list[str]:
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose `experiments/<config_name>.yaml` with Hydra-style overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    _register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        try:
            return hydra_compose(config_name=config_name, overrides=overrides)
        except HydraException as e:
            raise ConfigError(_explain_hydra_error(str(e), config_name, overrides)) from None
        except OmegaConfBaseException as e:
            raise ConfigError(str(e)) from None


def _register_schemas() -> None:
    import importlib

    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, target in SCHEMAS.items():
        module, _, attr = target.partition(":")
        try:
            node = getattr(importlib.import_module(module), attr)
        except ImportError:  # a module not built yet must not break the other configs
            continue
        store.store(name=name, node=node)


def to_typed(cfg: DictConfig | dict[str, Any], schema: type[T], where: str = "config") -> T:
    """Validate a composed config against a dataclass schema and return the dataclass."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as e:
        key = str(getattr(e, "key", "") or "")
        full_key = str(getattr(e, "full_key", "") or key)
        known = _known_keys(schema, full_key)
        raise ConfigError(
            f"{where}: " + did_you_mean(key, known, what="key") + f" (at {full_key})"
        ) from None
    except (ValidationError, OmegaConfBaseException) as e:
        raise ConfigError(
            f"{where}: {_first_line(str(e))} (at {getattr(e, 'full_key', '?')})"
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


def _known_keys(schema: type, dotted: str) -> list[str]:
    """The field names at the level of `dotted` inside a dataclass schema."""
    cls: Any = schema
    for part in dotted.split(".")[:-1]:
        nxt = get_type_hints(cls).get(part) if is_dataclass(cls) else None
        if nxt is None or not is_dataclass(nxt):
            return []
        cls = nxt
    return [f.name for f in fields(cls)] if is_dataclass(cls) else []


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
    return _first_line(msg)


def _first_line(msg: str) -> str:
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    return lines[0] if lines else msg
