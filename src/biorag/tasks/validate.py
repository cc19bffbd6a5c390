"""Check a user's task file against a format and report every bad row, not just the first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from biorag.errors import ConfigError, InputError, did_you_mean
from biorag.tasks.config import LOADER_TYPES, TaskConfig, load_task_config
from biorag.tasks.records import Problem
from biorag.types import Example

# formats `biorag task validate --type` knows: the file loaders (embedded ones read no file)
FORMATS = (
    "mcq",
    "medqa",
    "medmcqa",
    "pubmedqa",
    "mmlu",
    "nli",
    "summarisation",
    "coding",
    "longdoc",
    "healthbench",
)
NLI_LABELS = ["entailment", "neutral", "contradiction"]


@dataclass
class ValidationReport:
    """What a file holds and everything wrong with it."""

    file: str
    format: str
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def duplicate_ids(self) -> int:
        return sum(p.message.startswith("duplicate id") for p in self.problems)

    def summary(self) -> dict[str, str]:
        """Counts a user can sanity-check: options per item, gold answers, documents."""
        out = {
            "examples": str(len(self.examples)),
            "problems": str(len(self.problems)),
            "duplicate ids": str(self.duplicate_ids),
        }
        if not self.examples:
            return out
        if any(ex.options for ex in self.examples):
            out["options per item"] = _counts(len(ex.options) for ex in self.examples)
        if all(isinstance(ex.gold, str) and len(ex.gold) < 40 for ex in self.examples):
            out["gold answers"] = _counts(ex.gold for ex in self.examples)
        if any(ex.documents for ex in self.examples):
            out["documents per item"] = _counts(len(ex.documents) for ex in self.examples)
        if any(isinstance(ex.gold, tuple) for ex in self.examples):
            out["codes per item" if self.format == "coding" else "gold answers per item"] = _counts(len(ex.gold) for ex in self.examples)
        return out


def _counts(values) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(Counter(values).items()))


def format_config(fmt: str, path: str, overrides: list[str] | tuple[str, ...] = ()) -> TaskConfig:
    """A bare task config that reads `path` with a loader's default field names."""
    from biorag.config import to_typed

    if fmt not in FORMATS:
        raise ConfigError(did_you_mean(fmt, FORMATS, what="format"))
    base = {
        "name": f"validate-{fmt}",
        "type": LOADER_TYPES[fmt],
        "loader": fmt,
        "path": path,
        "labels": NLI_LABELS if fmt == "nli" else [],
    }
    if fmt in ("summarisation", "coding"):
        base["metrics"] = ["exact_match"]
    dotlist = [o.removeprefix("task.") for o in overrides]
    return to_typed(
        OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist(dotlist)),
        TaskConfig,
        where=f"format {fmt}",
    )


def validate_file(
    path: str,
    fmt: str | None = None,
    task: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> ValidationReport:
    """Load `path` as a format (`--type`) or through a task's config (`--task`, with its
    field mapping) and collect every problem. A file that cannot be read at all is one problem."""
    if (fmt is None) == (task is None):
        raise ConfigError("give either a format (--type) or a task (--task)")
    if not Path(path).is_file():
        raise InputError("no such file", file=path)
    if task is not None:
        cfg = replace(load_task_config(task, overrides), path=path, dataset=None)
    else:
        cfg = format_config(fmt, path, overrides)  # type: ignore[arg-type]
    if cfg.path is None:
        raise ConfigError(f"task {cfg.name} reads no file")
    report = ValidationReport(file=path, format=fmt or cfg.loader)
    from biorag import registry

    loader = registry.resolve("task_loader", cfg.loader)
    try:
        report.examples = loader(cfg, report.problems)
    except InputError as e:  # unreadable as a whole: missing, not JSON, unknown suffix
        report.problems.append(Problem(e.file or path, e.line, e.field, str(e).split(": ", 1)[-1]))
    return report
