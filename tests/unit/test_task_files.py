"""A task file of one's own: name, loader and path make a task (the loader brings the rest),
`biorag task init` writes one, config errors name the file, line and key, `experiment
validate` lists every problem of a run that cannot run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from biorag.config import to_typed
from biorag.errors import ConfigError
from biorag.experiment.plan import plan
from biorag.prompting import build_prompt
from biorag.tasks import TaskConfig, load_examples, load_task_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"
MEDQA = FIXTURES / "medqa.jsonl"

# loader -> (fixture, subset): every built-in file loader, read with its default fields
LOADER_FILES = {
    "mcq": ("case_challenge.jsonl", None), "medqa": ("medqa.jsonl", None),
    "medmcqa": ("medmcqa.jsonl", None), "pubmedqa": ("ori_pqal.json", None),
    "mmlu": ("mmlu.jsonl", None), "nli": ("mednli.jsonl", None),
    "summarisation": ("problem_summary.jsonl", None), "coding": ("coding.jsonl", None),
    "longdoc": ("longdoc.jsonl", None), "mirage": ("mirage/benchmark.json", "medqa"),
    "bioasq": ("bioasq/training.json", "factoid"),
    "healthbench": ("healthbench/healthbench.jsonl", None),
}


@pytest.fixture
def here(fresh_cwd: Path) -> Path:
    """A working directory of one's own (its ./experiments layers over the packaged configs)."""
    return fresh_cwd


def _task(folder: Path, name: str, text: str) -> Path:
    path = folder / "experiments" / "task" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cli(*args: str):
    """The result of a command, its output holding a BioragError's message (as `main` prints)."""
    from biorag.cli import app

    r = CliRunner().invoke(app, list(args))
    error = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    return SimpleNamespace(exit_code=r.exit_code, output=r.output + (f"error: {error}" if error else ""))


# -- a loader brings its defaults ----------------------------------------------------------


@pytest.mark.parametrize("loader", sorted(LOADER_FILES))
def test_name_loader_and_path_make_a_task_of_every_loader(loader: str) -> None:
    fixture, subset = LOADER_FILES[loader]
    raw = {"name": f"my-{loader}", "loader": loader, "path": str(FIXTURES / fixture)}
    cfg = to_typed(OmegaConf.create({**raw, **({"subset": subset} if subset else {})}), TaskConfig)
    assert cfg.type and cfg.template and cfg.scoring and cfg.metrics and cfg.max_new_tokens
    examples = load_examples(cfg)
    prompt = build_prompt(cfg, examples[0])
    assert examples[0].input.split()[0] in prompt.text or examples[0].documents


def test_a_two_line_plus_path_task_file_plans_runs_and_validates(here: Path) -> None:
    _task(here, "mytask", f"name: mytask\nloader: medqa\npath: {MEDQA}\n")
    cfg = load_task_config("mytask")
    assert (cfg.type, cfg.scoring, cfg.continuation, cfg.max_new_tokens) == ("mcq", "both", "letter", 16)
    assert "Answer with the letter" in build_prompt(cfg, load_examples(cfg)[0]).text
    _, cells, _ = plan(["arm=base", "model=fake", "task=mytask"])
    assert cells[0].task.template == cfg.template and cells[0].task.name == "mytask"
    r = _cli("experiment", "validate", "arm=base", "model=fake", "task=mytask")
    assert r.exit_code == 0, r.output
    assert "no problems" in r.output


def test_what_a_task_sets_wins_over_its_loader(here: Path) -> None:
    _task(here, "mytask", f"loader: medqa\npath: {MEDQA}\nscoring: generate\nmax_new_tokens: 4\n")
    cfg = plan(["arm=base", "model=fake", "task=mytask"])[1][0].task
    assert (cfg.name, cfg.scoring, cfg.max_new_tokens, cfg.continuation) == ("mytask", "generate", 4, "letter")


def test_a_loader_that_brings_no_type_asks_for_one() -> None:
    with pytest.raises(ConfigError, match=r"set `type:`.*'bioasq'"):
        to_typed(OmegaConf.create({"name": "b", "loader": "bioasq", "path": "x.json"}), TaskConfig)


# -- biorag task init ----------------------------------------------------------------------


def test_task_init_writes_a_commented_file_that_validates(here: Path) -> None:
    r = _cli("task", "init", "mytask", "--loader", "medqa", "--path", str(MEDQA))
    assert r.exit_code == 0, r.output
    path = here / "experiments" / "task" / "mytask.yaml"
    text = path.read_text()
    assert text.startswith("# biorag task show mytask") and "template: |" in text
    assert "answer: answer_idx" in text  # the loader's own field names, in a comment
    assert load_task_config("mytask").template.startswith("{% if context %}")
    assert _cli("task", "validate", str(MEDQA), "--task", "mytask").exit_code == 0
    r = _cli("experiment", "validate", "arm=base", "model=fake", "task=mytask")
    assert r.exit_code == 0, r.output
    path.write_text(text + "n: 2\n")
    r = _cli("task", "init", "mytask", "--loader", "medqa", "--path", str(MEDQA))
    assert r.exit_code != 0 and "--force" in r.output and path.read_text().endswith("n: 2\n")
    assert _cli("task", "init", "mytask", "--loader", "nli", "--path", "x.jsonl", "--force").exit_code == 0
    assert load_task_config("mytask").labels == ["entailment", "neutral", "contradiction"]
    r = _cli("task", "init", "other", "--loader", "medq", "--path", "x.jsonl")
    assert r.exit_code != 0 and "medqa" in r.output


