"""Adapter folders: peft's files plus `manifest.json`, which says what produced them.

`adapters/<name>/manifest.json` names the base model (config name, id, revision, where the
weights came from), the data (fingerprint), the settings and the results of the training,
and a `fingerprint` of all that; an arm's run logs it, and an arm running another base
model than the adapter's is an error naming both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.models.config import ModelConfig

MANIFEST_FILE = "manifest.json"


def base_identity(model: ModelConfig) -> dict[str, Any]:
    """How an adapter's manifest names its base model."""
    return {
        "name": model.name,
        "id": model.id,
        "revision": model.revision,
        "source": model.source,
        "gguf_file": model.gguf_file,
    }


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an adapter folder; {} for a folder peft wrote without one."""
    p = Path(path) / MANIFEST_FILE
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise BioragError(f"{p}: not valid JSON ({e})") from None


def base_mismatch(manifest: dict[str, Any], model: ModelConfig) -> str | None:
    """Why an adapter cannot run on `model`, or None when it can (or the manifest is silent).

    The hub id (or local folder) decides, then the revision when both pin one; the config
    name decides only when the manifest has no id. A differing config name alone is fine: two
    configs may load the same weights.
    """
    base = manifest.get("base_model") or {}
    if not base:
        return None
    theirs = f"'{base.get('name') or '?'}' ({base.get('id') or 'no id'}"
    theirs += f"@{base['revision']})" if base.get("revision") else ")"
    ours = f"'{model.name}' ({model.id or 'no id'}" + (f"@{model.revision})" if model.revision else ")")
    if base.get("id") and model.id:
        if base["id"] != model.id:
            return f"trained on base model {theirs}, not {ours}"
        if base.get("revision") and model.revision and base["revision"] != model.revision:
            return f"trained on base model {theirs}, not revision {ours}"
        if base.get("gguf_file") != model.gguf_file and base.get("source") == model.source:
            return f"trained on base model {theirs} from {base.get('gguf_file')}, not {model.gguf_file}"
        return None
    if base.get("name") != model.name:
        return f"trained on base model {theirs}, not {ours}"
    return None


def check_base(path: str | Path, manifest: dict[str, Any], model: ModelConfig, arm: str = "") -> None:
    """Raise a BioragError naming both models when the adapter was trained on another base."""
    why = base_mismatch(manifest, model)
    if why:
        who = f"arm '{arm}' runs" if arm else "this run uses"
        raise BioragError(
            f"adapter {path} was {why}; {who} model '{model.name}'. Train an adapter for it "
            f"(biorag finetune model={model.name} ...) or pick the adapter's base model."
        )


def item_fingerprints(examples: Any, by_id: bool = True) -> list[str]:
    """Short hashes of what makes each item itself (`biorag.tasks.splits.item_keys`), as a
    RAFT manifest keeps its training items without their text."""
    import hashlib

    from biorag.tasks.splits import item_keys

    return sorted({hashlib.sha256(k.encode()).hexdigest()[:16] for e in examples for k in item_keys(e, by_id)})


def check_disjoint(path: str | Path, manifest: dict[str, Any], task: str, examples: Any, arm: str = "") -> None:
    """Raise a BioragError when the adapter was trained on any of these evaluation items of
    `task` (a RAFT manifest lists its training items per task; other adapters pass)."""
    trained = set(((manifest.get("data") or {}).get("train_items") or {}).get(task) or [])
    if not trained:
        return
    both = [e.id for e in examples if set(item_fingerprints([e])) & trained]
    if both:
        raise BioragError(
            f"adapter {path} of arm '{arm}' was trained on {len(both)} of the {len(examples)} evaluation items "
            f"of task '{task}' ({', '.join(both[:3])}{', ...' if len(both) > 3 else ''}): its scores would be "
            "inflated. Evaluate fewer items (task.n) or retrain the adapter with data.raft.exclude covering them."
        )
