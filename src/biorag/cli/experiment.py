"""`biorag experiment ...`: run and validate experiment arms."""

from __future__ import annotations

import math

import typer
from rich.table import Table

from biorag.report.compare import headline_metric
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
    from biorag.cli.console import console
    from biorag.experiment.runner import run_experiment

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
        console.print(f"[green]done[/] {cell.name}: {cell.n} examples{resumed}")

    result = run_experiment(overrides or [], on_cell_done=done)
    console.print(results_table(result.cells, result.baseline))
    console.print(
        f"MLflow experiment '{result.experiment}', parent run {result.parent_run_id} "
        f"in {result.tracking_uri}\nOpen the UI with: biorag ui   (or: mlflow ui --backend-store-uri "
        f"{result.tracking_uri} --host 127.0.0.1)"
    )


@app.command("validate")
def validate(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
) -> None:
    """Resolve and check the configs of a run without loading any model; list the cells.

    Checks what a run would need: the task's data file and template, the index a rag arm
    searches (or the corpus it would be built from), the adapter and the model's weights.
    Lists every problem and exits 1 when there is any. A hub id cannot be checked offline:
    it shows as "not checked (hub)".
    """
    from rich.markup import escape

    from biorag.cli.console import console
    from biorag.experiment.checks import check_cells, grouped
    from biorag.experiment.plan import plan_run

    planned = plan_run(overrides or [])
    experiment, cells, baseline = planned.experiment, planned.cells, planned.baseline
    for note in planned.notes:
        console.print(f"[dim]note[/] {escape(note)}", highlight=False)
    t = Table(title=f"experiment '{experiment}': {len(cells)} cell(s), baseline arm '{baseline}'")
    for col in ("arm", "model", "family", "task", "protocol", "items", "retrieval", "adapter"):
        t.add_column(col)
    for c in cells:
        r = c.arm.retriever
        source = (r.index or c.task.index or r.corpus or c.task.corpus) if r else None
        where = f"{r.mode} k={r.k} from {source}" if r else "closed-book"
        protocol = c.task.protocol if c.task.protocol != "task" else f"task ({c.task.scoring})"
        t.add_row(c.arm.name, c.model.name, c.model.family, c.task.name, protocol,
                  str(c.task.n or "all"), escape(str(where)), c.arm.adapter or "-")
    console.print(t)
    found = check_cells(cells)
    for note in dict.fromkeys((p.what, p.why) for p in found if not p.error):
        console.print(f"[dim]note[/] {note[0]}: {escape(note[1])}", highlight=False)
    problems = [p for p in found if p.error]
    if not problems:
        console.print(f"[green]ok[/]: {len(cells)} cell(s), no problems")
        return
    shared = grouped(problems)  # one row per problem, with every cell it hits
    t = Table(title=f"{len(shared)} problem(s) in {len({p.cell for p in problems})} of {len(cells)} cell(s)")
    for col in ("cell", "what", "why"):
        t.add_column(col, overflow="fold")
    for (what, why), names in shared.items():
        t.add_row("\n".join(names), what, escape(why))
    console.print(t)
    raise typer.Exit(1)


def _fmt(metrics: dict[str, float], key: str) -> str:
    v = metrics.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    lo, hi = metrics.get(key + keys.CI_LOW), metrics.get(key + keys.CI_HIGH)
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def results_table(cells, baseline: str = "base") -> Table:
    """Arms x tasks with 95% confidence intervals (one column per task's headline metric)."""
    tasks = list(dict.fromkeys((c.task, c.protocol) for c in cells))
    t = Table(title="results (95% bootstrap CI)")
    t.add_column("arm")
    t.add_column("model")
    heads = {}
    for task, protocol in tasks:
        first = next(c for c in cells if (c.task, c.protocol) == (task, protocol))
        heads[task, protocol] = headline_metric(first.metrics, task, first.listed, first.continuation)
        t.add_column(f"{keys.task_label(task, protocol)}\n{heads[task, protocol]}", justify="right")
    rows = dict.fromkeys((c.arm, c.model) for c in cells)
    for arm, model in rows:
        cols = []
        for task, protocol in tasks:
            c = next((c for c in cells if (c.arm, c.model, c.task, c.protocol) == (arm, model, task, protocol)), None)
            cols.append(_fmt(c.metrics, f"{task}/{heads[task, protocol]}") if c else "-")
        t.add_row(arm + (" (baseline)" if arm == baseline else ""), model, *cols)
    return t
