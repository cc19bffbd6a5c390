"""vLLM backend (CUDA only): fast batched scoring and generation, LoRA per request.

vLLM samples at temperature 1.0 unless told otherwise, so every request here carries
`temperature=0`. Log-likelihood asks for `prompt_logprobs=1` on the whole (context +
continuation) token sequence with one generated token, as lm-eval's vLLM backend does;
vLLM then returns, for every prompt position, the log-probability of the actual token
(and the top-1 alternative, for `is_greedy`). Token boundaries follow the hf backend.

vllm is imported only when this backend is chosen (`pip install 'biorag[vllm]'`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from biorag.errors import BioragError, ConfigError
from biorag.models.base import LoglikelihoodResult
from biorag.models.config import ModelConfig
from biorag.models.text import (
    TokenEncoder,
    cut_at_stop,
    render_messages,
    wants_template,
)

log = logging.getLogger(__name__)

# options passed straight to vllm.LLM (see vLLM's EngineArgs)
_ENGINE_OPTIONS = {
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "max_num_seqs",
    "enforce_eager",
    "quantization",
    "swap_space",
}


class VLLMGenerator:
    """A model run by vLLM's offline `LLM` engine."""

    def __init__(
        self, llm: Any, *, name: str = "vllm", chat: str = "auto", adapter: str | None = None
    ) -> None:
        from vllm.lora.request import LoRARequest

        self.llm, self.name = llm, name
        self.tokenizer = llm.get_tokenizer()
        self.use_chat_template = wants_template(self.tokenizer, chat, name)
        self._encoder = TokenEncoder(self.tokenizer)
        self.max_length = llm.llm_engine.model_config.max_model_len
        self.lora = LoRARequest("adapter", 1, str(adapter)) if adapter else None
        self.info = {"backend": "vllm", "vllm": _vllm_version()}

    @classmethod
    def from_config(cls, cfg: ModelConfig, adapter: str | None = None) -> VLLMGenerator:
        try:
            from vllm import LLM
        except ImportError:
            raise BioragError(
                f"model '{cfg.name}': backend vllm needs the vllm package (pip install "
                "'biorag[vllm]') and a CUDA GPU; use backend=hf otherwise"
            ) from None
        import torch

        if not torch.cuda.is_available():
            raise BioragError(f"model '{cfg.name}': backend vllm needs a CUDA GPU; torch sees none")
        unknown = set(cfg.options) - _ENGINE_OPTIONS
        if unknown:
            raise ConfigError(
                f"model '{cfg.name}': unknown vllm options {sorted(unknown)}; "
                f"known: {', '.join(sorted(_ENGINE_OPTIONS))}"
            )
        from biorag.models.loading import weights_location

        where, gguf_file = weights_location(cfg)
        if gguf_file:
            raise ConfigError(f"model '{cfg.name}': use backend=hf for a hub GGUF file")
        engine: dict[str, Any] = {
            "model": where,
            "revision": cfg.revision,
            "dtype": cfg.dtype,  # vLLM reads "auto" the same way: the checkpoint's dtype
            "trust_remote_code": cfg.trust_remote_code,
            "max_model_len": cfg.max_length,
            "seed": 0,
            **cfg.options,
        }
        if cfg.load_in_4bit:
            engine["quantization"] = "bitsandbytes"
        elif cfg.load_in_8bit:
            raise ConfigError(
                f"model '{cfg.name}': vllm has no 8-bit bitsandbytes; use load_in_4bit"
            )
        if adapter is not None:
            engine.update(enable_lora=True, max_lora_rank=_lora_rank(adapter))
        llm = LLM(**{k: v for k, v in engine.items() if v is not None})
        name = cfg.name if adapter is None else f"{cfg.name}+{Path(adapter).name}"
        return cls(llm, name=name, chat=cfg.chat, adapter=adapter)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        prompts, spans = [], []
        for context, continuation in requests:
            ctx, cont = self._encoder.encode_pair(context, continuation)
            full = (ctx + cont)[-self.max_length :]  # keep the continuation, cut the far context
            prompts.append({"prompt_token_ids": full})
            spans.append((full, len(cont), len(continuation)))
        outputs = self.llm.generate(
            prompts, params, lora_request=self.lora, use_tqdm=len(prompts) > 1
        )
        results = []
        for out, (full, n_cont, n_chars) in zip(outputs, spans, strict=True):
            total, greedy = 0.0, True
            for pos in range(len(full) - n_cont, len(full)):
                scored = out.prompt_logprobs[pos]  # {token id: Logprob}, actual token + top-1
                token = full[pos]
                total += scored[token].logprob
                greedy = greedy and scored[token].rank == 1
            results.append(LoglikelihoodResult(total, n_cont, n_chars, greedy))
        return results

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 64, stop: list[str] | None = None
    ) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=0, max_tokens=max_new_tokens, stop=list(stop) if stop else None, seed=0
        )
        budget = self.max_length - max_new_tokens
        inputs = [{"prompt_token_ids": self._encoder.encode(p)[-budget:]} for p in prompts]
        outputs = self.llm.generate(
            inputs, params, lora_request=self.lora, use_tqdm=len(prompts) > 1
        )
        return [cut_at_stop(out.outputs[0].text, stop) for out in outputs]

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        return render_messages(self.tokenizer, self.use_chat_template, messages, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        return self._encoder.count(text)


def _lora_rank(adapter: str) -> int:
    """vLLM must be told the largest LoRA rank up front; read it from the adapter."""
    path = Path(adapter).expanduser() / "adapter_config.json"
    try:
        rank = int(json.loads(path.read_text())["r"])
    except (OSError, ValueError, KeyError) as e:
        raise BioragError(
            f"adapter {adapter}: cannot read the LoRA rank from {path} ({e})"
        ) from None
    # vLLM accepts only these values for max_lora_rank; any adapter rank up to it works
    return next((r for r in (8, 16, 32, 64, 128, 256, 512) if r >= rank), rank)


def _vllm_version() -> str:
    import vllm

    return vllm.__version__
