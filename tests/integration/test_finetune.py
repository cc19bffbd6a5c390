"""`biorag finetune` on a tiny random model: adapter folder, manifest, MLflow run, reload,
resume after a kill, base-model checks, the lora arm, and QLoRA on a GPU."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tests.helpers.tiny_model import SENTENCES, build_tiny_model

from biorag.contamination import AuditSettings
from biorag.corpora.training import DataConfig
from biorag.errors import BioragError
from biorag.finetune.config import FinetuneConfig, LoraSettings, TrainSettings
from biorag.finetune.run import run_finetune
from biorag.models.config import ModelConfig

STEPS, BATCH, SEQ = 4, 2, 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ft")


@pytest.fixture(scope="module")
def tiny_dir(workdir: Path) -> Path:
    return build_tiny_model(workdir / "tiny")


@pytest.fixture(scope="module")
def corpus_yaml(workdir: Path) -> Path:
    rows = workdir / "notes.jsonl"
    with rows.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"id": f"n{i}", "text": f"{SENTENCES[i % len(SENTENCES)]} Note {i}."}) + "\n")
    path = workdir / "notes.yaml"
    path.write_text(f"name: notes\nloader: jsonl\npath: {rows}\ntitle_field: null\n")
    return path


@pytest.fixture(scope="module")
def mlflow_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"  # one store for the module: creating one takes seconds


@pytest.fixture
def shared_mlflow(monkeypatch: pytest.MonkeyPatch, mlflow_uri: str) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return mlflow_uri


def _cfg(tiny_dir: Path, corpus_yaml: Path, out: Path, **train) -> FinetuneConfig:
    settings = {"seq_len": SEQ, "batch_size": BATCH, "max_steps": STEPS, "save_steps": 2,
                "learning_rate": 5e-3, "eval_fraction": 0.1, **train}
    return FinetuneConfig(
        model=ModelConfig(name="tiny", id=str(tiny_dir)),
        data=DataConfig(name="notes", corpora=[str(corpus_yaml)]),
        name="tiny-notes", output_dir=str(out), experiment="ft-test",
        lora=LoraSettings(r=4, alpha=8), train=TrainSettings(**settings), audit=AuditSettings(tasks=[]),
    )


@pytest.fixture(scope="module")
def trained(tiny_dir: Path, corpus_yaml: Path, workdir: Path, mlflow_uri: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        cfg = _cfg(tiny_dir, corpus_yaml, workdir / "adapters")
        return cfg, run_finetune(cfg)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_folder_is_self_describing(trained, tiny_dir: Path) -> None:
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS,
    )

    _, result = trained
    files = {p.name for p in result.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= files
    assert not list(result.path.parent.glob(".*partial"))  # checkpoints cleaned up
    m = json.loads((result.path / "manifest.json").read_text())
    assert m["base_model"]["id"] == str(tiny_dir) and m["base_model"]["name"] == "tiny"
    assert m["lora"]["target_modules"] == sorted(PEFT_TARGETS["llama"])  # peft's own mapping
    r = m["results"]
    assert r["steps"] == STEPS and r["resumed_from_step"] == 0
    assert r["tokens"] == STEPS * BATCH * SEQ  # packed blocks: no padding
    assert r["tokens_this_session"] == r["tokens"]  # never interrupted: one session saw them all
    assert r["tokens_per_second"] > 0 and r["wall_seconds"] >= r["train_seconds"] > 0
    assert r["eval_loss"] is not None and 0 < r["eval_loss"] < 20
    assert [s for s, _ in r["loss_history"]] == list(range(1, STEPS + 1))
    assert m["data"]["objective"] == "pretrain" and len(m["data"]["fingerprint"]) == 16
    assert m["data"]["train_blocks"] > 0 and m["data"]["eval_blocks"] > 0
    assert m["train"]["learning_rate"] == 5e-3 and m["lora"]["r"] == 4
    assert m["fingerprint"] == result.manifest["fingerprint"]


def test_training_is_its_own_mlflow_run(trained, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    _, result = trained
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(result.manifest["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["biorag.kind"] == "finetune" and run.data.tags["adapter"] == "tiny-notes"
    assert run.data.params["lora.r"] == "4" and run.data.params["train.max_steps"] == str(STEPS)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(h.step for h in history) == list(range(1, STEPS + 1))
    assert "eval_loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/manifest.json" in artifacts and "adapter/adapter_model.safetensors" in artifacts


def test_saved_adapter_reloads_with_identical_logits(trained, tiny_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from biorag.models.loading import load_hf

    _, result = trained
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3, 250]])
    trained_logits = _logits(result.model, ids)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), result.path)
    assert torch.equal(_logits(reloaded, ids), trained_logits)
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_dir), ids)
    assert not torch.allclose(base, trained_logits, atol=1e-4)  # the training changed something
    merged, _ = load_hf(ModelConfig(name="tiny", id=str(tiny_dir)), str(result.path))  # what arms run
    assert torch.allclose(_logits(merged, ids), trained_logits, atol=1e-5)


def test_same_settings_again_is_a_no_op(trained, shared_mlflow) -> None:
    cfg, result = trained
    again = run_finetune(cfg)
    assert again.up_to_date and again.manifest["fingerprint"] == result.manifest["fingerprint"]
    assert again.model is None  # nothing loaded or trained


class _Killed(Exception):
    pass


def _kill_at(step: int):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Killed(f"killed at step {step}")

    return Kill()


def test_killed_run_resumes_from_its_last_checkpoint(trained, tiny_dir, corpus_yaml, tmp_path, shared_mlflow) -> None:
    from safetensors.torch import load_file

    cfg = _cfg(tiny_dir, corpus_yaml, tmp_path / "adapters")
    with pytest.raises(_Killed):
        run_finetune(cfg, callbacks=[_kill_at(4)])  # steps 1-3 logged, the checkpoint at step 2
    partial = tmp_path / "adapters" / ".tiny-notes.partial"
    assert (partial / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (tmp_path / "adapters" / "tiny-notes").exists()  # no half-made adapter folder
    state = json.loads((partial / "finetune-state.json").read_text())
    first_run, first_wall = state["run_id"], state["wall_seconds"]
    assert set(state["train_seconds_at"]) == {"2"} and first_wall > 0

    result = run_finetune(cfg)
    r = result.manifest["results"]
    assert r["resumed_from_step"] == 2 and r["steps"] == STEPS
    # figures over the whole adapter, not the last session: tokens, loss, time
    assert r["tokens"] == STEPS * BATCH * SEQ and r["tokens_this_session"] == (STEPS - 2) * BATCH * SEQ
    _, straight = trained
    s = straight.manifest["results"]
    assert r["train_loss"] == pytest.approx(s["train_loss"], abs=2e-4)
    assert r["tokens"] == s["tokens"]
    assert r["wall_seconds"] == pytest.approx(first_wall + r["wall_seconds_this_session"], abs=0.02)
    assert r["train_seconds"] > r["train_seconds_this_session"] > 0
    assert result.manifest["mlflow"]["run_id"] == first_run  # the same MLflow run, continued
    from mlflow.tracking import MlflowClient

    history = MlflowClient().get_metric_history(first_run, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # one point per step
    # the resumed training ends where an uninterrupted one does (and a second kill, before any
    # checkpoint, is covered by test_killed_before_any_checkpoint_logs_each_step_once)
    _, straight = trained
    a = load_file(result.path / "adapter_model.safetensors")
    b = load_file(straight.path / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_adapter_on_another_base_is_an_error_naming_both(trained) -> None:
    from biorag.experiment.plan import plan
    from biorag.experiment.resources import resolve_adapter
    from biorag.finetune.adapters import check_base

    _, result = trained
    other = ModelConfig(name="bigger", id="org/bigger-model")
    with pytest.raises(BioragError) as e:
        check_base(result.path, result.manifest, other, "lora")
    assert "'tiny'" in str(e.value) and "'bigger'" in str(e.value) and "org/bigger-model" in str(e.value)
    _, cells, _ = plan(["arm=lora", "model=fake", f"arm.adapter={result.path}"])
    with pytest.raises(BioragError, match=r"'tiny'.*'fake'"):
        resolve_adapter(cells[0])
    # the same weights under another config name are fine
    check_base(result.path, result.manifest, ModelConfig(name="alias", id=result.manifest["base_model"]["id"]))


def test_lora_arm_runs_the_adapter_with_the_hf_backend(trained, tiny_dir: Path, tmp_path: Path, shared_mlflow) -> None:
    from mlflow.tracking import MlflowClient

    from biorag.experiment.runner import run_experiment

    _, result = trained
    out = run_experiment(["arm=lora", "model=fake", "model.backend=hf", f"model.id={tiny_dir}",
                          "model.name=tiny", f"arm.adapter={result.path}", "task=hpo-term-mcq", "task.n=3",
                          f"cache_dir={tmp_path / 'cache'}", "experiment=lora-arm"])
    (cell,) = out.cells
    assert cell.arm == "lora" and cell.n == 3
    run = MlflowClient().get_run(cell.run_id)
    assert run.data.tags["adapter_fingerprint"] == result.manifest["fingerprint"]
    assert run.data.params["arm.adapter"] == str(result.path)


def test_rag_arm_logs_the_audit_of_its_index(tmp_path: Path) -> None:
    """An index made of the task items' own definitions: the rag cell's run says so."""
    from mlflow.tracking import MlflowClient

    from biorag.experiment.runner import run_experiment
    from biorag.indexing.build import build_index, load_build_config
    from biorag.tasks import load_examples, load_task_config

    examples = load_examples(load_task_config("hpo-term-mcq", ["n=4"]))
    rows = tmp_path / "defs.jsonl"
    rows.write_text("".join(json.dumps({"id": e.id, "title": "t", "text": e.input}) + "\n" for e in examples))
    index = build_index(load_build_config(["corpus=sample", f"corpus.path={rows}", "name=defs",
                                           f"root={tmp_path / 'ix'}"])).path
    out = run_experiment(["arm=base,rag", "model=fake", "task=hpo-term-mcq", "task.n=4",
                          f"arm.retriever.index={index}", f"cache_dir={tmp_path / 'cache'}", "experiment=audit"])
    tags = {c.arm: MlflowClient().get_run(c.run_id).data.tags for c in out.cells}
    audited = int(tags["rag"]["contamination.audited"])
    assert audited > 0 and tags["rag"]["contamination.items"] == str(audited)
    assert float(tags["rag"]["contamination.share"]) == 1.0
    assert "contamination.share" not in tags["base"]  # closed-book: no index to audit


def test_lora_rag_arm_config_has_both() -> None:
    from biorag.experiment.plan import plan

    _, cells, _ = plan(["arm=lora,lora_rag", "model=smollm2", "task=hpo-term-mcq"])
    lora, lora_rag = cells
    assert lora.arm.retriever is None and lora.arm.adapter == "smollm2-hpo"
    assert lora_rag.arm.retriever is not None and lora_rag.arm.adapter == "smollm2-hpo"


def test_sft_trains_on_responses(tiny_dir: Path, tmp_path: Path, shared_mlflow) -> None:
    rows = tmp_path / "sft.jsonl"
    with rows.open("w") as f:
        for i in range(12):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Define term {i}: ataxia?",
                                "response": SENTENCES[3]}) + "\n")
    cfg = _cfg(tiny_dir, Path("unused"), tmp_path / "adapters", max_steps=2, eval_fraction=0.2, seq_len=256)
    cfg = replace(cfg, data=DataConfig(name="qa", objective="sft", path=str(rows)), name="tiny-qa")
    result = run_finetune(cfg)
    d = result.manifest["data"]
    assert d["objective"] == "sft" and d["chat_template"] is True
    assert d["train_examples"] + d["eval_examples"] == 12 and d["eval_examples"] > 0
    assert 0 < d["response_tokens"] < d["tokens"]
    assert result.manifest["results"]["steps"] == 2


def test_contamination_is_audited_before_training(tiny_dir, tmp_path: Path, shared_mlflow) -> None:
    """Data holding task items' text: the audit warns and logs its figures to the run."""
    from mlflow.tracking import MlflowClient

    from biorag.tasks import load_examples, load_task_config

    items = load_examples(load_task_config("hpo-term-mcq", ["n=6"]))
    rows = tmp_path / "leak.jsonl"
    with rows.open("w") as f:
        for e in items[:3]:
            f.write(json.dumps({"id": e.id, "text": f"Definition. {e.input}"}) + "\n")
        for i in range(20):
            f.write(json.dumps({"id": f"x{i}", "text": SENTENCES[i % len(SENTENCES)]}) + "\n")
    (tmp_path / "leak.yaml").write_text(f"name: leak\nloader: jsonl\npath: {rows}\ntitle_field: null\n")
    cfg = _cfg(tiny_dir, tmp_path / "leak.yaml", tmp_path / "adapters", max_steps=1)
    cfg.audit = AuditSettings(tasks=["hpo-term-mcq"], threshold=0.01)  # 3 of ~175 items
    cfg.name = "tiny-leak"
    result = run_finetune(cfg)
    audited = result.manifest["contamination"]["tasks"][0]
    assert audited["task"] == "hpo-term-mcq" and audited["n_overlapping"] >= 3
    assert result.warnings and "hpo-term-mcq" in result.warnings[0]
    run = MlflowClient().get_run(result.manifest["mlflow"]["run_id"])
    assert run.data.metrics["contamination/hpo-term-mcq/items_overlapping"] >= 3


