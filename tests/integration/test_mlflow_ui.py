"""The MLflow UI in a real browser: `biorag ui`'s server over a tiny study's store, opened in
headless Chromium (Debian's `chromium`, driven by Playwright with that executable; no browser
is downloaded). Skipped, with the reason, where Chromium or Playwright is missing.

Screenshots go to $BIORAG_UI_SCREENSHOTS, else <tmp>/biorag-ui-test/ (printed by the test).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
]
TIMEOUT_MS = 90_000  # the first load of MLflow's single-page app takes ~10 s on two CPUs


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")


@pytest.fixture
def browser(tmp_path):
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'biorag[dev]')")
    with sync_api.sync_playwright() as p:
        # a persistent context is how Playwright takes a fresh --user-data-dir of our own
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def shots() -> Path:
    folder = Path(os.environ.get("BIORAG_UI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "biorag-ui-test")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_experiment_page_lists_child_runs_and_compare_shows_them(tiny_study, browser, shots) -> None:
    from biorag.tracking.ui import start_ui

    client = MlflowClient()
    exp_id = client.get_experiment_by_name(tiny_study.experiment).experiment_id
    task = "hpo-term-mcq"
    children = [n for n in tiny_study.cell_names if n.endswith(f"/{task}")]
    with start_ui(tiny_study.tracking_uri, port=0) as server:
        assert server.host == "127.0.0.1"
        assert server.runs_url() == f"{server.url}/#/experiments/{exp_id}/runs"
        page = browser
        page.goto(server.runs_url())
        parent_name = client.get_run(tiny_study.parent_run_id).data.tags["mlflow.runName"]
        page.get_by_text(parent_name).first.wait_for()
        # child runs are listed under their parent: expand it
        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
        for name in tiny_study.cell_names:  # rendered by JavaScript once the runs are fetched
            page.get_by_text(name, exact=True).first.wait_for(state="attached")
        page.screenshot(path=str(shots / "experiment-runs.png"))

        # select one task's cells and compare them: the same param and metric names side by side
        for name in children:
            row = page.locator(".ag-row", has=page.get_by_text(name, exact=True))
            row.locator("input[type=checkbox]").first.check()
        page.get_by_role("button", name="Compare").click()
        page.wait_for_url("**/compare-runs**")
        for name in children:
            page.get_by_text(name, exact=True).first.wait_for(state="attached")
        run = client.search_runs([exp_id], f"tags.`mlflow.runName` = '{children[0]}'")[0]
        page.get_by_text(f"{task}/accuracy_ll_norm", exact=True).first.wait_for(state="attached")
        # one row per name, a column per run; the tables are virtualised, so only the names that
        # sort first are in the page without scrolling: the quality metrics and the arm params
        content = page.content()
        quality = [k for k in run.data.metrics if k.startswith(f"{task}/accuracy")]
        assert len(quality) == 9, sorted(run.data.metrics)
        for key in [*quality, "arm.name", "arm.retrieval", "arm.retriever.k"]:
            assert key in content, key
        page.screenshot(path=str(shots / "compare-runs.png"))
        page.get_by_text(f"{task}/accuracy_ll_norm", exact=True).last.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "compare-metrics.png"))

        # the predictions table opens from the run's artifacts
        page.goto(f"{server.url}/#/experiments/{exp_id}/runs/{run.info.run_id}/artifacts")
        page.get_by_text("predictions.json", exact=True).first.click()
        page.get_by_text("example_id", exact=True).first.wait_for()
        page.get_by_text("prompt_hash", exact=True).first.wait_for()
        page.screenshot(path=str(shots / "predictions-table.png"))
    print(f"screenshots in {shots}/")


def test_ui_refuses_a_busy_port_and_points_at_a_running_server(monkeypatch) -> None:
    import socket

    from typer.testing import CliRunner

    from biorag.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code != 0 and "in use" in str(result.exception)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    result = CliRunner().invoke(app, ["ui"])
    assert result.exit_code == 0 and "http://127.0.0.1:5999" in result.output
