"""`biorag judge ...`: check a judge against human labels; the pairwise arena of a study."""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer

from biorag.cli.console import FORMAT_HELP

app = typer.Typer(help="LLM judges: check one against human labels, run the pairwise arena of a study. "
                       "Judges grade runs with judges=[NAME] on `biorag experiment run`.",
                  no_args_is_help=True)


def _fmt(v) -> str:
    value, lo, hi = v
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


@app.command("check")
def check(
    judge: str = typer.Argument(..., help="A judge config (experiments/judge/NAME.yaml, `biorag ls judges`) or a YAML path."),
    overrides: list[str] = typer.Argument(None, help="task.KEY=VALUE overrides of --task (task.path=FILE).",
                                          show_default=False),
    labels: Path = typer.Option(..., "--labels", "-l", help="Human labels: HealthBench's meta-eval JSONL, or a "
                                                           "CSV/TSV/JSONL of item, answer, criterion|axis, verdict|score."),
    task: str = typer.Option(None, "--task", help="Check that the labels are about this task's items "
                                                 "(a label file whose items match none is an error)."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP),
) -> None:
    """Judge the labelled answers and print the judge's agreement with the humans (accuracy,
    Cohen's kappa and F1 of "met" for verdicts; weighted kappa and Spearman for 1-5 scales),
    with 95% bootstrap intervals. The result is kept and printed beside every metric this
    judge gives in later runs.

    Examples:

      biorag judge check smollm2 --labels labels.csv

      biorag judge check smollm2-generate --labels healthbench_meta_eval.jsonl

      biorag judge check smollm2 task.path=data/hb.jsonl --task healthbench --labels meta_eval.jsonl
    """
    from biorag.cli.console import check_format, print_tables
    from biorag.experiment.cache import CACHE_ENV
    from biorag.judges.checks import save_check
    from biorag.judges.config import load_judge_config
    from biorag.judges.labels import read_labels, require_matches
    from biorag.judges.meta import check as agreement
    from biorag.judges.meta import judge_labels
    from biorag.judges.run import JudgementCache, cache_file, judge_identity
    from biorag.models.loading import load_generator, load_model_config
    from biorag.report.tables import Table

    say = check_format(fmt)
    cfg = load_judge_config(judge)
    found = read_labels(labels)
    bad = [o for o in overrides or [] if not o.startswith("task.")]
    if bad or (overrides and not task):
        raise typer.BadParameter(f"only task.KEY=VALUE overrides of --task are taken here, not {' '.join(bad or overrides)}")
    if task:
        from biorag.tasks import load_examples, load_task_config

        task_cfg = load_task_config(task, [o.removeprefix("task.") for o in overrides or []])
        require_matches(found, [e.id for e in load_examples(task_cfg)], labels)
    model_cfg = load_model_config(cfg.model)
    identity = judge_identity(cfg, model_cfg.__dict__)
    root = Path(os.environ.get(CACHE_ENV) or ".biorag-cache")
    generator = load_generator(model_cfg)
    try:
        values, cost = judge_labels(cfg, generator, found, JudgementCache(cache_file(root, cfg, identity)), identity,
                                    max_length=model_cfg.max_length)
    finally:
        close = getattr(generator, "close", None)
        if close:
            close()
    result = agreement(cfg, found, values, labels, cost)
    path = save_check(root, cfg.name, result)
    t = Table(f"judge {cfg.name} ({cfg.model}, verdicts by {cfg.verdict}) against {len(found)} human labels",
              ["measure", "value [95% CI]"],
              [[k, _fmt(v)] for k, v in result["agreement"].items()])
    t.rows.append(["labels judged", str(result["n"])])
    t.rows.append(["verdicts unparsed", f"{result['n_unparsed']} ({result['n_unparsed'] / max(len(found), 1):.0%})"])
    t.rows.append(["judge cost", f"{cost.get('judge_questions', 0):.0f} questions, {cost.get('judge_requests', 0):.0f} "
                                 f"requests, {cost.get('judge_tokens_in', 0):.0f} tokens in, "
                                 f"{cost.get('judge_seconds', 0):.1f} s"])
    print_tables([t], fmt, left=1)
    say.print(f"kept in {path}: runs this judge grades show it")


@app.command("pairwise")
def pairwise_cmd(
    study: str = typer.Argument(None, help="A study name, parent run id or experiment; default: the latest study run "
                                           "with results."),
    judge: str = typer.Option(..., "--judge", "-j", help="A judge config (experiments/judge/) or YAML path."),
    arms: str = typer.Option(None, "--arms", help="Comma-separated arms to compare; default: all."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP),
) -> None:
    """The pairwise arena: for every two arms on the same model and task, the judge picks the
    better answer to each item in both orders (a pick that flips with the order is a tie).
    Prints win rates with 95% intervals and a Bradley-Terry ranking; logs them to the study's
    parent run, where `biorag report` shows them.

    Examples:

      biorag judge pairwise --judge smollm2

      biorag judge pairwise biorag-embedded --judge smollm2 --arms base,rag
    """
    from biorag.cli.console import check_format, print_tables
    from biorag.report.arena import run_arena
    from biorag.report.judges import arena_tables

    say = check_format(fmt)
    picked = [a.strip() for a in arms.split(",")] if arms else None
    found, name, groups = run_arena(judge, study, picked)
    print_tables(arena_tables(groups), fmt, left=1)
    say.print(f"logged as {name} to parent run {found.parent_run_id}")
