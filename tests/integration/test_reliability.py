"""Nothing lost, nothing overwritten: safe names, one writer per artifact, torn-write repair,
clear errors before any model loads, nothing secret in MLflow. One test per finding of the
probe of issue 21."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biorag.atomic import check_name
from biorag.cli import app
from biorag.errors import BioragError, ConfigError
from biorag.indexing.build import build_index, load_build_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = ["corpus=sample", f"corpus.path={FIXTURES / 'corpora' / 'good.jsonl'}"]
BIORAG = [sys.executable, "-m", "biorag"]


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an embedder or a model fails the test: errors must come before."""
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr("biorag.indexing.build.load_embedder", refuse)
    monkeypatch.setattr("biorag.finetune.train.load_tokenizer", refuse)
    monkeypatch.setattr("biorag.models.loading.load_generator", refuse)


# -- names are names ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", "..", "../x", "../../x/evil", "/abs/olute", ".hidden", "a/b", "", "~me"])
def test_names_that_are_paths_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="give a folder name"):
        check_name(name, "index name", "root")
    assert check_name("hpo-minilm_v2.1", "index name") == "hpo-minilm_v2.1"


@pytest.mark.parametrize("name", [".", "..", "../../x/evil", "/tmp/abs"])
def test_build_and_finetune_refuse_path_names_before_any_work(name, tmp_path, monkeypatch) -> None:
    _no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["index", "build", *CORPUS, f"name={name}"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "give a folder name" in str(r.exception) and "root=FOLDER" in str(r.exception)
    r = runner.invoke(app, ["finetune", "model=smollm2", "data=hpo-mini", f"name={name}"])
    assert r.exit_code != 0 and "adapter name" in str(r.exception) and "output_dir=FOLDER" in str(r.exception)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*"))


def test_a_users_folder_in_the_way_of_an_index_survives(tmp_path, monkeypatch) -> None:
    _no_model(monkeypatch)
    mine = Path(os.environ["BIORAG_INDEX_DIR"]) / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(BioragError, match=r"refusing to replace .*mine: it is a folder without manifest\.json"):
        build_index(load_build_config([*CORPUS, "name=mine"]))
    assert (mine / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in mine.parent.iterdir()) == ["mine"]


@pytest.mark.parametrize("foreign", [{"name": "my web app", "icons": []}, "not json", {"fingerprint": "x"}])
def test_a_folder_with_another_kind_of_manifest_survives(foreign, monkeypatch) -> None:
    """A web app's manifest.json (or an adapter's, or a broken one) does not make a folder an
    index that a build may replace."""
    _no_model(monkeypatch)
    app_dir = Path(os.environ["BIORAG_INDEX_DIR"]) / "webapp"
    app_dir.mkdir(parents=True)
    (app_dir / "manifest.json").write_text(foreign if isinstance(foreign, str) else json.dumps(foreign))
    (app_dir / "index.html").write_text("<html></html>")
    with pytest.raises(BioragError, match="is not a biorag index manifest"):
        build_index(load_build_config([*CORPUS, "name=webapp"]))
    assert (app_dir / "index.html").is_file()


def test_a_users_folder_in_the_way_of_an_adapter_survives(tmp_path, monkeypatch) -> None:
    from biorag.finetune.config import load_finetune_config
    from biorag.finetune.run import run_finetune

    _no_model(monkeypatch)
    mine = tmp_path / "adapters" / "mine"
    mine.mkdir(parents=True)
    (mine / "weights.bin").write_bytes(b"precious")
    cfg = load_finetune_config(["model=smollm2", "data=hpo-mini", "name=mine", f"output_dir={tmp_path / 'adapters'}"])
    with pytest.raises(BioragError, match="refusing to replace"):
        run_finetune(cfg)
    assert (mine / "weights.bin").read_bytes() == b"precious"


def test_a_report_is_not_written_into_a_users_folder(tmp_path) -> None:
    from biorag.report.render import write_report

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1")
    with pytest.raises(BioragError, match="not empty and not a biorag report folder"):
        write_report(None, mine)  # refused before the report is looked at
    assert (mine / "thesis.tex").read_text() == "chapter 1"


# -- one writer per artifact ----------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "BIORAG_PROGRESS": "0", "BIORAG_CPU_BF16": "0", "HF_HUB_OFFLINE": "1"}
    env.update({"BIORAG_INDEX_DIR": str(tmp_path / "indexes"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"})
    return env


def _run_all(commands: list[list[str]], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in commands]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return out


def test_two_builds_of_one_name_at_once_end_with_one_correct_index(tmp_path) -> None:
    from biorag.indexing.manifest import IndexManifest

    cmd = [*BIORAG, "index", "build", *CORPUS, "name=same"]
    results = _run_all([cmd, cmd], tmp_path)
    for r in results:
        assert r.returncode == 0, r.stdout[-2000:]
    assert sum("up to date" in r.stdout for r in results) == 1  # the second waited, then found it
    root = tmp_path / "indexes"
    assert IndexManifest.read(root / "same").counts.chunks == 4  # good.jsonl: 4 documents kept
    assert not [p for p in root.iterdir() if p.name.endswith(".partial")]


def test_parallel_runs_on_a_fresh_store_all_succeed_and_identical_ones_do_not_duplicate(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    run = [*BIORAG, "experiment", "run", "arm=base", "model=fake", "task=hpo-term-mcq",
           "task.scoring=loglikelihood", f"cache_dir={tmp_path / 'cache'}", "experiment=par"]
    results = _run_all([[*run, "task.n=4"], [*run, "task.n=5"], [*run, "task.n=6"], [*run, "task.n=6"]],
                       tmp_path)
    for r in results:
        assert r.returncode == 0, r.stdout[-3000:]
    client = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("par")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 3 and len(children) == 3  # the two identical invocations share theirs
    caches = sorted((tmp_path / "cache" / "predictions").glob("*.jsonl"))
    lines = sorted(len(p.read_text().splitlines()) for p in caches)
    assert lines == [4, 5, 6]  # each example cached once


# -- torn writes ----------------------------------------------------------------------------


def test_a_torn_cache_line_is_repaired_once_and_the_file_stops_growing(tmp_path) -> None:
    from biorag.experiment.cache import PredictionCache
    from biorag.experiment.runner import run_experiment

    over = ["arm=base", "model=fake", "task=hpo-term-mcq", "task.n=6", "task.scoring=loglikelihood",
            f"cache_dir={tmp_path / 'cache'}", "experiment=torn", "batch_size=2"]
    first = run_experiment(over)
    cache = next((tmp_path / "cache" / "predictions").glob("*.jsonl"))
    whole = cache.read_bytes()
    lines = whole.splitlines(keepends=True)
    cache.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    assert len(PredictionCache(cache).load()) == 5  # the torn record is not taken
    quality = lambda cell: {k: v for k, v in cell.metrics.items() if "accuracy" in k}  # noqa: E731
    second = run_experiment(over)
    assert second.cells[0].resumed == 5 and quality(second.cells[0]) == quality(first.cells[0])
    repaired = cache.read_bytes()
    records = [json.loads(x) for x in repaired.splitlines()]  # every line whole again
    assert [r["id"] for r in records] == [json.loads(x)["id"] for x in lines]  # the torn one redone
    assert repaired.endswith(b"\n") and abs(len(repaired) - len(whole)) < 40  # not a glued line
    third = run_experiment(over)
    assert third.cells[0].resumed == 6 and cache.read_bytes() == repaired  # nothing appended


def test_a_whole_last_record_that_only_lost_its_newline_is_kept(tmp_path) -> None:
    from biorag.experiment.cache import PredictionCache

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')  # killed between the record and its newline
    cache = PredictionCache(path)
    assert sorted(cache.load()) == ["a", "b"]
    cache.append([{"id": "c"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'


def test_a_line_glued_by_an_old_kill_is_skipped_not_a_stop(tmp_path) -> None:
    from biorag.experiment.cache import PredictionCache

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "tor{"id": "c"}\n{"id": "d"}\n')
    assert sorted(PredictionCache(path).load()) == ["a", "d"]  # d is not lost behind the glued line


# -- bad input: a message, before any model loads -------------------------------------------


@pytest.mark.parametrize(("override", "message"), [
    ("chunking.chunk_size=0", "chunking.chunk_size must be at least 1"),
    ("chunking.chunk_overlap=300", "chunking.chunk_overlap must be in [0, chunk_size=200)"),
    ("corpus.limit=-3", "corpus.limit must be at least 1"),
    ("corpus.limit=abc", "corpus.limit: Value 'abc' of type 'str' could not be converted to Integer"),
    ("shard_size=0", "shard_size must be at least 1"),
    ("index.type=bogus", "unknown index type 'bogus'"),
    ("index.nprobe=0", "index.nprobe must be at least 1"),
])
def test_bad_build_values_are_messages_before_the_embedder_loads(override, message, monkeypatch) -> None:
    _no_model(monkeypatch)
    r = CliRunner().invoke(app, ["index", "build", *CORPUS, override])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError), r.output
    assert message in str(r.exception)


def test_a_build_that_fails_on_its_input_leaves_no_partial_folder(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BioragError, match="gave no chunks"):
        build_index(load_build_config(["corpus=sample", f"corpus.path={empty}", "name=empty"]))
    root = Path(os.environ["BIORAG_INDEX_DIR"])
    assert not [p for p in root.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("kind", ["folder", "not-a-database"])
def test_a_broken_store_is_a_message_before_any_model_loads(kind, tmp_path, monkeypatch) -> None:
    from biorag.experiment.runner import run_experiment
    from biorag.finetune.config import load_finetune_config
    from biorag.finetune.run import run_finetune
    from biorag.tracking import runs

    _no_model(monkeypatch)
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    if kind == "folder":
        db.mkdir()
    else:
        db.write_text("these are my notes, not a database\n" * 10)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(runs, "_INITIALISED", set())
    expected = "is a folder" if kind == "folder" else "is not a SQLite database"
    with pytest.raises(BioragError, match=expected):
        run_experiment(["arm=base", "model=fake", "task=hpo-term-mcq", "task.n=2"],
                       loader=lambda *_: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(BioragError, match=expected):  # before the fine-tuning data is read
        run_finetune(load_finetune_config(["model=smollm2", "data=hpo-mini", f"output_dir={tmp_path}"]))
    assert not list(tmp_path.glob(".*partial"))


def test_more_bad_values_are_messages(tmp_path, monkeypatch) -> None:
    from biorag.atomic import artifact_lock
    from biorag.experiment.plan import plan
    from biorag.report.study import read_study

    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        plan(["arm=base", "model=fake", "task=hpo-term-mcq", "batch_size=0"])
    with pytest.raises(ConfigError, match="cannot read the override"):
        plan(["arm=base", "model.base_url=http://h?a=b"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.raises(BioragError, match="no MLflow store at"):
        read_study()
    assert not (tmp_path / "none").exists()  # reading does not create a store
    monkeypatch.setenv("BIORAG_LOCK_TIMEOUT", "soon")
    target = tmp_path / "x"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from biorag.atomic import artifact_lock\n"
        f"with artifact_lock(Path({str(target)!r}), 'index'):\n    print('held', flush=True); time.sleep(20)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="must be a number of seconds"), artifact_lock(target, "index"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_says_that_the_same_command_resumes(monkeypatch, capsys) -> None:
    import biorag.cli as cli

    def interrupted() -> None:
        raise SystemExit(130)  # what Typer raises on Ctrl-C

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 130
    assert "run the same command again to resume" in capsys.readouterr().err


# -- nothing secret in MLflow ---------------------------------------------------------------


def test_credentials_are_scrubbed_from_what_mlflow_logs(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from biorag.experiment.runner import run_experiment
    from biorag.tracking.runs import as_params, scrub

    assert scrub("https://bob:hunter2@llm.example.org/v1") == "https://***@llm.example.org/v1"
    assert scrub("key sk-proj-abcdefghijklmnop and hf_abcdefghijklmnopqrstuvw") == "key sk-*** and hf_***"
    assert scrub("url?token=abc123&x=1 Authorization: Bearer abcdefghijkl") == \
        "url?token=***&x=1 Authorization: Bearer ***"
    assert scrub("model=smollm2 task.n=5 max_new_tokens=16") == "model=smollm2 task.n=5 max_new_tokens=16"
    assert as_params({"u": "http://a:b@h"}) == {"u": "http://***@h"}

    secret_url = "https://bob:hunter2@llm.example.org/v1?api_key=sk-abcdefghijklmnop"
    result = run_experiment(["arm=base", "model=fake", "task=hpo-term-mcq", "task.n=2",
                             "task.scoring=loglikelihood", f"model.base_url='{secret_url}'",
                             f"cache_dir={tmp_path}", "experiment=secret"])
    import mlflow

    client = MlflowClient()
    logged = json.dumps([client.get_run(result.parent_run_id).data.params,
                         client.get_run(result.cells[0].run_id).data.params])
    # the artifacts too: the resolved config and the invocation's command line
    for run_id, name in ((result.cells[0].run_id, "config.yaml"), (result.parent_run_id, "invocation.json")):
        logged += Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name,
                                                           dst_path=str(tmp_path / run_id))).read_text()
    assert "hunter2" not in logged and "sk-abcdefghijklmnop" not in logged
    assert "https://***@llm.example.org/v1?api_key=***" in logged


def test_a_second_writer_is_told_who_holds_the_lock(tmp_path, monkeypatch) -> None:
    import time

    from biorag.atomic import artifact_lock

    target = tmp_path / "indexes" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from biorag.atomic import artifact_lock\n"
        f"with artifact_lock(Path({str(target)!r}), 'index'):\n"
        "    print('held', flush=True); time.sleep(20)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("BIORAG_LOCK_TIMEOUT", "0.5")
        started = time.monotonic()
        with pytest.raises(BioragError, match=rf"still being written by process {holder.pid} on "), \
                artifact_lock(target, "index"):
            pass
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    with artifact_lock(target, "index"):  # free again once the holder is gone
        pass


def test_the_stores_locks_are_one_folder_that_git_ignores(tmp_path) -> None:
    """The locks beside a SQLite store in a user's working folder (issue 39): one hidden
    folder with its own .gitignore, not `.mlflow.db.lock` and `.mlflow.db.invocations/`
    showing up in `git status`."""
    import shutil
    import subprocess

    from biorag.atomic import artifact_lock
    from biorag.tracking.runs import invocation_lock_folder, store_lock

    if shutil.which("git") is None:
        pytest.skip("needs git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with store_lock(uri), artifact_lock(invocation_lock_folder(uri, tmp_path / "cache") / "abc", "experiment run"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".git") == [".mlflow.db.locks"]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
