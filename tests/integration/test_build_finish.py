"""A build stopped at any step of its finish (after assembly: dropping the state and the shards,
the swap) is finished by the next run of the same command, without embedding again; a shard
that went missing is embedded again instead of failing (issue 39, findings 1 and 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from biorag.indexing import build as build_mod
from biorag.indexing.build import STATE_FILE, build_index, load_build_config


class Killed(BaseException):
    """Stands for the process dying at that point: nothing after it runs."""


def _corpus(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "notes.jsonl"
    with path.open("w") as f:
        for i in range(20):
            f.write(json.dumps({"id": f"n{i}", "title": f"note {i}", "text": f"Patient {i} has fever {i % 5}."}) + "\n")
    return path


def _cfg(tmp_path: Path, name: str = "ix", *extra: str):
    return load_build_config(["corpus=sample", f"corpus.path={_corpus(tmp_path)}", "shard_size=8",
                              "index.bm25=false", f"name={name}", f"root={tmp_path / 'root'}", *extra])


def _vectors(path: Path) -> np.ndarray:
    index = faiss.read_index(str(path / "index.faiss"))
    return index.reconstruct_n(0, index.ntotal)


def _embedded(monkeypatch) -> list[int]:
    """Records every shard embedded from now on."""
    shards: list[int] = []
    real = build_mod.write_shard
    monkeypatch.setattr(build_mod, "write_shard", lambda p, k, *a: shards.append(k) or real(p, k, *a))
    return shards


def _kill_at(monkeypatch, module, name: str, after: int = 0) -> None:
    """Kill the build at its `after`-th+1 call of module.name."""
    real, calls = getattr(module, name), []

    def dying(*a, **kw):
        calls.append(1)
        if len(calls) > after:
            raise Killed
        return real(*a, **kw)
    monkeypatch.setattr(module, name, dying)


@pytest.mark.parametrize("point", ["state dropped", "shards dropped", "swap"])
def test_a_build_stopped_in_its_finish_is_finished_without_embedding_again(tmp_path, monkeypatch, point):
    cfg = _cfg(tmp_path)
    final, partial = tmp_path / "root" / "ix", tmp_path / "root" / ".ix.partial"
    with monkeypatch.context() as m:
        if point == "state dropped":  # the old order's window: shards gone, state still counting them
            _kill_at(m, Path, "unlink")
        elif point == "shards dropped":
            _kill_at(m, build_mod.shutil, "rmtree")
        else:
            _kill_at(m, build_mod, "swap_into_place")
        with pytest.raises(Killed):
            build_index(cfg)
    assert not final.exists() and (partial / "manifest.json").is_file()
    if point == "state dropped":  # what the old order left: a state counting shards that are gone
        (partial / STATE_FILE).write_text(json.dumps({"fingerprint": "x", "shards_done": 3}))
    embedded = _embedded(monkeypatch)
    done = build_index(cfg)
    assert embedded == [] and not done.up_to_date and (final / "manifest.json").is_file()
    assert not partial.exists()
    assert done.manifest.counts.chunks == 20 and build_index(cfg).up_to_date


def test_a_swap_stopped_between_its_renames_keeps_the_new_index_and_no_old_copy(tmp_path, monkeypatch):
    root = tmp_path / "root"
    build_index(_cfg(tmp_path))  # an earlier index of this name
    cfg = _cfg(tmp_path, "ix", "chunking.chunk_size=64")  # other settings: a rebuild

    def half_swap(stage, final, *a):
        os.replace(final, final.with_name(f".{final.name}.old-123"))
        raise Killed  # died before the new index was renamed into place

    with monkeypatch.context() as m:
        m.setattr(build_mod, "swap_into_place", half_swap)
        with pytest.raises(Killed):
            build_index(cfg)
    assert not (root / "ix").exists() and (root / ".ix.old-123").is_dir()
    embedded = _embedded(monkeypatch)
    done = build_index(cfg)
    assert embedded == [] and done.manifest.chunking["chunk_size"] == 64
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == ["ix"]


def test_a_missing_shard_is_embedded_again_and_the_index_is_the_same(tmp_path, monkeypatch):
    reference = build_index(_cfg(tmp_path / "a"))
    cfg = _cfg(tmp_path / "b")

    def stop(shard_no: int) -> None:
        if shard_no == 1:
            raise Killed

    with pytest.raises(Killed):
        build_index(cfg, on_shard_done=stop)
    partial = tmp_path / "b" / "root" / ".ix.partial"
    (partial / "shards" / "00001.npy").unlink()  # state counts two shards; one is gone
    embedded = _embedded(monkeypatch)
    done = build_index(cfg)
    assert embedded == [1, 2]
    np.testing.assert_array_equal(_vectors(done.path), _vectors(reference.path))
