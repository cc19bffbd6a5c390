"""A task reaches an index by its name: `task.index`, or a `task.corpus` that is no corpus
config but a built index; an index that is not there is an error naming the indexes that are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from biorag.errors import BioragError
from biorag.experiment.plan import plan
from biorag.experiment.resources import cell_retriever
from biorag.experiment.runner import run_experiment
from biorag.indexing.build import build_index, load_build_config

MEDQA = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "medqa.jsonl"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The index root holding one tiny index, `mycorpus`, built from a JSONL of one's own the
    way docs/own-data.md says (corpus=sample with corpus.path, name=mycorpus)."""
    root = tmp_path_factory.mktemp("indexes")
    corpus = root.parent / "mydocs.jsonl"
    docs = [("thyroid", "Hypothyroidism", "Hypothyroidism is treated with levothyroxine."),
            ("asthma", "Asthma", "Inhaled corticosteroids control persistent asthma."),
            ("sepsis", "Sepsis", "Sepsis needs early antibiotics and fluids.")]
    corpus.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "name=mycorpus", f"root={root}"]))
    return root


def _rag(root: Path, *extra: str):
    _, cells, _ = plan(["arm=rag", "model=fake", "task=medqa", f"task.path={MEDQA}", f"index_root={root}", *extra])
    return cells[0]


@pytest.mark.parametrize("names", [["task.index=mycorpus"], ["task.corpus=mycorpus"],
                                   ["task.index=[mycorpus]", "task.corpus=hpo"]],
                         ids=["task.index", "corpus-is-an-index-name", "index-wins-over-corpus"])
def test_a_task_naming_an_index_reaches_it(built: Path, names: list[str]) -> None:
    retriever = cell_retriever(_rag(built, *names))
    assert retriever.index.path == built / "mycorpus"
    hits = retriever.retrieve("levothyroxine for hypothyroidism", 1)
    assert hits[0].chunk.doc_id == "thyroid"


def test_a_task_file_naming_its_index_runs_a_rag_arm_on_it(built: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIORAG_CONFIG_DIR", raising=False)
    task = tmp_path / "experiments" / "task" / "mytask.yaml"
    task.parent.mkdir(parents=True)
    task.write_text(f"name: mytask\nloader: medqa\npath: {MEDQA}\nindex: mycorpus\n")
    result = run_experiment(["arm=base,rag", "model=fake", "task=mytask", f"index_root={built}",
                             f"cache_dir={tmp_path / 'cache'}", "experiment=byo"])
    rag = next(c for c in result.cells if c.arm == "rag")
    run = MlflowClient().get_run(rag.run_id)
    manifest = json.loads((built / "mycorpus" / "manifest.json").read_text())
    assert run.data.tags["index_fingerprint"] == manifest["fingerprint"]
    assert run.data.params["task.index"] == "mycorpus"


def test_an_index_that_is_not_built_names_the_ones_that_are(built: Path) -> None:
    with pytest.raises(BioragError) as e:
        cell_retriever(_rag(built, "task.corpus=mycorpu"))
    msg = str(e.value)
    assert "'mycorpu' or 'mycorpu-minilm'" in msg  # the index names it looked for
    assert "indexes there: mycorpus" in msg and "Did you mean 'mycorpus'" in msg
    for names in (["task.index=nosuch"], ["arm.retriever.index=nosuch"]):
        with pytest.raises(BioragError, match=r"index 'nosuch' .*indexes there: mycorpus"):
            cell_retriever(_rag(built, *names))
