"""`biorag experiment ...`: run and validate experiment arms."""

from __future__ import annotations

import math

import typer

from biorag.cli.console import FORMAT_HELP
from biorag.report.compare import headline_metric
from biorag.report.tables import Table
from biorag.tracking import keys  # one definition, shared with `biorag report`

app = typer.Typer(help="Run experiment arms (base, rag, lora, lora_rag) tracked in MLflow.",
                  no_args_is_help=True)

OVERRIDES_HELP = (
    "arm=, model=, task= (comma lists sweep: arm=base,rag), study=NAME (experiments/study/), "
    "and key=value overrides (task.n=50 arm.retriever.k=3 model.batch_size=4)."
)


@app.command("run")
def run(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    show_config: bool = typer.Option(False, "--cfg", help="Print each cell's resolved config and exit; nothing runs."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP),
) -> None:
    """Run arms x models x tasks; one MLflow child run per cell under one parent run.

    Examples:

      biorag experiment run study=embedded

      biorag experiment run arm=base,rag model=smollm2 task=hpo-term-mcq,icd10-code-mcq

    An arm.adapter= or arm.retriever.* override goes only on the arms that have an adapter or
    a retriever (the others are named), so base and rag stay the general closed-book and rag arms.

    A rag arm builds its index when missing. A killed run started again with the same
    command continues where it stopped (predictions are cached in .biorag-cache/).
    """
    from biorag.cli.console import check_format, console, print_tables
    from biorag.experiment.runner import run_experiment

    say = check_format(fmt)
    if show_config:
        from biorag.config import to_yaml
        from biorag.experiment.arms import cell_name
        from biorag.experiment.plan import plan_run

        planned = plan_run(overrides or [])
        for note in planned.notes:
            console.print(f"# {note}", highlight=False)
        for c in planned.cells:
            console.print(f"# --- {cell_name(c.arm.name, c.model.name, c.task.name, c.task.protocol)}\n"
                          + to_yaml(c), highlight=False, markup=False)
        return

    def done(cell) -> None:
        resumed = f" ({cell.resumed} from cache)" if cell.resumed else ""
        say.print(f"[green]done[/] {cell.name}: {cell.n} examples{resumed}")

    result = run_experiment(overrides or [], on_cell_done=done)
    tables = [results_table(result.cells, result.baseline)]
    judged = judges_table(result.cells)
    if judged is not None:
        tables.append(judged)
    if result.failures:  # launcher=ray: cells that failed alone, the others finished
        tables.append(Table(f"{len(result.failures)} cell(s) failed", ["cell", "error"],
                            [[f.name, f.error] for f in result.failures]))
    print_tables(tables, fmt, left=2)
    say.print(
        f"MLflow experiment '{result.experiment}', parent run {result.parent_run_id} "
        f"in {result.tracking_uri}\nOpen the UI with: biorag ui   (or: mlflow ui --backend-store-uri "
        f"{result.tracking_uri} --host 127.0.0.1)"
    )
    if result.failures:
        say.print(f"[red]failed[/]: {len(result.failures)} of {len(result.failures) + len(result.cells)} cell(s); "
                  "fix them and run the same command again (finished cells are kept)")
        raise typer.Exit(1)


