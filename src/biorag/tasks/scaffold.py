"""`biorag task init`: a commented task YAML for one's own file, with the loader's defaults
written out to edit."""

from __future__ import annotations

import json
from pathlib import Path

from biorag.atomic import check_name
from biorag.errors import ConfigError
from biorag.tasks.defaults import brings_defaults, loader_defaults


def loader_fields(loader: str) -> dict[str, str | None]:
    """The record fields a built-in loader reads by default (item field -> source column)."""
    from biorag.tasks import bioasq, healthbench, loaders, longhealth, mirage, text_loaders

    return dict({
        "mcq": loaders.MCQ_FIELDS, "medqa": loaders.MEDQA_FIELDS, "medmcqa": loaders.MEDMCQA_FIELDS,
        "pubmedqa": loaders.PUBMEDQA_FIELDS, "mmlu": loaders.MMLU_FIELDS, "nli": text_loaders.NLI_FIELDS,
        "summarisation": text_loaders.SUMMARISATION_FIELDS, "coding": text_loaders.CODING_FIELDS,
        "longdoc": longhealth.LONGDOC_FIELDS, "mirage": mirage.MIRAGE_FIELDS, "bioasq": bioasq.BIOASQ_FIELDS,
        "healthbench": healthbench.HEALTHBENCH_FIELDS,
    }.get(loader, {}))


def task_yaml(name: str, loader: str, path: str, subset: str | None = None, index: str | None = None) -> str:
    """The text of a task YAML reading `path` with `loader`: every setting the loader brings,
    written out with a comment, so the file is the place to change the prompt or the scoring."""
    from biorag import registry

    check_name(name, "task name")
    registry.target("task_loader", loader)  # unknown: the close matches
    if not brings_defaults(loader):
        raise ConfigError(f"loader '{loader}' brings no defaults (it is not one of biorag's own): "
                          "copy a task YAML from `biorag ls tasks` and change it instead")
    d = loader_defaults(loader, subset)
    if not d["type"]:
        raise ConfigError(f"loader '{loader}' needs --subset (the question type: yesno, factoid, list or summary)")
    fields = ", ".join(f"{k}: {v}" for k, v in loader_fields(loader).items() if v)
    q = json.dumps  # a JSON string is a YAML string: paths and names quoted safely
    lines = [
        f"# biorag task show {name}",
        f"# Your own task: items read by the '{loader}' loader from {path}. Check the file with",
        f"#   biorag task validate {path} --task {name}",
        "# and run it (rag arms need an index: set `index:` or `corpus:` below) with",
        f"#   biorag experiment run arm=base,rag model=smollm2 task={name}",
        "# Each setting below is the loader's default, written out to edit; a setting left out",
        f"# is the loader's (`biorag task show {name} --cfg` prints them all).",
        _c(f"name: {name}", "equals the file name"),
        f"loader: {loader}",
        _c(f"type: {d['type']}", "what the loader makes"),
        'description: ""',
        _c("version: 1", "bump when items, template or scoring change"),
        f"path: {q(path)}",
        *([f"subset: {subset}"] if subset else []),
        _c("n: null", "null: every item; N: a seeded sample of N"),
        _c(f"index: {q(index) if index else 'null'}", "rag arms search this built index (`biorag ls indexes`)"),
        _c("corpus: null", "... or, index null, a corpus config: its index <corpus>-<embedder>"),
        _c("fields: {}", "columns your file names otherwise, e.g. {question: stem}"),
        f"#   the loader reads: {fields or 'see its docs'}",
    ]
    if d["labels"]:
        lines.append(_c(f"labels: {q(d['labels'])}", "the label set, in option order"))
    lines += [_c("template: |", "Jinja2: input, options, documents, context (retrieved passages)")]
    lines += [f"  {line}".rstrip() for line in d["template"].splitlines()]
    lines += [
        _c(f"context_tokens: {d['context_tokens']}", "budget for the retrieved passages"),
        _c(f"document_tokens: {d['document_tokens']}", "budget for the item's own documents"),
        _c(f"metrics: {q(d['metrics'])}", "`biorag ls scorers`"),
        _c(f"scoring: {d['scoring']}", "loglikelihood | generate | both"),
        _c(f"continuation: {d['continuation']}", "log-likelihood of ' A', ' B', ... (letter) or of the option's text"),
        _c(f"max_new_tokens: {d['max_new_tokens']}", "generation budget"),
    ]
    return "\n".join(lines) + "\n"


def write_task_file(name: str, loader: str, path: str, to: str | Path | None = None,
                    subset: str | None = None, force: bool = False, index: str | None = None) -> Path:
    """Write `task_yaml` to `to` (default experiments/task/NAME.yaml); an existing file is
    kept unless `force`."""
    from omegaconf import OmegaConf

    from biorag.config import to_typed
    from biorag.tasks.config import TaskConfig

    out = Path(to) if to else Path("experiments") / "task" / f"{name}.yaml"
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    if out.stem != name:
        raise ConfigError(f"{out}: a task file is named as its task: {name}.yaml")
    text = task_yaml(name, loader, path, subset, index)
    to_typed(OmegaConf.create(text), TaskConfig, where=f"task {name}")  # what it writes validates
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def _c(setting: str, comment: str) -> str:
    return f"{setting:<23} # {comment}"
