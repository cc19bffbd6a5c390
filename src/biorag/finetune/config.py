"""What `biorag finetune` is told: the base model, the data, the LoRA adapter and the
optimisation, as typed dataclasses (composed from experiments/finetune.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from biorag.atomic import check_name
from biorag.contamination import AuditSettings
from biorag.corpora.training import DataConfig
from biorag.errors import ConfigError
from biorag.models.config import ModelConfig


@dataclass
class LoraSettings:
    """The adapter: peft's LoraConfig fields that a study varies."""

    r: int = 8  # rank
    alpha: int = 16  # scaling is alpha / r
    dropout: float = 0.05
    target_modules: list[str] | None = None  # null: peft's default for the model type
    layers_to_transform: list[int] | None = None  # null: every layer
    bias: str = "none"  # none | all | lora_only


@dataclass
class TrainSettings:
    """The optimisation: Trainer arguments under shorter names."""

    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # null: as many as `epochs` take
    seq_len: int = 256  # tokens per packed block (pretrain) or longest example (sft)
    batch_size: int = 4  # sequences per device step
    grad_accum: int = 1  # steps accumulated per optimiser update
    warmup: float = 0.05  # below 1: share of the updates; from 1: a number of updates
    scheduler: str = "cosine"  # a transformers lr_scheduler_type
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_fraction: float = 0.05  # documents / examples held out (seeded, by id)
    eval_limit: int | None = None  # at most this many eval sequences (CPU time); null: all
    eval_steps: int | None = None  # evaluate every N updates; null: at the end only
    save_steps: int = 50  # checkpoint every N updates: the unit a killed run resumes from
    logging_steps: int = 1  # loss logged to MLflow every N updates
    seed: int = 0  # LoRA init, data order and split
    gradient_checkpointing: bool = False  # less memory, ~30% more time

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "grad_accum", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"train.eval_fraction must be in [0, 1), not {self.eval_fraction}")


@dataclass
class FinetuneConfig:
    """Everything `biorag finetune` needs; composed from experiments/finetune.yaml."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    name: str | None = None  # adapter folder name; null: <model>-<data>
    output_dir: str = "adapters"  # where adapter folders go (arms look them up here too)
    experiment: str = "biorag-finetune"  # MLflow experiment
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name, "adapter name", "output_dir")

    def adapter_name(self) -> str:
        if self.name:
            return check_name(self.name, "adapter name", "output_dir")
        return check_name(f"{self.model.name}-{self.data.name}", "adapter name (from the model and data names)",
                          "name")


def load_finetune_config(overrides: list[str] | None = None) -> FinetuneConfig:
    """Compose experiments/finetune.yaml with overrides and validate it."""
    from biorag.config import compose, to_typed

    return to_typed(compose("finetune", overrides), FinetuneConfig, where="finetune config")