@app.command("validate")
def validate(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP),
) -> None:
    """Resolve and check the configs of a run without loading any model; list the cells.

    Checks what a run would need: the task's data file and template, the index a rag arm
    searches (or the corpus it would be built from), the adapter and the model's weights.
    Lists every problem and exits 1 when there is any. A hub id cannot be checked offline:
    it shows as "not checked (hub)".
    """
    from rich.markup import escape

    from biorag.cli.console import check_format, print_tables
    from biorag.experiment.checks import check_cells, grouped
    from biorag.experiment.plan import plan_run

    say = check_format(fmt)
    planned = plan_run(overrides or [])
    experiment, cells, baseline = planned.experiment, planned.cells, planned.baseline
    for note in planned.notes:
        say.print(f"[dim]note[/] {escape(note)}", highlight=False)
    t = Table(f"experiment '{experiment}': {len(cells)} cell(s), baseline arm '{baseline}'",
              ["arm", "model", "family", "task", "protocol", "items", "retrieval", "adapter"])
    for c in cells:
        r = c.arm.retriever
        source = (r.index or c.task.index or r.corpus or c.task.corpus) if r else None
        where = f"{r.mode} k={r.k} from {source}" if r else "closed-book"
        protocol = c.task.protocol if c.task.protocol != "task" else f"task ({c.task.scoring})"
        t.rows.append([c.arm.name, c.model.name, c.model.family, c.task.name, protocol,
                       str(c.task.n or "all"), str(where), c.arm.adapter or "-"])
    tables = [t]
    if cells[0].launcher.kind == "ray":
        from biorag.experiment.ray_cluster import resource_rows

        rows, against = resource_rows(cells)
        tables.append(Table(f"launcher=ray: what each cell asks (checked against {against})",
                            ["cell", "GPUs", "CPUs", "why", "shards", "cluster has it"], rows))
    from biorag.errors import BioragError
    from biorag.experiment.judging import plan_judges

    try:
        judged = plan_judges(cells)
    except BioragError:  # an unknown judge: listed with the problems below
        judged = []
    if judged:
        tables.append(Table("judges: what they will be asked", ["judge", "verdicts by", "cells", "questions",
                                                                 "model requests", "support"],
                            [[j.judge, j.verdict, str(j.cells), str(j.questions), str(j.requests),
                              f"+1 question per claim of {j.support_answers} rag answers" if j.support_answers
                              else "-"] for j in judged]))
    found = check_cells(cells)
    for note in dict.fromkeys((p.what, p.why) for p in found if not p.error):
        say.print(f"[dim]note[/] {note[0]}: {escape(note[1])}", highlight=False)
    problems = [p for p in found if p.error]
    if problems:
        shared = grouped(problems)  # one row per problem, with every cell it hits
        tables.append(Table(f"{len(shared)} problem(s) in {len({p.cell for p in problems})} of {len(cells)} cell(s)",
                            ["cell", "what", "why"],
                            [["\n".join(names), what, why] for (what, why), names in shared.items()]))
    print_tables(tables, fmt, left=8)
    if problems:
        raise typer.Exit(1)
    say.print(f"[green]ok[/]: {len(cells)} cell(s), no problems")


def _fmt(metrics: dict[str, float], key: str) -> str:
    v = metrics.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    lo, hi = metrics.get(key + keys.CI_LOW), metrics.get(key + keys.CI_HIGH)
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


JUDGED = ("rubric_score", "scale_accuracy", "scale_completeness", "scale_clarity", "answer_supported",
          "claims_supported", "judge_unparsed_rate", "judge_alpha_binary", "judge_alpha_scale")


def judges_table(cells) -> Table | None:
    """The judged metrics of the cells that have any (95% bootstrap CI), with the judges' cost."""
    rows, cols = [], [k for k in JUDGED if any(f"{c.task}/{k}" in c.metrics for c in cells)]
    if not cols:
        return None
    for c in cells:
        if not any(f"{c.task}/{k}" in c.logged for k in cols):
            continue
        cost = (f"{c.logged.get(f'{c.task}/judge_questions', 0):.0f} q, "
                f"{c.logged.get(f'{c.task}/judge_seconds', 0):.1f} s")
        rows.append([c.name, *(_fmt(c.metrics, f"{c.task}/{k}") for k in cols), cost])
    return Table("judged (95% bootstrap CI; - : not judged, e.g. support in a closed-book arm)",
                 ["cell", *cols, "judge cost"], rows)


def results_table(cells, baseline: str = "base") -> Table:
    """Arms x tasks with 95% confidence intervals (one column per task's headline metric)."""
    tasks = list(dict.fromkeys((c.task, c.protocol) for c in cells))
    heads = {}
    for task, protocol in tasks:
        first = next(c for c in cells if (c.task, c.protocol) == (task, protocol))
        heads[task, protocol] = headline_metric(first.metrics, task, first.listed, first.continuation)
    t = Table("results (95% bootstrap CI)",
              ["arm", "model", *(f"{keys.task_label(task, p)}\n{heads[task, p]}" for task, p in tasks)])
    for arm, model in dict.fromkeys((c.arm, c.model) for c in cells):
        cols = []
        for task, protocol in tasks:
            c = next((c for c in cells if (c.arm, c.model, c.task, c.protocol) == (arm, model, task, protocol)), None)
            cols.append(_fmt(c.metrics, f"{task}/{heads[task, protocol]}") if c else "-")
        t.rows.append([arm + (" (baseline)" if arm == baseline else ""), model, *cols])
    return t