def test_cli_help_explains_the_command() -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    out = CliRunner().invoke(app, ["finetune", "--help"], terminal_width=200)
    assert out.exit_code == 0
    assert "resumes" in out.output and "load_in_4bit" in out.output
    out = CliRunner().invoke(app, ["audit", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "13-grams" in out.output


@pytest.mark.gpu
def test_qlora_trains_in_4bit_bf16(tiny_dir, corpus_yaml, tmp_path: Path, shared_mlflow) -> None:
    pytest.importorskip("bitsandbytes")
    cfg = _cfg(tiny_dir, corpus_yaml, tmp_path / "adapters", max_steps=2)
    cfg.model = ModelConfig(name="tiny", id=str(tiny_dir), load_in_4bit=True)
    result = run_finetune(cfg)
    m = result.manifest
    assert m["kind"] == "qlora" and m["quantisation"] == "4bit" and m["device"].startswith("cuda")
    assert m["dtype"] in ("bfloat16", "float16") and m["results"]["peak_memory_mb"] > 0


def test_killed_before_any_checkpoint_logs_each_step_once(trained, tiny_dir, corpus_yaml, tmp_path,
                                                          shared_mlflow) -> None:
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tiny_dir, corpus_yaml, tmp_path / "adapters", save_steps=50)  # no checkpoint in 4 steps
    with pytest.raises(_Killed):
        run_finetune(cfg, callbacks=[_kill_at(3)])
    partial = tmp_path / "adapters" / ".tiny-notes.partial"
    run_id = json.loads((partial / "finetune-state.json").read_text())["run_id"]
    result = run_finetune(cfg)
    assert result.manifest["mlflow"]["run_id"] == run_id and result.manifest["results"]["resumed_from_step"] == 0
    history = MlflowClient().get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    _, straight = trained
    assert result.manifest["results"]["train_loss"] == pytest.approx(straight.manifest["results"]["train_loss"],
                                                                     abs=1e-6)


@pytest.mark.parametrize("point", ["swap", "cleanup"])
def test_a_fine_tune_stopped_at_its_finish_leaves_a_finished_run_and_is_completed(
        tiny_dir, corpus_yaml, tmp_path, shared_mlflow, monkeypatch, point) -> None:
    """Issue 39, finding 3: killed just before the adapter is moved into place ("swap") or just
    after ("cleanup"), the MLflow run is FINISHED with its summary and adapter artifact, and the
    next run of the same command completes the job without training: no partial is left."""
    import shutil

    real_rmtree = shutil.rmtree
    from mlflow.tracking import MlflowClient

    from biorag.finetune import run as run_mod

    class Killed(BaseException):
        pass

    def die(*a, **kw):
        raise Killed

    cfg = _cfg(tiny_dir, corpus_yaml, tmp_path / "adapters")
    with monkeypatch.context() as m:
        if point == "swap":
            m.setattr(run_mod, "swap_into_place", die)
        else:
            m.setattr(run_mod.shutil, "rmtree", lambda p, *a, **kw: die() if str(p).endswith(".partial")
                      else real_rmtree(p, *a, **kw))
        with pytest.raises(Killed):
            run_finetune(cfg)
    partial = tmp_path / "adapters" / ".tiny-notes.partial"
    assert partial.is_dir()
    state_file = partial / "finetune-state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    run_id = state["run_id"] if state else json.loads((tmp_path / "adapters" / "tiny-notes" / "manifest.json")
                                                       .read_text())["mlflow"]["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["steps"] == STEPS
    assert any(a.path == "adapter" for a in MlflowClient().list_artifacts(run_id))
    trained_steps = []
    monkeypatch.setattr(run_mod, "_train", lambda *a, **kw: trained_steps.append(1))
    again = run_finetune(cfg)
    assert trained_steps == [] and not partial.exists()
    assert (tmp_path / "adapters" / "tiny-notes" / "adapter_model.safetensors").is_file()
    assert again.manifest["results"]["steps"] == STEPS
