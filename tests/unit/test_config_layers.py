"""Config folders layer: the packaged configs, then ./experiments, then $BIORAG_CONFIG_PATH;
a user folder holds only what it adds, and a file of the same name replaces the packaged one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from biorag.config import (
    compose,
    config_layers,
    load_option,
    option_path,
    option_sources,
    options,
    packaged_config_dir,
)
from biorag.errors import ConfigError

MYTASK = """\
# biorag experiment run arm=base model=fake task=mytask
name: mytask
description: my own task, next to the packaged ones
loader: hpo-term-mcq
type: mcq
n: 4
seed: 3
continuation: text
corpus: hpo
metrics: [accuracy]
"""


@pytest.fixture
def elsewhere(fresh_cwd: Path) -> Path:
    """A fresh working directory with no configs of its own, and no config env vars."""
    return fresh_cwd


def _write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_task_in_dot_experiments_is_listed_beside_the_packaged_ones(elsewhere: Path, monkeypatch) -> None:
    mine = _write(elsewhere, "experiments/task/mytask.yaml", MYTASK)
    assert config_layers() == [packaged_config_dir(), (elsewhere / "experiments").resolve()]
    sources = option_sources("task")
    assert sources["mytask"] == mine.resolve()
    assert "medqa" in sources and sources["medqa"].is_relative_to(packaged_config_dir())
    from biorag.cli import app
    from biorag.cli.console import console

    monkeypatch.setattr(console, "_width", 200)  # restored to None: env-driven again
    r = CliRunner().invoke(app, ["ls", "tasks"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "mytask" in ln)
    assert "experiments/task/mytask.yaml" in line  # where it comes from
    assert "biorag" in next(ln for ln in r.output.splitlines() if "medqa " in ln)


def test_a_task_in_dot_experiments_composes_into_a_run(elsewhere: Path) -> None:
    from biorag.experiment.plan import plan

    _write(elsewhere, "experiments/task/mytask.yaml", MYTASK)
    _, cells, _ = plan(["arm=base", "model=fake", "task=mytask"])
    assert cells[0].task.name == "mytask" and cells[0].task.n == 4 and cells[0].task.seed == 3


def test_config_path_folders_layer_and_the_first_wins(elsewhere: Path, monkeypatch) -> None:
    a, b = elsewhere / "a", elsewhere / "b"
    _write(a, "task/mytask.yaml", MYTASK.replace("n: 4", "n: 7"))
    _write(b, "task/mytask.yaml", MYTASK)
    _write(b, "model/fake.yaml", "# biorag experiment run model=fake\nname: fake\nbackend: fake\nbatch_size: 3\n")
    monkeypatch.setenv("BIORAG_CONFIG_PATH", f"{a}:{b}")
    assert config_layers()[1:] == [b.resolve(), a.resolve()]  # lowest priority first
    assert option_path("task", "mytask") == (a / "task" / "mytask.yaml").resolve()
    cfg = compose("run", ["arm=base", "model=fake", "task=mytask"])
    assert cfg.task.n == 7  # from a, the first folder
    assert cfg.model.batch_size == 3  # b replaces the packaged fake.yaml
    assert "medqa" in options("task")  # the packaged ones are still there


def test_a_missing_config_path_folder_is_an_error(elsewhere: Path, monkeypatch) -> None:
    monkeypatch.setenv("BIORAG_CONFIG_PATH", str(elsewhere / "nope"))
    with pytest.raises(ConfigError, match=r"nope.*does not exist"):
        config_layers()


def test_load_option_by_name_or_path_with_close_matches(elsewhere: Path) -> None:
    from biorag.models.config import ModelConfig

    assert load_option("model", "smollm2", ModelConfig).backend == "hf"
    own = _write(elsewhere, "mine.yaml", "name: mine\nbackend: fake\n")
    assert load_option("model", str(own), ModelConfig).name == "mine"
    with pytest.raises(ConfigError, match="Did you mean 'smollm2'"):
        load_option("model", "smollm", ModelConfig)
    with pytest.raises(ConfigError, match="does not exist"):
        load_option("model", str(elsewhere / "gone.yaml"), ModelConfig)
    bad = _write(elsewhere, "bad.yaml", "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_option("model", str(bad), ModelConfig)


def test_a_schema_that_does_not_import_is_an_error(monkeypatch) -> None:
    from biorag import config

    monkeypatch.setitem(config.SCHEMAS, "_run_schema", "biorag.no_such_module:RunConfig")
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        compose("run", [])


def test_an_unknown_backend_fails_validation_before_any_model_loads() -> None:
    from biorag.cli import app

    r = CliRunner().invoke(app, ["experiment", "validate", "model=smollm2", "model.backend=hff",
                                 "task=hpo-term-mcq"])
    assert r.exit_code != 0
    assert "unknown model.backend 'hff'. Did you mean 'hf'?" in str(r.exception)