# -- config errors name what is wrong ------------------------------------------------------


def test_a_misspelt_key_in_a_task_file_names_the_file_line_and_close_match(here: Path) -> None:
    path = _task(here, "mytask", f"name: mytask\nloader: medqa\npath: {MEDQA}\ntemplte: x\n")
    with pytest.raises(ConfigError) as e:  # as a run composes it (Hydra)
        plan(["arm=base", "model=fake", "task=mytask"])
    msg = str(e.value)
    assert f"{path}:4" in msg and "'templte'" in msg and "Did you mean 'template'" in msg
    assert "raised while composing" not in msg
    with pytest.raises(ConfigError) as e:  # as `biorag task show` reads it
        load_task_config("mytask")
    assert str(path) in str(e.value) and "line 4" in str(e.value) and "'template'" in str(e.value)
    r = _cli("experiment", "validate", "arm=base", "model=fake", "task=mytask")
    assert r.exit_code != 0 and "templte" in r.output and "template" in r.output


def test_a_bad_value_in_a_task_file_names_the_file_and_line(here: Path) -> None:
    path = _task(here, "mytask", f"loader: medqa\npath: {MEDQA}\nn: lots\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: .*'lots'.*task\.n"):
        plan(["arm=base", "model=fake", "task=mytask"])


def test_a_missing_loader_is_a_sentence_naming_the_file(here: Path) -> None:
    path = _task(here, "mytask", f"name: mytask\npath: {MEDQA}\n")
    for load in (lambda: plan(["arm=base", "model=fake", "task=mytask"]), lambda: load_task_config("mytask")):
        with pytest.raises(ConfigError) as e:
            load()
        msg = str(e.value)
        assert str(path) in msg and "`loader:` is required" in msg and "medqa" in msg
        assert "Structured config" not in msg and "mandatory" not in msg


def test_a_name_other_than_the_file_name_is_an_error(here: Path) -> None:
    path = _task(here, "mytask", f"name: other\nloader: medqa\npath: {MEDQA}\n")
    for load in (lambda: plan(["arm=base", "model=fake", "task=mytask"]),
                 lambda: load_task_config("mytask"), lambda: load_task_config(str(path))):
        with pytest.raises(ConfigError, match=r"name 'other' differs from the file name 'mytask'"):
            load()
    # asked for on the command line, a name is the user's to give
    assert plan(["arm=base", "model=fake", "task=mytask", "task.name=other"])[1][0].task.name == "other"


# -- experiment validate -------------------------------------------------------------------


def test_validate_lists_every_problem_and_exits_non_zero(here: Path, monkeypatch) -> None:
    from biorag.cli.console import console

    monkeypatch.setattr(console, "_width", 300)  # one problem a line, words unbroken
    _task(here, "mytask", f"name: mytask\nloader: medqa\npath: {MEDQA}\n")
    _task(here, "gone", "loader: medqa\npath: data/nowhere.jsonl\n")
    model = here / "experiments" / "model" / "mine.yaml"
    model.parent.mkdir(parents=True)
    model.write_text("name: mine\nid: ./models/not-downloaded\n")
    r = _cli("experiment", "validate", "arm=base,rag,lora", "model=mine,llama3-8b-instruct",
             "task=mytask,gone", "task.corpus=nosuch")
    assert r.exit_code == 1, r.output
    out = r.output
    assert "data/nowhere.jsonl does not exist" in out  # the task's data file
    assert "names corpus 'nosuch'" in out and "'nosuch-minilm'" in out  # the index
    assert "adapter 'smollm2-hpo' of arm 'lora' not found" in out  # the adapter
    assert "./models/not-downloaded does not exist" in out  # the model's local folder
    assert "not checked (hub): meta-llama/Meta-Llama-3-8B-Instruct" in out  # a hub id
    assert "lora/mine/gone" in out and "rag/llama3-8b-instruct/mytask" in out  # which cells


def test_check_cells_names_cell_what_and_why(here: Path) -> None:
    from biorag.experiment.checks import check_cells

    _, cells, _ = plan(["arm=rag", "model=fake", "task=medqa", "task.path=nowhere.jsonl",
                        "arm.retriever.corpus=sample"])
    problems = [p for p in check_cells(cells) if p.error]
    assert {(p.cell, p.what) for p in problems} == {("rag/fake/medqa", "task data"), ("rag/fake/medqa", "corpus")}
    corpus = next(p for p in problems if p.what == "corpus")
    assert "corpora/sample/clinical_snippets.jsonl" in corpus.why  # relative to ./: not here
    _, ok, _ = plan(["arm=base", "model=fake", "task=medqa", f"task.path={MEDQA}"])
    assert check_cells(ok) == []
