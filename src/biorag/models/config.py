"""`ModelConfig`: which model an arm uses and how it is loaded (`experiments/model/*.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biorag.errors import ConfigError, did_you_mean

FAMILIES = ("general", "biomedical")
DTYPES = ("auto", "float32", "bfloat16", "float16")
CHAT_MODES = ("auto", "true", "false")
LOGLIKELIHOOD_STRATEGIES = ("auto", "rows", "shared", "packed")  # hf_scoring.STRATEGIES


@dataclass
class ModelConfig:
    """One model, the way `experiments/model/<name>.yaml` describes it.

    Validated by `biorag.config.to_typed(cfg, ModelConfig)`; the backend (`hf`, `vllm`,
    `openai`, `fake`, or a registered plugin) is checked when the model is loaded.
    """

    # Short name used in configs, run names and MLflow tags; equals the YAML file stem.
    name: str
    # Hugging Face hub id ("org/model"), a local folder, or (openai) the served model name.
    # With `source: package:...` it records where the shipped weights came from.
    id: str = ""
    # Where the weights are: "hub" (`id` is a hub id or a local folder) or "package:<module>"
    # (a folder inside an installed Python package, found without importing it).
    source: str = "hub"
    # Backend name in the registry: hf | vllm | openai | fake.
    backend: str = "hf"
    # general | biomedical; logged as the `model_family` tag so arms group by it.
    family: str = "general"
    # Parameter count as people say it ("135M", "8B"); informational.
    size: str = ""
    # Name of the paired model config (general <-> biomedical), or null.
    counterpart: str | None = None
    # Hub revision (branch, tag or commit) to pin; null means the default branch.
    revision: str | None = None
    # auto | float32 | bfloat16 | float16; auto = bfloat16 on CUDA, float16 on MPS (float32 to
    # train), bfloat16 on a CPU with native bf16 units, else float32 (biorag.hardware).
    dtype: str = "auto"
    # auto | cpu | cuda | cuda:N | mps; auto = CUDA when torch sees a GPU, else Apple's MPS.
    device: str = "auto"
    # Sequences per forward pass (log-likelihood) or per `generate` call.
    batch_size: int = 8
    # hf backend: how a context scored against several multi-token options runs:
    # auto (the cheapest for the token lengths, logged) | rows (one row per option, as
    # lm-eval) | shared (context once, its KV cache copied per option) | packed (context and
    # options in one row under a 4D attention mask). All give the same log-likelihoods.
    loglikelihood: str = "auto"
    # hf backend: at most this many padded tokens (rows x width, past a prefix all rows share)
    # per log-likelihood pass, besides batch_size rows; null = 512 on a CPU (such passes stay
    # in cache: 24-29% faster than 16 long rows), none on a GPU; 0 = batch_size rows alone.
    token_budget: int | None = None
    # Longest input in tokens; null = the model's own limit (max_position_embeddings).
    max_length: int | None = None
    # Run code shipped with the model repository; off unless a config asks for it.
    trust_remote_code: bool = False
    # bitsandbytes quantisation (CUDA only); at most one of the two.
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    # Chat template: auto (use the tokenizer's when it has one) | true (require it) | false.
    chat: str = "auto"
    # A GGUF file inside the folder / repo; it is dequantised (and cached for local folders).
    gguf_file: str | None = None
    # openai backend: the server's base URL (else $OPENAI_BASE_URL) and the env var with the key.
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    # Backend-specific extras, e.g. fake: {mode, answer}; vllm: {gpu_memory_utilization};
    # openai: {api, tokenizer, timeout_s}.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # YAML `chat: true` arrives as the string "True"
        self.chat = str(self.chat).lower()
        _check(self, "family", FAMILIES)
        _check(self, "dtype", DTYPES)
        _check(self, "chat", CHAT_MODES)
        _check(self, "loglikelihood", LOGLIKELIHOOD_STRATEGIES)
        from biorag import registry

        if self.backend not in registry.names("model_backend"):
            raise ConfigError(f"model '{self.name}': " + did_you_mean(
                self.backend, registry.names("model_backend"), what="model.backend"))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"model '{self.name}': device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}"
            )
        if self.source != "hub" and not self.source.startswith("package:"):
            raise ConfigError(
                f"model '{self.name}': source must be 'hub' or 'package:<module>', got {self.source!r}"
            )
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError(f"model '{self.name}': set load_in_4bit or load_in_8bit, not both")
        if self.batch_size < 1:
            raise ConfigError(
                f"model '{self.name}': batch_size must be >= 1, got {self.batch_size}"
            )
        if self.token_budget is not None and self.token_budget < 0:
            raise ConfigError(
                f"model '{self.name}': token_budget must be >= 0 or null, got {self.token_budget}"
            )
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(
                f"model '{self.name}': max_length must be >= 2, got {self.max_length}"
            )


def _check(cfg: ModelConfig, field_name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, field_name)
    if value not in allowed:
        raise ConfigError(
            f"model '{cfg.name}': {field_name} must be one of {', '.join(allowed)}, got {value!r}"
        )


def parameters(size: str) -> float | None:
    """Parameters from a size label: 135M, 8B, 8x7B (experts x each: an upper bound)."""
    import re

    m = re.fullmatch(r"\s*(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([MmBb])\s*", size or "")
    if not m:
        return None
    n = float(m.group(2)) * (1e6 if m.group(3).lower() == "m" else 1e9)
    return n * int(m.group(1) or 1)


def where_it_runs(cfg: ModelConfig) -> str:
    """One line for `biorag ls models`: backend, family, size and what machine it needs
    (weights at 2 bytes a parameter in bf16/fp16, halved or quartered by 8- and 4-bit loading)."""
    head = f"{cfg.backend}, {cfg.family}, {cfg.size or 'size unknown'}"
    if cfg.backend == "openai":
        return f"{head}; served elsewhere (OpenAI-compatible API): no local GPU or memory"
    if cfg.backend == "fake":
        return f"{head}; a test double, no model"
    n = parameters(cfg.size)
    if n is None:
        return head
    gb = n * (0.5 if cfg.load_in_4bit else 1 if cfg.load_in_8bit else 2) / 1e9
    if n <= 2e9:
        need = f"CPU-friendly (~{gb:.1f} GB of weights)"
    elif gb <= 70:
        need = f"a GPU with >= {gb * 1.2:.0f} GB (weights ~{gb:.0f} GB); QLoRA: model.load_in_4bit=true"
    else:
        need = f"several GPUs (weights ~{gb:.0f} GB)"
    return f"{head}; {need}" + (" (vLLM)" if cfg.backend == "vllm" else "")
