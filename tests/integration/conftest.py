"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest
from tests.helpers.study import TinyStudy, config_dir_with_fake_bio, run_tiny_study, study_env


@pytest.fixture(scope="session")
def tiny_study_root(tmp_path_factory):
    """A tiny fake-model study (2 arms x 2 models x 2 tasks), run once per session, in its
    own folder (store, artifacts, index, configs)."""
    root = tmp_path_factory.mktemp("tiny-study")
    config_dir_with_fake_bio(root / "experiments")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in study_env(root).items():
            mp.setenv(k, v)
        mp.chdir(root)  # MLflow puts a SQLite store's artifacts under ./mlruns
        study = run_tiny_study(root)
    return root, study


@pytest.fixture
def tiny_study(tiny_study_root, monkeypatch) -> TinyStudy:
    """The session's tiny study, with this test's environment pointed at its store."""
    root, study = tiny_study_root
    for k, v in study_env(root).items():
        monkeypatch.setenv(k, v)
    return study
