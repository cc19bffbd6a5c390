"""The torch side of `biorag finetune`: load the base model for training, wrap it in peft,
and set up the transformers Trainer with biorag's progress bar and MLflow metrics.

Imported only when training starts (it imports transformers)."""

from __future__ import annotations

import logging
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from biorag import progress
from biorag.errors import BioragError
from biorag.models.config import ModelConfig
from biorag.tracking import keys

if TYPE_CHECKING:
    from biorag.finetune.config import FinetuneConfig, LoraSettings, TrainSettings
    from biorag.finetune.data import TrainingData

log = logging.getLogger(__name__)


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The base model's tokenizer, with a pad token (EOS when it has none) for batching."""
    from transformers import AutoTokenizer

    from biorag.models.loading import weights_location

    where, gguf_file = weights_location(cfg)
    kwargs: dict[str, Any] = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except OSError as e:
        raise BioragError(f"model '{cfg.name}': could not load the tokenizer of '{where}' ({e})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_training(cfg: ModelConfig, lora: LoraSettings, train: TrainSettings) -> tuple[Any, str, Any]:
    """(peft model, device, dtype): the base in the config's dtype (bf16 on a GPU, fp32 on
    CPU by default), 4-bit for QLoRA when `load_in_4bit`, LoRA on peft's default modules for
    the model type unless `lora.target_modules` names others."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, set_seed

    from biorag.models.loading import _bnb_config, resolve_device, resolve_dtype, weights_location

    where, gguf_file = weights_location(cfg)
    device = resolve_device(cfg)
    dtype = resolve_dtype(cfg, device, training=True)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    quantization = _bnb_config(cfg, device, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device.startswith("cuda"):
        kwargs["device_map"] = {"": device if device != "cuda" else f"cuda:{torch.cuda.current_device()}"}
    log.info("loading %s for training from %s (%s, %s%s)", cfg.name, where, device, dtype,
             ", 4-bit" if cfg.load_in_4bit else ", 8-bit" if cfg.load_in_8bit else "")
    set_seed(train.seed)  # the LoRA A matrices are initialised at random
    model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.config.use_cache = False
    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    peft_cfg = LoraConfig(
        task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else None,
        layers_to_transform=list(lora.layers_to_transform) if lora.layers_to_transform else None,
        bias=lora.bias,
    )
    try:
        with warnings.catch_warnings():  # transformers 5 renames an attribute peft still reads
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, peft_cfg)  # target_modules=None: peft's mapping for the type
    except ValueError as e:
        raise BioragError(
            f"model '{cfg.name}' (model type '{model.config.model_type}'): peft could not place LoRA "
            f"({e}); set lora.target_modules=[...] to the names of its linear layers"
        ) from None
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA on %s: %s trainable of %s parameters (%.3f%%)",
             sorted(model.peft_config["default"].target_modules), f"{trainable:,}", f"{total:,}",
             100 * trainable / max(total, 1))
    return model, device, dtype


def _cpu_mixed_bf16(device: str, dtype: Any) -> bool:
    """fp32 weights with bf16 autocast on a CPU with native bf16 units (biorag.hardware):
    mixed precision, as on a GPU, at 1.5-2x the speed of fp32 on such CPUs."""
    import torch

    from biorag.hardware import cpu_bf16

    return device == "cpu" and dtype == torch.float32 and cpu_bf16()


def build_trainer(cfg: FinetuneConfig, model: Any, tokenizer: Any, data: TrainingData, output_dir: Path,
                  device: str, dtype: Any, callbacks: list[Any],
                  skip_steps_through: int = 0) -> tuple[Any, _Tracker]:
    """The Trainer and biorag's tracker; the tracker logs to MLflow only the steps after
    `skip_steps_through` (those a killed session has logged already)."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    t = cfg.train
    # named only when on: transformers 5 renames these (activation_checkpointing) and warns
    checkpointing = ({"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
                     if t.gradient_checkpointing else {})
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if (t.eval_steps and data.eval) else "no",
        eval_steps=t.eval_steps,
        seed=t.seed,
        data_seed=t.seed,
        bf16=dtype == torch.bfloat16 or _cpu_mixed_bf16(device, dtype),
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=True,  # biorag's own bar (below) shows progress
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **checkpointing,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    tracker = _Tracker(device, skip_steps_through)
    trainer = Trainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval or None,
        data_collator=collator, callbacks=[tracker, *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer, tracker


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (the Trainer writes trainer_state.json last); newer
    incomplete ones, cut short by a kill, are removed."""
    import shutil

    if not folder.is_dir():
        return None
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.rsplit("-", 1)[1].isdigit()),
        key=lambda p: int(p.name.rsplit("-", 1)[1]),
    )
    while found and not (found[-1] / "trainer_state.json").is_file():
        log.warning("removing incomplete checkpoint %s", found[-1])
        shutil.rmtree(found.pop())
    return found[-1] if found else None


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("biorag", "torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


class _Tracker(TrainerCallback):
    """Shows progress, logs loss per step to the active MLflow run, counts tokens."""

    def __init__(self, device: str, skip_steps_through: int = 0) -> None:
        self.device = device
        self.skip_steps_through = skip_steps_through
        self.tokens = 0
        self.last_loss: float | None = None
        self._tokens_at_start = 0
        self._bar_cm: Any = None
        self._bar: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._tokens_at_start = state.num_input_tokens_seen
        self._bar_cm = progress.bar("fine-tuning (steps)", total=state.max_steps, completed=state.global_step)
        self._bar = self._bar_cm.__enter__()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        self._bar.advance(1)
        self.tokens = state.num_input_tokens_seen - self._tokens_at_start

    def on_log(self, args, state, control, logs=None, **kwargs):
        from biorag.tracking.runs import active_run_id, log_metrics

        logs = logs or {}
        metrics = {}
        for key, name in (("loss", keys.TRAIN_LOSS), ("learning_rate", keys.TRAIN_LEARNING_RATE),
                          ("grad_norm", keys.TRAIN_GRAD_NORM), ("eval_loss", keys.EVAL_LOSS)):
            if isinstance(logs.get(key), int | float):
                metrics[name] = float(logs[key])
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
            log.debug("step %d/%d loss %.4f", state.global_step, state.max_steps, self.last_loss)
        if metrics and state.global_step > self.skip_steps_through and active_run_id() is not None:
            log_metrics(metrics, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen - self._tokens_at_start
        self.close()

    def close(self) -> None:
        """End the progress bar (also when training stops with an exception)."""
        if self._bar_cm is not None:
            self._bar_cm.__exit__(None, None, None)
            self._bar_cm = None

    def peak_memory_mb(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024

    @staticmethod
    def history(log_history: list[dict[str, Any]]) -> list[list[float]]:
        """[[step, loss], ...] of the whole training (restored from a checkpoint on resume)."""
        return [[h["step"], round(h["loss"], 5)] for h in log_history if "loss" in h and "step" in h]


def checkpoint_is_final(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved at the last step of its training (its trainer state
    records the step and the training's length, with max_steps or with epochs)."""
    import json

    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        return 0 < int(state["max_steps"]) <= int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def tokens_seen_at(checkpoint: Path | None) -> int:
    """The tokens the training had seen when `checkpoint` was saved (0: no checkpoint)."""
    import json

    if checkpoint is None:
        return 0
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("num_input_tokens_seen") or 0)
    except (OSError, ValueError):
        return 0


def restore_finished(trainer: Any, model: Any, checkpoint: Path) -> Any:
    """The outcome of a training whose last checkpoint (`checkpoint`) is its final step: the
    adapter's weights and the Trainer's state (log history, tokens seen) as saved there,
    with no step trained in this session."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return TrainOutput(trainer.state.global_step, last_loss(trainer.state.log_history) or 0.0,
                       {"train_runtime": 0.0})


def last_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The last training loss logged in a (restored) log history."""
    return next((float(h["loss"]) for h in reversed(log_history) if "loss" in h), None)


def loss_over_all_steps(log_history: list[dict[str, Any]], resumed_from: int, session_loss: float,
                        total_steps: int) -> float:
    """The training loss over every step of the adapter. The Trainer's own figure
    (`session_loss`) is the exact mean over this session's steps; the steps before a resume
    are taken from the restored log history (exact when logging_steps divides save_steps, as
    the defaults 1 and 50 do)."""
    before = mean_loss([h for h in log_history if h.get("step", 0) <= resumed_from]) if resumed_from else None
    if before is None:
        return session_loss
    return (before * resumed_from + session_loss * (total_steps - resumed_from)) / max(total_steps, 1)


def mean_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The training loss over every step, from the Trainer's log history (restored from the
    checkpoint on resume): each logged loss is the mean since the previous log, so it is
    weighted by the steps it covers."""
    total, steps, last = 0.0, 0, 0
    for h in log_history:
        if "loss" in h and "step" in h and h["step"] > last:
            total += h["loss"] * (h["step"] - last)
            steps += h["step"] - last
            last = h["step"]
    return total / steps if steps else None


class SessionClock(TrainerCallback):
    """Time across sessions, kept in the fine-tune's state file: the training seconds behind
    each checkpoint (so a resumed run counts the steps it kept) and the wall seconds of every
    session, killed ones included."""

    def __init__(self, state: dict[str, Any], state_path: Path, resumed_from: int, session_start: float) -> None:
        from biorag.atomic import write_json

        self._write = lambda: write_json(state_path, state)
        self.state = state
        at = {int(k): v for k, v in state.get("train_seconds_at", {}).items() if int(k) <= resumed_from}
        self.train_seconds_before = float(at[max(at)]) if at else 0.0
        self.wall_seconds_before = float(state.get("wall_seconds", 0.0))
        self._t0 = session_start  # this session's start (before data and model loading)
        self._train_t0 = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_t0 = time.perf_counter()

    def wall_seconds(self) -> float:
        """Wall seconds of every session so far, this one included."""
        return self.wall_seconds_before + time.perf_counter() - self._t0

    def on_step_end(self, args, state, control, **kwargs):
        self.state["wall_seconds"] = self.wall_seconds()
        self._write()

    def on_save(self, args, state, control, **kwargs):
        elapsed = self.train_seconds_before + time.perf_counter() - self._train_t0
        self.state.setdefault("train_seconds_at", {})[str(state.global_step)] = round(elapsed, 3)
        self._write()
