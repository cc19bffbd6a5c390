"""Bad input to `experiment run` fails before anything is logged or loaded; a remote model
is asked whether it is there before any run opens, and runs with no internet."""

from __future__ import annotations

import os
import socket
import time

import mlflow
import pytest
from tests.helpers.openai_server import CHAT_USAGE, FakeOpenAI, fake_openai
from tests.helpers.vllm_server import free_port

from biorag.errors import BioragError
from biorag.experiment.plan import plan
from biorag.experiment.runner import run_experiment


def test_missing_task_file_fails_before_any_run_is_logged(tmp_path) -> None:
    loaded = []

    def loader(cfg, adapter):  # pragma: no cover - must never be called
        loaded.append(cfg.name)
        raise AssertionError("a model was loaded")

    with pytest.raises(BioragError, match=r"mednli: task data: task.path \S*mli_test_v1\.jsonl does not exist"):
        run_experiment(
            ["arm=base", "model=fake", "task=hpo-term-mcq,mednli", "task.n=4",
             f"cache_dir={tmp_path / 'c'}", "experiment=preflight"],
            loader=loader,
        )
    assert loaded == []
    # the first cell (hpo-term-mcq) is fine, yet nothing of this invocation reached MLflow
    assert mlflow.MlflowClient().get_experiment_by_name("preflight") is None


def test_dorfner2024_study_plans_the_headline_pairs() -> None:
    experiment, cells, baseline = plan(["study=dorfner2024"])
    assert experiment == "biorag-dorfner2024" and baseline == "base"
    models = {c.model.name: c.model for c in cells}
    pairs = {(m.name, m.counterpart) for m in models.values()}
    assert ("llama3-8b-instruct", "openbiollm-8b") in pairs
    assert ("llama3-70b-instruct", "openbiollm-70b") in pairs
    assert {m.family for m in models.values()} == {"general", "biomedical"}
    for m in models.values():  # every model's counterpart is in the study, of the other family
        assert models[m.counterpart].family != m.family
    tasks = {c.task.name for c in cells}
    assert {"nejm-case-challenge", "jama-clinical-challenge", "mednli", "longhealth"} <= tasks
    # multiple-choice tasks under both protocols, the others once
    settings = {(c.task.name, c.task.protocol) for c in cells}
    assert len(cells) == len(models) * len(settings) and len(settings) == len(tasks) + 3


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network but 127.0.0.1: a connection anywhere else fails the test."""
    connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"connection to {address} attempted")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


REMOTE = ["arm=base", "model=openai-compatible", "model.id=served-model", "task=hpo-term-mcq",
          "task.n=3", "experiment=remote"]


def test_openai_compatible_runs_offline_against_a_local_server(tmp_path, loopback_only, monkeypatch) -> None:
    """The shipped config with only model.base_url set: no tokenizer is fetched, the server is
    asked first, and the cell scores by echo and generates through /chat/completions."""
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under ./mlruns
    with fake_openai() as url:
        result = run_experiment([*REMOTE, f"model.base_url={url}", f"cache_dir={tmp_path / 'c'}"])
        asked = [path for path, _, _ in FakeOpenAI.seen]
    assert asked[0] == "GET /v1/models"
    assert asked.count("/v1/chat/completions") == 3 and "/v1/completions" in asked
    (cell,) = result.cells
    assert cell.n == 3 and cell.name == "base/openai-compatible/hpo-term-mcq"
    run = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_run(cell.run_id)
    assert run.data.tags["versions.token_counts"].startswith("approximate")
    assert run.data.tags["versions.api"] == "chat"
    # the prompts' token counts are the server's (usage), not 4 characters a token
    tokens = run.data.metrics["hpo-term-mcq/tokens"]
    assert tokens == 3 * (CHAT_USAGE["prompt_tokens"] + CHAT_USAGE["completion_tokens"])


def test_an_unreachable_server_fails_before_any_run_is_logged(tmp_path, loopback_only, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BioragError) as e:
        run_experiment([*REMOTE, f"model.base_url={url}", f"cache_dir={tmp_path / 'c'}"])
    assert time.monotonic() - started < 15
    message = str(e.value)
    assert f"no answer from {url}/models" in message and "'openai-compatible' (served-model)" in message
    assert "$OPENAI_BASE_URL" in message and "$OPENAI_API_KEY" in message
    store = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    assert store.get_experiment_by_name("remote") is None and not store.search_experiments(
        filter_string="name != 'Default'")
    assert not (tmp_path / "c").exists()  # nothing prepared either
