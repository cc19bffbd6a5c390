"""A judge: which model grades, how its verdicts are read, and the prompts it is asked.

Judge configs live in `experiments/judge/` (`biorag ls judge`). A judge names any model config
(`model: smollm2`, `llama3-70b-instruct` on vllm, `openai-compatible`), so every backend biorag
loads can judge. Its verdicts are read by log-likelihood (the yes/no or 1-5 tokens scored, no
parsing) or, for judges that only generate (chat endpoints), generated and parsed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from biorag.atomic import check_name
from biorag.errors import ConfigError, did_you_mean
from biorag.tasks.config import JUDGE_METHODS

METHODS = JUDGE_METHODS  # rubric | scale | support

VERDICTS = ("loglikelihood", "generate")


@dataclass
class JudgeConfig:
    """One judge: a model, how its verdicts are read, and its prompts."""

    name: str = "???"
    model: str = "smollm2"  # a model config (experiments/model/) by name or YAML path
    # loglikelihood: the verdict tokens are scored (probability-weighted, never unparsed);
    # generate: the judge writes its verdict and it is parsed (unparsed ones are counted)
    verdict: str = "loglikelihood"
    # templates of one's own, by method (rubric | scale | support | pairwise); the rest are
    # biorag's (`biorag.judges.prompts`). Each is part of the judgement cache key.
    templates: dict[str, str] = field(default_factory=dict)
    max_new_tokens: int = 16  # generate: tokens of a verdict
    system: str = ""  # a system message before every judge prompt
    scale_axes: list[str] = field(default_factory=lambda: ["accuracy", "completeness", "clarity"])
    description: str = ""

    def __post_init__(self) -> None:
        if self.name != "???":
            check_name(self.name, "judge name")
        if self.verdict not in VERDICTS:
            raise ConfigError(f"judge {self.name}: " + did_you_mean(self.verdict, VERDICTS, what="verdict"))
        from biorag.judges.prompts import TEMPLATES

        for key in self.templates:
            if key not in TEMPLATES:
                raise ConfigError(f"judge {self.name}: templates: " + did_you_mean(key, tuple(TEMPLATES),
                                                                                  what="template"))
        if self.max_new_tokens < 1:
            raise ConfigError(f"judge {self.name}: max_new_tokens must be at least 1")
        if not self.scale_axes:
            raise ConfigError(f"judge {self.name}: scale_axes must name at least one axis")

    def template(self, method: str) -> str:
        from biorag.judges.prompts import TEMPLATES

        return self.templates.get(method) or TEMPLATES[method]

    def prompt_version(self, method: str) -> str:
        """A short hash of the template and system message: part of every cache key, so an
        edited prompt is judged again."""
        text = f"{self.system}\x00{self.template(method)}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def params(self) -> dict[str, Any]:
        """What a judged run logs of this judge (under `judge.<name>.`)."""
        return {"model": self.model, "verdict": self.verdict,
                **{f"prompt.{m}": self.prompt_version(m) for m in ("rubric", "scale", "support", "pairwise")}}


def load_judge_config(name_or_path: str) -> JudgeConfig:
    """A judge config by name (experiments/judge/NAME.yaml) or YAML path."""
    from biorag.config import load_option

    return load_option("judge", name_or_path, JudgeConfig)


def judge_names(value: Any) -> list[str]:
    """A judge setting (a name, a list of names, or nothing) as a list of names."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = [str(v) for v in value]
    except TypeError:
        raise ConfigError(f"judges: a judge name or a list of names, not {value!r}") from None
    return list(dict.fromkeys(names))
