"""engine=ray: embedding on a local Ray (2 CPUs) writes the single-process build's index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from biorag.errors import BioragError, ConfigError
from biorag.indexing.build import build_index, load_build_config

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    from biorag.indexing.ray_engine import start_ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def _corpus(tmp_path: Path) -> list[str]:
    corpus = tmp_path / "notes.jsonl"
    topics = ["seizure", "fever", "asthma", "anaemia", "fracture", "migraine", "eczema", "sepsis"]
    # texts of unlike lengths: the groups a shard is encoded in pad differently
    corpus.write_text("".join(json.dumps({"id": f"n{i}", "title": f"{topics[i % 8]} note {i}",
                                          "text": f"Patient {i} presents with {topics[i % 8]}. " * (1 + i % 5)})
                              + "\n" for i in range(120)))
    return ["corpus=sample", f"corpus.path={corpus}", "index.bm25=false", f"root={tmp_path}", "shard_size=50"]


def _vectors(path: Path) -> np.ndarray:
    index = faiss.read_index(str(path / "index.faiss"))
    return index.reconstruct_n(0, index.ntotal)


def test_ray_engine_gives_the_single_process_vectors_and_resumes_locally(tmp_path: Path) -> None:
    common = _corpus(tmp_path)
    local = build_index(load_build_config([*common, "name=local"]))
    on_ray = build_index(load_build_config([*common, "name=ray", "engine=ray"]))
    assert on_ray.manifest.counts.shards == 3 and on_ray.manifest.embedder["engine"] == "ray"
    assert local.manifest.embedder["engine"] == "local"
    assert on_ray.manifest.fingerprint == local.manifest.fingerprint
    # the same groups through the same model and dtype (bf16 here, where the CPU has it): bit for bit
    assert np.array_equal(_vectors(on_ray.path), _vectors(local.path))
    pd.testing.assert_frame_equal(pd.read_parquet(on_ray.path / "chunks.parquet"),
                                  pd.read_parquet(local.path / "chunks.parquet"))
    again = build_index(load_build_config([*common, "name=local", "engine=ray"]))
    assert again.up_to_date  # the engine is not part of what is built

    def kill_after_first(shard_no: int) -> None:
        if shard_no == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(load_build_config([*common, "name=resumed", "engine=ray"]), on_shard_done=kill_after_first)
    resumed = build_index(load_build_config([*common, "name=resumed"]))
    assert resumed.resumed_shards == 1 and resumed.manifest.fingerprint == local.manifest.fingerprint
    assert np.array_equal(_vectors(resumed.path), _vectors(local.path))


def test_an_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"engine.*ray"):
        load_build_config(["engine=rey"])
    with pytest.raises(ConfigError, match="ray_workers"):
        load_build_config(["ray_workers=0"])


def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from biorag.indexing.ray_engine import start_ray

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    with pytest.raises(BioragError, match=r"pip install 'biorag\[ray\]'"):
        start_ray()
