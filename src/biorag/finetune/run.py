"""LoRA / QLoRA fine-tuning with peft and the transformers Trainer.

`run_finetune(load_finetune_config([...]))` tokenises the data (a corpus packed for continued
pre-training, or instruction data with the loss on responses only), audits it against the
tasks in the config, trains in its own MLflow run and writes `adapters/<name>/`: peft's
files plus `manifest.json`. Checkpoints go to `adapters/.<name>.partial/`; a killed run
started again with the same settings resumes from the last complete one, and the adapter
folder appears (by rename) only when training has finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biorag.atomic import (
    artifact_lock,
    guard_target,
    resume_state,
    swap_into_place,
    write_json,
    writing,
)
from biorag.contamination import AuditReport
from biorag.errors import BioragError, ConfigError
from biorag.finetune.adapters import MANIFEST_FILE, base_identity, read_manifest
from biorag.finetune.config import FinetuneConfig, load_finetune_config
from biorag.finetune.data import TrainingData
from biorag.tracking import keys

__all__ = ["FinetuneConfig", "FinetuneResult", "load_finetune_config", "run_finetune"]

log = logging.getLogger(__name__)

STATE_FILE = "finetune-state.json"
CHECKPOINTS = "checkpoints"
# settings that change what is logged or checked, not the trained weights
_NOT_IN_FINGERPRINT = ("logging_steps", "save_steps", "eval_steps", "eval_limit")


@dataclass
class FinetuneResult:
    path: Path
    manifest: dict[str, Any]
    up_to_date: bool = False  # an adapter of identical settings was already there
    resumed_from_step: int = 0
    audit: AuditReport | None = None
    warnings: list[str] = field(default_factory=list)
    model: Any = None  # the trained peft model (for checks in the same process)


def finetune_fingerprint(cfg: FinetuneConfig, data_fingerprint: str) -> str:
    train = {k: v for k, v in asdict(cfg.train).items() if k not in _NOT_IN_FINGERPRINT}
    payload = {
        "base": base_identity(cfg.model),
        "dtype": cfg.model.dtype,
        "quantisation": [cfg.model.load_in_4bit, cfg.model.load_in_8bit],
        "data": data_fingerprint,
        "objective": cfg.data.objective,
        "lora": asdict(cfg.lora),
        "train": train,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_data(cfg: FinetuneConfig, tokenizer: Any) -> TrainingData:
    from biorag.finetune.data import pretrain_data, sft_data

    t = cfg.train
    if cfg.data.objective == "pretrain":
        data = pretrain_data(cfg.data, tokenizer, t.seq_len, t.seed, t.eval_fraction)
    elif cfg.data.objective == "raft":
        from biorag.finetune.raft import raft_data

        data = raft_data(cfg, tokenizer)
    else:
        data = sft_data(cfg.data, tokenizer, t.seq_len, t.seed, t.eval_fraction, chat=cfg.model.chat)
    if t.eval_limit is not None:
        data.eval = data.eval[: t.eval_limit]
    return data


def run_finetune(
    cfg: FinetuneConfig, *, force: bool = False, callbacks: list[Any] | None = None,
    allow_overlap: bool = False,
) -> FinetuneResult:
    """Train (or resume, or skip) the adapter `cfg` describes; returns where it is.

    One fine-tune of a name at a time (a second waits for the first, then finds its adapter
    up to date). The MLflow store and the target folder are checked before any data is read;
    a run that fails before its first checkpoint leaves nothing behind. RAFT data whose
    training items overlap the evaluation items is refused unless `allow_overlap`."""
    from biorag.tracking.runs import check_store

    if cfg.model.backend not in ("hf", "vllm"):
        raise ConfigError(f"model '{cfg.model.name}' uses the {cfg.model.backend} backend; biorag finetune "
                          "trains transformers checkpoints (backend hf or vllm)")
    name = cfg.adapter_name()
    final = Path(cfg.output_dir) / name
    if final.exists() or final.is_symlink():
        guard_target(final, MANIFEST_FILE, "adapter")
    uri = check_store()
    with artifact_lock(final, "adapter"):
        return _finetune_locked(cfg, final, uri, force, callbacks or [], allow_overlap)


def _finetune_locked(cfg: FinetuneConfig, final: Path, uri: str, force: bool,
                     callbacks: list[Any], allow_overlap: bool = False) -> FinetuneResult:
    from biorag.finetune.train import last_checkpoint, load_tokenizer
    from biorag.tracking.runs import open_run

    started = time.perf_counter()
    name, partial = final.name, final.with_name(f".{final.name}.partial")
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer)
    fingerprint = finetune_fingerprint(cfg, data.fingerprint)
    existing = read_manifest(final)
    if not force and existing.get("fingerprint") == fingerprint:
        log.info("adapter %s is up to date (fingerprint %s); --force retrains it", name, fingerprint)
        if partial.exists() and _partial_fingerprint(partial) in (fingerprint, None):
            # left by a run stopped just after its swap, or while removing it (its state gone):
            # nothing to resume from either way
            shutil.rmtree(partial, ignore_errors=True)
        return FinetuneResult(final, existing, up_to_date=True)
    staged = read_manifest(partial / "adapter")
    if not force and staged.get("fingerprint") == fingerprint:  # trained, logged, stopped before the swap
        log.info("adapter %s was trained, and stopped before it was moved into place", name)
        with open_run(cfg.experiment, staged["mlflow"]["run_id"], name, uri):  # logged again: a kill
            _log_adapter(staged["results"], partial / "adapter")            # may have cut it short
        _swap_in(partial / "adapter", final, partial)
        return FinetuneResult(final, staged, resumed_from_step=staged["results"]["steps"])
    report, warnings = _audit(cfg, data, allow_overlap)  # before anything is trained
    state = resume_state(partial, STATE_FILE, fingerprint, force=force, what="fine-tune")
    try:
        return _train(cfg, tokenizer, data, fingerprint, state, final, partial, uri, started, callbacks,
                      report, warnings)
    except BioragError:
        if last_checkpoint(partial / CHECKPOINTS) is None:  # nothing worth resuming from
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _train(cfg: FinetuneConfig, tokenizer: Any, data: TrainingData, fingerprint: str, state: dict[str, Any],
           final: Path, partial: Path, uri: str, started: float, callbacks: list[Any],
           report: AuditReport | None, warnings: list[str]) -> FinetuneResult:
    from biorag.config import flatten, to_yaml
    from biorag.finetune.train import (
        SessionClock,
        build_trainer,
        checkpoint_is_final,
        last_checkpoint,
        last_loss,
        load_for_training,
        loss_over_all_steps,
        restore_finished,
        tokens_seen_at,
    )
    from biorag.tracking.runs import (
        git_sha,
        last_logged_step,
        log_json_artifact,
        log_metrics,
        log_params,
        log_text_artifact,
        open_run,
        scrub,
        set_tags,
    )

    name = final.name
    reopened = bool(state.get("run_id"))
    with open_run(cfg.experiment, state.get("run_id"), name, uri) as run_id:
        if not state.get("run_id"):
            log_params(flatten(cfg))
            state["run_id"] = run_id
            write_json(partial / STATE_FILE, state)
        set_tags({
            keys.KIND: keys.KIND_FINETUNE, keys.ADAPTER: name, keys.ADAPTER_FINGERPRINT_FINETUNE: fingerprint,
            keys.MODEL: cfg.model.name, keys.MODEL_FAMILY: cfg.model.family, keys.DATA: cfg.data.name,
            keys.OBJECTIVE: cfg.data.objective, keys.GIT_SHA: git_sha(Path(__file__).parent),
        })
        log_text_artifact(scrub(to_yaml(cfg)), keys.CONFIG_FILE)
        if report is not None:
            log_metrics(report.metrics())
            log_json_artifact(report.to_dict(), keys.CONTAMINATION_FILE)

        model, device, dtype = load_for_training(cfg.model, cfg.lora, cfg.train)
        resume = last_checkpoint(partial / CHECKPOINTS)
        resumed_from = int(resume.name.rsplit("-", 1)[1]) if resume else 0
        clock = SessionClock(state, partial / STATE_FILE, resumed_from, started)
        # a killed session (with or without a checkpoint) logged steps this one redoes: log
        # each step once
        logged = last_logged_step(keys.TRAIN_LOSS) if reopened else 0
        trainer, tracker = build_trainer(cfg, model, tokenizer, data, partial / CHECKPOINTS, device, dtype,
                                         [clock, *callbacks], skip_steps_through=logged)
        if resume:
            log.info("resuming %s from %s", name, resume)
        try:
            if resume and checkpoint_is_final(resume):
                # stopped after its last checkpoint: the Trainer, resumed from it, would train
                # one step past max_steps, so the checkpoint is restored, not resumed
                out = restore_finished(trainer, model, resume)
            else:  # a checkpoint cut short by a full disk is removed by the next run's last_checkpoint
                with writing(partial, 0, "writing a training checkpoint"):
                    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        finally:
            tracker.close()
        eval_loss = trainer.evaluate()["eval_loss"] if data.eval else None

        stage = partial / "adapter"
        if stage.exists():
            shutil.rmtree(stage)
        try:
            with writing(partial, 0, "saving the adapter"):
                model.save_pretrained(stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # half-saved: saved again by the next run
            raise
        session_train = out.metrics.get("train_runtime", 0.0)
        train_seconds = clock.train_seconds_before + session_train
        tokens = int(trainer.state.num_input_tokens_seen)
        results = {
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0.0, 4),
            "resumed_from_step": resumed_from,
            # over every step of the adapter, across sessions (the Trainer's own figure
            # covers only the steps of the last session)
            "train_loss": loss_over_all_steps(trainer.state.log_history, resumed_from, out.training_loss,
                                              trainer.state.global_step),
            # a session resumed from the last checkpoint trains no step: the restored history's
            "train_loss_last": tracker.last_loss if tracker.last_loss is not None
            else last_loss(trainer.state.log_history),
            "eval_loss": eval_loss,
            "train_seconds": round(train_seconds, 2),  # the steps kept, across sessions
            "wall_seconds": round(clock.wall_seconds(), 2),
            "wall_seconds_this_session": round(time.perf_counter() - started, 2),
            "train_seconds_this_session": round(session_train, 2),
            "tokens": tokens,
            # the tokens past the checkpoint this session started from: all of them when it was
            # never interrupted (the callback's own count was read mid-way and could disagree)
            "tokens_this_session": tokens - tokens_seen_at(resume),
            "tokens_per_second": round(tokens / max(train_seconds, 1e-9), 1),
            "peak_memory_mb": round(tracker.peak_memory_mb(), 1),
            "loss_history": tracker.history(trainer.state.log_history),
        }
        manifest = _manifest(cfg, model, data, fingerprint, results, report, device, dtype, run_id, uri)
        write_json(stage / MANIFEST_FILE, manifest)
        # the run gets its summary and the adapter and is closed before the swap: a kill from
        # here on leaves a finished run and a staged adapter that the next run swaps in
        _log_adapter(results, stage)
    _swap_in(stage, final, partial)
    log.info("adapter %s: %d steps, train loss %.4f, %.0f tokens/s, at %s", name, results["steps"],
             results["train_loss"], results["tokens_per_second"], final)
    return FinetuneResult(final, manifest, resumed_from_step=resumed_from, audit=report,
                          warnings=warnings, model=model)


def _log_adapter(results: dict[str, Any], stage: Path) -> None:
    """The summary metrics and the staged adapter, into the active run (idempotent: a run
    re-opened after a kill gets the same metrics and files again)."""
    from biorag.tracking.runs import log_folder, log_metrics

    log_metrics({k: float(v) for k, v in results.items()
                 if isinstance(v, int | float) and v is not None}, step=results["steps"])
    log_folder(stage, keys.ADAPTER_DIR)


def _partial_fingerprint(partial: Path) -> str | None:
    try:
        return json.loads((partial / STATE_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _swap_in(stage: Path, final: Path, partial: Path) -> None:
    swap_into_place(stage, final, MANIFEST_FILE, "adapter")
    shutil.rmtree(partial, ignore_errors=True)


def _audit(cfg: FinetuneConfig, data: TrainingData, allow_overlap: bool = False
           ) -> tuple[AuditReport | None, list[str]]:
    from biorag.contamination import audit_texts, load_task_examples, warn_if_contaminated

    if data.splits is not None:  # RAFT: against the evaluation items the items are kept apart from
        from biorag.finetune.raft import overlap, refuse_overlap

        report, found = overlap(cfg, data)
        if not allow_overlap:
            refuse_overlap(cfg.data.name, found)
        said = [f"{len(ids)} evaluation item(s) of task '{t}' overlap the RAFT training items (--allow-overlap)"
                for t, ids in found.items()]
        for w in said:
            log.warning("%s", w)
        return report, said
    if not cfg.audit.tasks:
        return None, []
    tasks = load_task_examples(cfg.audit.tasks)
    report = audit_texts(data.texts, tasks, cfg.audit, source=f"fine-tuning data '{cfg.data.name}'",
                         source_fingerprint=data.fingerprint)
    return report, warn_if_contaminated(report)


def _manifest(cfg: FinetuneConfig, model: Any, data: TrainingData, fingerprint: str, results: dict[str, Any],
              report: AuditReport | None, device: str, dtype: Any, run_id: str, uri: str) -> dict[str, Any]:
    from biorag.finetune.train import library_versions

    peft_cfg = model.peft_config["default"]
    targets = sorted(peft_cfg.target_modules) if peft_cfg.target_modules else []
    return {
        "name": cfg.adapter_name(),
        "kind": "lora" if not (cfg.model.load_in_4bit or cfg.model.load_in_8bit) else "qlora",
        "fingerprint": fingerprint,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": {**base_identity(cfg.model), "model_type": model.config.model_type},
        "data": {"name": cfg.data.name, "objective": cfg.data.objective, "fingerprint": data.fingerprint,
                 "config": asdict(cfg.data), **data.stats},
        "lora": {**asdict(cfg.lora), "target_modules": targets},
        "train": asdict(cfg.train),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "quantisation": "4bit" if cfg.model.load_in_4bit else "8bit" if cfg.model.load_in_8bit else None,
        "results": results,
        "contamination": report.summary() if report is not None else None,
        "mlflow": {"run_id": run_id, "tracking_uri": uri, "experiment": cfg.experiment},
        "versions": library_versions(),
        "files": {"adapter_config": "adapter_config.json", "weights": "adapter_model.safetensors"},
    }


