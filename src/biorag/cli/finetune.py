"""`biorag finetune` and `biorag audit`."""

from __future__ import annotations

import typer
from rich.table import Table

FINETUNE_HELP = (
    "Config overrides: model=, data= (experiments/data/), name=, and key=value "
    "(train.max_steps=200 train.seq_len=512 lora.r=16 model.load_in_4bit=true data.limit=1000). "
    "See experiments/finetune.yaml."
)
AUDIT_HELP = (
    "data= (experiments/data/) or retrieval_index=NAME, task= (comma lists: task=a,b), and key=value "
    "(ngram=8 min_words=5 threshold=0.01 data.limit=500). See experiments/audit.yaml."
)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("audit")(audit)


def finetune(
    overrides: list[str] = typer.Argument(None, help=FINETUNE_HELP, show_default=False),
    force: bool = typer.Option(False, "--force", help="Retrain even when an identical adapter exists."),
    show_config: bool = typer.Option(False, "--cfg", help="Print the resolved config and exit."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap",
                                       help="RAFT: train even when training items overlap evaluation items."),
) -> None:
    """Train a LoRA (QLoRA with model.load_in_4bit=true) adapter with peft and the Trainer.

    Objectives (set by the data config): continued pre-training on a corpus, packed into
    train.seq_len-token blocks; instruction tuning on JSONL prompt/response pairs or chat
    messages with the loss on the responses only; or RAFT (objective raft): a task's
    training items, each prompt carrying k retrieved passages as the rag arm gets them, the
    gold passage in a data.raft.p_gold share (0.8) and distractors otherwise, the loss on
    the answer. LoRA goes on peft's default modules for the model type unless
    lora.target_modules says otherwise.

    Before training, the data is audited for n-gram overlap with the tasks in audit.tasks
    (a warning above audit.threshold); RAFT training items are audited against the
    evaluation items and refused when any overlaps (--allow-overlap trains anyway). The training is its own MLflow run (loss per step,
    the adapter folder as an artifact). Writes adapters/NAME/ (peft files + manifest.json),
    which `arm=lora` and `arm=lora_rag` load. A killed run started again with the same
    command resumes from its last checkpoint; an unchanged one is a no-op.

    Example (the embedded default, a few minutes on a laptop CPU):

      biorag finetune model=smollm2 data=hpo-mini name=smollm2-hpo

      biorag finetune model=smollm2 data=raft-embedded name=smollm2-raft
    """
    from biorag.cli.console import console
    from biorag.config import to_yaml
    from biorag.finetune.config import load_finetune_config
    from biorag.finetune.run import run_finetune

    cfg = load_finetune_config(overrides or [])
    if show_config:
        console.print(to_yaml(cfg), highlight=False)
        return
    result = run_finetune(cfg, force=force, allow_overlap=allow_overlap)
    m = result.manifest
    r = m["results"]
    if result.up_to_date:
        console.print(f"[green]adapter '{m['name']}' is up to date[/] (fingerprint {m['fingerprint']}) "
                      f"at {result.path}; --force retrains it.")
        return
    for warning in result.warnings:
        console.print(f"[yellow]contamination:[/] {warning}")
    resumed = f", resumed from step {r['resumed_from_step']}" if r["resumed_from_step"] else ""
    eval_loss = f", eval loss {r['eval_loss']:.4f}" if r["eval_loss"] is not None else ""
    console.print(
        f"[green]trained adapter '{m['name']}'[/] at {result.path}: {r['steps']} steps{resumed}, "
        f"train loss {r['train_loss']:.4f}{eval_loss}, {r['tokens_per_second']:.0f} tokens/s, "
        f"{r['wall_seconds']:.0f}s wall.\nMLflow run {m['mlflow']['run_id']} "
        f"(experiment '{m['mlflow']['experiment']}').\n" + adapter_hint(m["name"], m["base_model"]["name"],
                                                              m["data"]["objective"])
    )


def adapter_hint(adapter: str, model: str, objective: str) -> str:
    """The command that compares the new adapter as intended: an `arm.adapter=` override goes
    only on the arms that have an adapter, so the closed-book and rag arms stay the general
    model."""
    arms = "rag,raft" if objective == "raft" else "base,rag,lora,lora_rag"
    what = "rag against RAFT" if objective == "raft" else "the RAG x fine-tune 2x2"
    return (f"Compare it ({what}; the adapter goes only on the arms that have one): biorag experiment run "
            f"arm={arms} model={model} task=<task> arm.adapter={adapter}")


def audit(
    overrides: list[str] = typer.Argument(None, help=AUDIT_HELP, show_default=False),
    show: int = typer.Option(5, "--show", help="Overlapping items listed per task."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
) -> None:
    """Contamination audit: which task items share an n-gram with a data set or index.

    The method is lm-evaluation-harness' decontamination: lower-cased words without
    punctuation, 13-grams by default; items shorter than that are matched whole from
    min_words words on, shorter ones are counted as too short to audit.

    Examples:

      biorag audit data=hpo task=hpo-term-mcq,icd10-code-mcq

      biorag audit retrieval_index=hpo-minilm task=hpo-term-mcq
    """
    from biorag.cli.console import console
    from biorag.contamination import run_audit

    report = run_audit(overrides or [])
    if as_json:
        console.print_json(data=report.to_dict())
        return
    t = Table(title=f"{report.ngram}-gram overlap of {report.source} ({report.n_texts:,} texts, "
                    f"{report.n_words:,} words) with task items")
    for col in ("task", "items", "audited", "too short", "overlapping", "share of audited"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for task in report.tasks:
        share = f"{task.share:.1%}"
        if task.share > report.threshold:
            share = f"[red]{share}[/]"
        t.add_row(task.task, str(task.n_items), str(task.n_audited), str(task.n_too_short),
                  str(task.n_overlapping), share)
    console.print(t)
    for task in report.tasks:
        for item in task.items[:show]:
            console.print(f"  {task.task} {item.example_id}: \"{item.ngram}\" in "
                          f"{', '.join(item.sources)}" + (" ..." if item.n_sources > len(item.sources) else ""),
                          highlight=False)
        if len(task.items) > show:
            console.print(f"  ... and {len(task.items) - show} more ({task.task}); --json lists all")
    console.print(f"threshold {report.threshold:.1%}; {report.seconds:.1f}s")
