"""A tiny study for report and UI tests: fake models (a general one and its biomedical
counterpart), base and rag arms, two embedded tasks, logged to an MLflow store in a folder.

Runs offline in well under a minute: the models are `biorag.models.fake`, and the rag arm
retrieves from a small index of half of the task items' own definitions, so retrieval helps
on some items and not others (paired tests then see discordant pairs both ways).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

N = 12
ARMS = ("base", "rag")
MODELS = ("fake", "fake-bio")
TASKS = ("hpo-term-mcq", "icd10-code-mcq")
FAKE_BIO = """\
# biorag experiment run arm=base model=fake-bio task=hpo-term-mcq
# A second deterministic stand-in, declared biomedical: the counterpart of model=fake in tests.
name: fake-bio
backend: fake
family: biomedical
size: "0"
counterpart: fake
options:
  mode: context
  seed: 1
  answer: "{choice}"
"""


@dataclass
class TinyStudy:
    tracking_uri: str
    experiment: str
    parent_run_id: str
    cell_names: list[str]


def config_dir_with_fake_bio(dest: Path) -> Path:
    """A config folder of one's own holding one more model config, `fake-bio` (biomedical):
    it layers over the packaged configs, so it needs nothing else."""
    (dest / "model").mkdir(parents=True, exist_ok=True)
    (dest / "model" / "fake-bio.yaml").write_text(FAKE_BIO)
    return dest


def build_definition_index(root: Path, task: str = "hpo-term-mcq", share: float = 0.5) -> Path:
    """An index whose documents are the definitions of the first `share` of a task's items,
    titled by their terms: for those items retrieval finds the answer."""
    from biorag.indexing.build import build_index, load_build_config
    from biorag.tasks import load_examples, load_task_config

    root.mkdir(parents=True, exist_ok=True)
    examples = load_examples(load_task_config(task, [f"n={N}"]))
    corpus = root / "defs.jsonl"
    with corpus.open("w") as f:
        for e in examples[: int(len(examples) * share)]:
            term = e.options["ABCDEFGHIJ".index(e.gold)]
            f.write(json.dumps({"id": e.evidence[0], "title": term, "text": f"{term}: {e.input}"}) + "\n")
    built = build_index(load_build_config(
        ["corpus=sample", f"corpus.path={corpus}", "name=defs", f"root={root}"]))
    return built.path


def run_tiny_study(root: Path, experiment: str = "tiny-study") -> TinyStudy:
    """Run arms x models x tasks with the fake models into `root/mlflow.db` (+ `root/mlruns`).

    The caller sets MLFLOW_TRACKING_URI and BIORAG_CONFIG_DIR (see `study_env`)."""
    import os

    from biorag.experiment.runner import run_experiment

    index = build_definition_index(root / "ix")
    result = run_experiment([
        f"arm={','.join(ARMS)}", f"model={','.join(MODELS)}", f"task={','.join(TASKS)}", f"task.n={N}",
        "task.scoring=both", f"arm.retriever.index={index}", f"cache_dir={root / 'cache'}",
        f"experiment={experiment}",
    ])
    return TinyStudy(os.environ["MLFLOW_TRACKING_URI"], experiment, result.parent_run_id,
                     sorted(c.name for c in result.cells))


def study_env(root: Path) -> dict[str, str]:
    """The environment a tiny study in `root` is run and read with."""
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BIORAG_CONFIG_DIR": str(root / "experiments"),
        "BIORAG_INDEX_DIR": str(root / "indexes"),
    }
