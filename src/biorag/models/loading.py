"""From a `ModelConfig` to a ready `Generator`: where the weights are, device, dtype.

`load_generator` is the one entry point; each backend class has a `from_config(cfg,
adapter=...)` classmethod that does its own loading, so nothing heavy is imported until
a backend is chosen.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biorag import registry
from biorag.errors import BioragError, ConfigError
from biorag.models.base import Generator
from biorag.models.config import ModelConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_generator(cfg: ModelConfig, adapter: str | None = None) -> Generator:
    """The generator a model config describes, with an optional LoRA adapter folder."""
    backend = registry.resolve("model_backend", cfg.backend)
    return backend.from_config(cfg, adapter=adapter)


def preflight(models: Iterable[tuple[ModelConfig, str | None]]) -> None:
    """Before anything runs, the check each backend registers under `model_preflight` (a
    remote server: does it answer, does it serve the model and each adapter asked for), once
    per distinct model with every adapter its cells use."""
    checked = set(registry.names("model_preflight"))
    wanted: dict[str, tuple[ModelConfig, set[str | None]]] = {}
    for cfg, adapter in models:
        if cfg.backend in checked:
            key = json.dumps(asdict(cfg), sort_keys=True, default=str)
            wanted.setdefault(key, (cfg, set()))[1].add(adapter)
    for cfg, adapters in wanted.values():
        check = registry.resolve("model_preflight", cfg.backend)
        check(cfg, sorted(adapters, key=lambda a: a or ""))


def load_tokenizer(cfg: ModelConfig, name: str) -> Any:
    """The tokenizer `name` (a folder or hub id) from local files first: the hub is asked only
    when neither a folder nor the Hugging Face cache has it, and never under HF_HUB_OFFLINE,
    so an offline machine fails at once with what to do, not after the hub's retries."""
    path = Path(name).expanduser()
    try:
        return _tokenizer(str(path) if path.exists() else name, cfg.revision,
                          cfg.trust_remote_code, local=True)
    except OSError as e:
        if path.exists() or name.startswith((".", "~", "/")) or name.count("/") > 1:
            raise BioragError(f"model '{cfg.name}': options.tokenizer: no tokenizer in folder "
                              f"{name} ({_first_line(e)})") from None
    import httpx
    from huggingface_hub import constants

    remedy = (
        f"download it where the hub is reachable (hf download {name} --include 'tokenizer*' "
        "'special_tokens_map.json'), or point options.tokenizer at a folder holding it, or "
        "leave options.tokenizer out (token counts then come from the server or are approximate)"
    )
    if constants.HF_HUB_OFFLINE:
        raise BioragError(
            f"model '{cfg.name}': tokenizer '{name}' is neither a local folder nor in the Hugging "
            f"Face cache, and HF_HUB_OFFLINE is set, so the hub is not asked: {remedy}."
        )
    try:  # one quick request first: without a network the hub's client retries for a minute
        httpx.head(constants.ENDPOINT, timeout=5.0)
    except httpx.HTTPError as e:
        raise BioragError(
            f"model '{cfg.name}': tokenizer '{name}' is neither a local folder nor in the Hugging "
            f"Face cache, and the hub ({constants.ENDPOINT}) cannot be reached from this machine "
            f"({type(e).__name__}): {remedy}."
        ) from None
    log.info("tokenizer %s is not cached here: fetching it from the Hugging Face hub", name)
    try:
        return _tokenizer(name, cfg.revision, cfg.trust_remote_code, local=False)
    except OSError as e:
        raise BioragError(
            f"model '{cfg.name}': could not load tokenizer '{name}' ({_first_line(e)}); the hub "
            f"may be unreachable from this machine (set HF_HUB_OFFLINE=1 to fail at once): {remedy}."
        ) from None


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str, revision: str | None, trust_remote_code: bool, *, local: bool) -> Any:
    # cached: the pre-flight loads it before any run opens, the backend again per cell
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        name, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local
    )


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A model config by name (`experiments/model/<name>.yaml`) or by YAML path."""
    from biorag.config import load_option

    return load_option("model", name_or_path, ModelConfig)


def weights_location(cfg: ModelConfig) -> tuple[str, str | None]:
    """(local folder or hub id, GGUF file still to pass to `from_pretrained`) for a config.

    A GGUF file in a local folder (or a package) is dequantised once and cached, so the
    returned folder is a plain transformers checkpoint and the second item is None.
    """
    from biorag.models.gguf import dequantised_copy, package_folder

    if cfg.source.startswith("package:"):
        folder: Path | None = package_folder(cfg.source.removeprefix("package:"))
    else:
        folder = _local_folder(cfg)
    if folder is None:  # a hub id; transformers reads a hub GGUF itself (not cached here)
        if not cfg.id:
            raise ConfigError(f"model '{cfg.name}': set `id` to a hub id or a local folder")
        return cfg.id, cfg.gguf_file
    if cfg.gguf_file:
        return str(dequantised_copy(folder, cfg.gguf_file)), None
    return str(folder), None


def _local_folder(cfg: ModelConfig) -> Path | None:
    path = Path(cfg.id).expanduser()
    if cfg.id and path.exists():
        if not path.is_dir():
            raise BioragError(f"model '{cfg.name}': {cfg.id} is a file; `id` must be a folder")
        return path
    # "org/name" is a hub id; anything else that looks like a path is a missing folder
    looks_local = (
        cfg.id.startswith((".", "~", "/")) or os.path.isabs(cfg.id) or cfg.id.count("/") > 1
    )
    if looks_local:
        raise BioragError(f"model '{cfg.name}': local model folder {cfg.id} does not exist")
    return None


def resolve_device(cfg: ModelConfig) -> str:
    """ "cuda…", "mps" or "cpu": auto means CUDA when torch sees a GPU, else Apple's MPS
    where torch reports it (`biorag.hardware.mps_available`), else the CPU."""
    import torch

    from biorag.hardware import mps_available, require_mps

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BioragError(
            f"model '{cfg.name}': device {cfg.device} asked for, but torch sees no GPU"
        )
    if cfg.device == "mps":
        require_mps(f"model '{cfg.name}': ")
    return cfg.device


def resolve_dtype(cfg: ModelConfig, device: str, *, training: bool = False) -> torch.dtype:
    """auto means bfloat16 on CUDA (float16 where bf16 is unsupported); on MPS, float16 for
    inference (every MPS version has it) and float32 for training; on CPU, bfloat16 for
    inference where the CPU has native bf16 units (`biorag.hardware`), float32 otherwise and
    for training."""
    import torch

    from biorag.hardware import cpu_bf16

    if cfg.dtype != "auto":
        return getattr(torch, _DTYPES[cfg.dtype])
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float32 if training else torch.float16
    if device == "cpu" and not training and cpu_bf16():
        return torch.bfloat16
    return torch.float32


def load_hf(cfg: ModelConfig, adapter: str | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) with transformers, plus an optional peft adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf_file = weights_location(cfg)
    device = resolve_device(cfg)
    dtype = resolve_dtype(cfg, device)
    common: dict[str, Any] = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    kwargs: dict[str, Any] = {"dtype": dtype, **common}
    quantization = _bnb_config(cfg, device, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device.startswith("cuda"):
        # "auto" spreads a large model over every visible GPU; cuda:N pins it
        kwargs["device_map"] = "auto" if device == "cuda" else {"": device}

    log.info("loading %s from %s (%s, %s)", cfg.name, where, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **common)
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as e:
        raise BioragError(
            f"model '{cfg.name}': could not load '{where}' ({_first_line(e)}). It is neither a "
            "local folder nor in the Hugging Face cache, and the hub may be unreachable from "
            "this machine: download it where the hub is reachable and set `id` to the folder."
        ) from None
    if "device_map" not in kwargs:
        model.to(device)
    if adapter is not None:
        model = _with_adapter(model, adapter, merge=quantization is None)
    model.eval()
    return model, tokenizer


def _bnb_config(cfg: ModelConfig, device: str, dtype: torch.dtype) -> Any:
    if not (cfg.load_in_4bit or cfg.load_in_8bit):
        return None
    bits = 4 if cfg.load_in_4bit else 8
    if not device.startswith("cuda"):
        raise BioragError(
            f"model '{cfg.name}': load_in_{bits}bit needs a CUDA GPU (bitsandbytes); "
            f"this run is on {device}. Set load_in_{bits}bit=false."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BioragError(
            f"model '{cfg.name}': load_in_{bits}bit needs bitsandbytes: pip install 'biorag[gpu]'"
        ) from None
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
    )


def _with_adapter(model: Any, adapter: str, *, merge: bool) -> Any:
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise BioragError(f"adapter folder {adapter} has no adapter_config.json")
    model = PeftModel.from_pretrained(model, str(path))
    if not merge:  # quantised bases cannot be merged
        return model
    # merged LoRA weights run as fast as the base model, provided they are left as a plain
    # load leaves them: peft freezes them, and for frozen weights torch's matmul broadcasts
    # a strided input's projection as a bmm over copied weights (the vocabulary projection
    # of generate's first step). Grad is never computed: inference runs in inference_mode.
    return model.merge_and_unload().requires_grad_(True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
