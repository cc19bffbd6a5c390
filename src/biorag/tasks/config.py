"""A task is data: one YAML per task under `experiments/task/`, validated into `TaskConfig`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

from biorag.errors import ConfigError, check_file_name, did_you_mean

log = logging.getLogger(__name__)

TYPES = ("mcq", "nli", "summarisation", "coding", "longdoc", "qa")
SCORING_MODES = ("loglikelihood", "generate", "both")
CONTINUATIONS = ("letter", "text")
SHOT_SOURCES = ("auto", "train", "heldout", "clue")
ANSWER_FORMATS = ("plain", "final_line", "json")  # the whole output | "Final answer: X" | MedRAG's JSON
# the answer a task type's outputs are parsed to (scoring.parse_output)
ANSWER_TYPES = {
    "mcq": "letter",
    "longdoc": "letter",
    "nli": "label",
    "summarisation": "text",
    "coding": "codes",
    "qa": "answers",  # short answers, ranked: BioASQ factoid and list questions
}
# the task type each built-in loader produces; loaders registered by plugins are not checked
LOADER_TYPES = {
    "mcq": "mcq",
    "medqa": "mcq",
    "medmcqa": "mcq",
    "pubmedqa": "mcq",
    "mmlu": "mcq",
    "hpo-term-mcq": "mcq",
    "icd10-code-mcq": "mcq",
    "nli": "nli",
    "summarisation": "summarisation",
    "coding": "coding",
    "icd10-coding": "coding",
    "longdoc": "longdoc",
    "healthbench": "summarisation",
}
# how a judge grades an answer (biorag.judges.methods)
JUDGE_METHODS = ("rubric", "scale", "support")
# generators that build their own `n` items; file loaders are subsampled to `n` instead
EMBEDDED_LOADERS = ("hpo-term-mcq", "icd10-code-mcq", "icd10-coding")


@dataclass
class TaskConfig:
    """One evaluation task: where its items come from, how they are prompted and scored."""

    name: str = "???"  # equals the YAML file's name; left out: taken from it
    loader: str = "???"  # a registered task loader (`biorag ls task-loaders`)
    # mcq | nli | summarisation | coding | longdoc | qa; empty: the loader's. Every setting
    # below marked "empty: the loader's" comes from `biorag.tasks.defaults` when left out
    type: str = ""
    description: str = ""
    version: int = 1  # bump when items, template or scoring change: results are not comparable
    # -- source: a local file (jsonl, json, csv, tsv, parquet) or a Hugging Face dataset
    path: str | None = None
    dataset: str | None = None  # hub id or local folder for datasets.load_dataset
    subset: str | None = None  # the dataset config name
    split: str = "test"
    revision: str | None = None  # pin a hub dataset to a commit for reproducibility
    # what a rag arm with `retriever.index: null` searches: `index` (an index name or folder,
    # or a list fused by RRF) when set, else `corpus` (a corpus config: its index
    # <corpus>-<embedder>, built when missing; or the name of a built index)
    corpus: str | None = None
    index: Any = None
    subjects: list[str] = field(default_factory=list)  # mmlu: subjects to keep (hub: to load)
    fields: dict[str, str | None] = field(default_factory=dict)  # item field -> source column
    answer_base: int = 0  # integer answers (MedMCQA cop, MMLU answer): 0- or 1-based
    labels: list[str] = field(default_factory=list)  # nli: the label set, in option order
    # -- size: embedded generators make `n` items; file tasks keep a seeded sample of `n`
    n: int | None = None
    seed: int = 0
    n_options: int = 5  # embedded multiple-choice generators
    # -- prompting: one Jinja2 template for closed-book and with-context prompts
    system: str = ""  # a system message, when not empty
    template: str = ""  # empty: the loader's
    context_tokens: int | None = None  # budget for retrieved passages; null: the loader's
    # budget for the item's own documents (PubMedQA, long-doc QA); null: the loader's
    document_tokens: int | None = None
    # -- answers and scoring
    answer_type: str = ""  # empty: the type's (letter | label | text | codes)
    metrics: list[str] = field(default_factory=list)  # registered scorers; empty: the loader's
    scoring: str = ""  # loglikelihood | generate | both; empty: the loader's
    continuation: str = ""  # letter (" A" ...) | text (" <option text>"); empty: the loader's
    max_new_tokens: int | None = None  # null: the loader's
    stop: list[str] = field(default_factory=list)  # generation ends before them
    # -- answer protocol (experiments/protocol/): "task" is the settings above; another one
    # (loglikelihood, direct, cot, medrag) sets scoring, template, budget and parsing
    protocol: str = "task"
    protocol_question: str = ""  # what a protocol's template asks after an item that is no question
    answer_format: str = "plain"  # where an answer is read: plain | final_line | json
    stop_after: list[str] = field(default_factory=list)  # generation ends after them (kept)
    # -- decoding: greedy by default; self-consistency samples `samples` outputs at
    # `temperature` (seeds seed, seed+1, ...) and keeps the majority answer
    temperature: float = 0.0
    samples: int = 1
    # -- few-shot: `shots` solved items as user/assistant turns before the item (protocol=clue).
    # shots_from: train (drawn from shots_path, a training file of the same format; every item
    # is scored) | heldout (a seeded draw from the task's own items, set aside, never scored)
    # | clue (CLUE's own: the items shuffled with Python's random.seed(1), the first `shots` set
    # aside) | auto (train when shots_path is set, else heldout)
    shots: int = 0
    shots_from: str = "auto"
    shots_path: str | None = None
    shot_answer: str = "{{ gold }}"  # the assistant turn of a shot (Jinja: gold, metadata)
    # -- LongHealth (CLUE): 1 the patient's documents | 2 plus other patients' documents | 3
    # other patients' documents only (gold: the abstention option F); `variants` prompts per
    # question, each with its own document order (and its own distractors in 2 and 3)
    setting: int = 1
    variants: int = 1
    # -- CLUE's scoring quirks, reproduced (protocol=clue-compat; off by default): sampling at
    # temperature 1 where CLUE set none, and `double_count_first`, its means that count the
    # first item twice (MedNLI, MeDiSumCode)
    clue_compat: bool = False
    double_count_first: bool = False
    expected_format: str = ""  # what a user-supplied file must look like
    # -- judges (experiments/judge/): a judge name or a list (a jury) that grades this task's
    # answers after prediction, and how: rubric | scale | support; empty: rubric where items
    # carry rubrics, scale where the gold is a text, support always (NaN in closed-book arms)
    judge: Any = None
    judge_methods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = f"task {self.name}"
        from biorag import registry
        from biorag.tasks.defaults import fill_defaults

        try:
            registry.target("task_loader", self.loader)
        except ConfigError as e:  # unknown: the close matches
            raise ConfigError(f"{where}: loader: {e}") from None
        fill_defaults(self)  # what the YAML leaves out, the loader brings
        if not self.type:
            raise ConfigError(f"{where}: set `type:` ({' | '.join(TYPES)}); loader "
                              f"'{self.loader}' does not say which items it makes")
        if self.type not in TYPES:
            raise ConfigError(f"{where}: " + did_you_mean(self.type, TYPES, what="task type"))
        made = LOADER_TYPES.get(self.loader)
        if made and made != self.type:
            raise ConfigError(
                f"{where}: loader '{self.loader}' makes {made} items, not {self.type}"
            )
        if self.protocol != "task":
            from biorag.tasks.protocols import apply_protocol

            apply_protocol(self)
        names = self.index if isinstance(self.index, list | tuple | ListConfig) else [self.index]
        if self.index is not None and not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{where}: index must be an index name, a folder or a list of them, "
                              f"not {self.index!r}")
        if self.samples < 1 or self.temperature < 0:
            raise ConfigError(f"{where}: samples must be at least 1 and temperature at least 0")
        if self.samples > 1 and (self.temperature == 0 or self.scoring == "loglikelihood"):
            raise ConfigError(f"{where}: samples={self.samples} needs generation at a temperature "
                              "above 0 (e.g. task.temperature=0.7): greedy samples are all the same")
        if self.shots < 0 or self.shots_from not in SHOT_SOURCES:
            raise ConfigError(f"{where}: shots must be 0 or more and shots_from one of "
                              f"{', '.join(SHOT_SOURCES)}")
        if self.shots_from == "train" and not self.shots_path:
            raise ConfigError(f"{where}: shots_from=train needs task.shots_path=TRAINING_FILE")
        if self.setting not in (1, 2, 3) or self.variants < 1:
            raise ConfigError(f"{where}: setting must be 1, 2 or 3 and variants at least 1")
        if self.answer_format not in ANSWER_FORMATS:
            raise ConfigError(f"{where}: " + did_you_mean(self.answer_format, ANSWER_FORMATS, what="answer format"))
        if not self.answer_type:
            self.answer_type = ANSWER_TYPES[self.type]
        elif self.answer_type != ANSWER_TYPES[self.type]:
            raise ConfigError(
                f"{where}: a {self.type} task answers with '{ANSWER_TYPES[self.type]}', "
                f"not '{self.answer_type}'"
            )
        if self.scoring not in SCORING_MODES:
            raise ConfigError(
                f"{where}: " + did_you_mean(self.scoring, SCORING_MODES, what="scoring mode")
            )
        if self.scoring != "generate" and self.type in ("summarisation", "coding", "qa"):
            raise ConfigError(
                f"{where}: {self.type} tasks are scored by generation only (scoring: generate)"
            )
        if self.continuation not in CONTINUATIONS:
            raise ConfigError(
                f"{where}: " + did_you_mean(self.continuation, CONTINUATIONS, what="continuation")
            )
        for metric in self.metrics:
            registry.target("scorer", metric)
        if not self.metrics:
            raise ConfigError(f"{where}: no metrics")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"{where}: n must be at least 1, not {self.n}")
        if not 2 <= self.n_options <= 10:
            raise ConfigError(f"{where}: n_options must be 2 to 10, not {self.n_options}")
        if self.answer_base not in (0, 1):
            raise ConfigError(f"{where}: answer_base must be 0 or 1, not {self.answer_base}")
        for m in self.judge_methods:
            if m not in JUDGE_METHODS:
                raise ConfigError(f"{where}: judge_methods: " + did_you_mean(m, JUDGE_METHODS, what="judge method"))
        if self.type == "nli" and not self.labels:
            raise ConfigError(f"{where}: an nli task needs its labels")


def task_names() -> list[str]:
    """The tasks under `experiments/task/`."""
    from biorag.config import options

    return options("task")


def task_config_path(name: str) -> Path:
    """The YAML of a task, by name or as a path to a YAML file of one's own."""
    from biorag.config import option_path

    return option_path("task", name)


def load_task_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> TaskConfig:
    """Load a task YAML, apply `key=value` overrides (`task.` prefix optional) and validate.

    `load_task_config("medqa", ["task.path=my/medqa.jsonl", "n=50"])`
    """
    from biorag.config import extended, read_yaml, to_typed

    path = task_config_path(name)
    base = extended(read_yaml(path), path, "task")
    if base.get("name") is None:
        base.name = path.stem
    else:
        check_file_name(base.name, path)
    dotlist = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override '{o}' is not key=value (e.g. task.path=data/x.jsonl)")
        dotlist.append(o.removeprefix("task."))
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist))
    except Exception as e:
        raise ConfigError(f"task {base.name}: {e}") from None
    return to_typed(merged, TaskConfig, where=f"task {base.name} ({path})", source=path)

