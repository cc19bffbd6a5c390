"""What biorag reads off a transformers model: its context length, a greedy generation
config that ignores the checkpoint's sampling defaults, and the versions a run logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def greedy_config(model: Any, tokenizer: Any, pad_token_id: int | None, max_new_tokens: int,
                  stop: list[str] | None) -> Any:
    """Greedy decoding whatever the model's generation_config.json says.

    transformers fills every unset (None) field from the model's own config, so the
    sampling and penalty fields get their neutral values here: a checkpoint's
    temperature=0.6 / top_p=0.9 (Llama-3-Instruct) then neither warns nor matters, and a
    repetition_penalty cannot quietly change what "greedy" means.
    """
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None) or GenerationConfig()
    eos = as_list(own.eos_token_id) + as_list(tokenizer.eos_token_id)
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        top_k=50,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(dict.fromkeys(eos)) or None,
        bos_token_id=own.bos_token_id,
        pad_token_id=pad_token_id,
        stop_strings=list(stop) if stop else None,
    )


def model_max_length(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 2048


def as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def folder_name(path: str) -> str:
    return Path(path).expanduser().resolve().name


def backend_info(model: Any) -> dict[str, str]:
    import transformers

    info = {"backend": "hf", "transformers": transformers.__version__, "torch": torch.__version__}
    try:
        param = next(model.parameters())
        info.update({"dtype": str(param.dtype).removeprefix("torch."), "device": str(param.device)})
    except (StopIteration, AttributeError):
        pass
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    return info
