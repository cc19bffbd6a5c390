"""`biorag retrieval eval`: retrieval measures of indexes x modes x tasks, no model loaded."""

from __future__ import annotations

import typer
from rich.table import Table

app = typer.Typer(help="Measure retrieval against the tasks' gold evidence.", no_args_is_help=True)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("give cut-offs of at least 1, e.g. 1,3,5,10")
    return values


@app.command("eval")
def evaluate(
    overrides: list[str] = typer.Argument(
        None, show_default=False,
        help="index=NAME[,NAME] (default: the task's corpus with minilm, built if missing), "
             "task=NAME[,NAME] (default: hpo-term-mcq), task.* and arm.retriever.* overrides "
             "(task.n=100, arm.retriever.k=3, arm.retriever.exclude=gold_source), experiment=NAME.",
    ),
    mode: str = typer.Option("dense", "--mode", "-m", help="Retrieval modes to compare: dense,bm25,hybrid."),
    k: str = typer.Option("1,3,5,10", "--k", help="Recall cut-offs."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log an MLflow run (child per index x mode x task)."),
) -> None:
    """Which retriever should my rag arm use? recall@k, nDCG@10, MRR@10 and evidence-in-prompt
    of each index x mode x task against the items' gold evidence, in seconds: no language
    model is loaded (except by an LM reranker: arm.retriever.rerank=lm scores with smollm2).
    Retrieved lists go into the same cache as rag cells, so a later rag
    cell of the same retriever reuses them.

    Example: biorag retrieval eval task=hpo-term-mcq --mode dense,bm25,hybrid
    """
    from biorag.cli.console import console
    from biorag.experiment.retrieval_eval import evaluate_retrieval, table_columns
    from biorag.report.render import fmt_ci

    modes = [m.strip() for m in mode.split(",") if m.strip()]
    rows = evaluate_retrieval(overrides or [], modes, _ints(k), log_run=log)
    cols = table_columns(rows)
    table = Table(title="Retrieval against gold evidence (95% bootstrap CI)")
    for c in ["index", "mode", "task", "judged", *[_short(c) for c in cols], "search s"]:
        table.add_column(c, justify="left" if c in ("index", "mode", "task") else "right")
    for r in rows:
        table.add_row(r.index, r.mode, r.task, f"{r.judged}/{r.queries}",
                      *(fmt_ci(m.value, m.lo, m.hi, digits=2) if (m := r.metrics.get(c)) else "-" for c in cols),
                      f"{r.seconds:.2f}" + (" (cached)" if r.reused == r.queries else ""))
    console.print(table)
    if not any(r.judged for r in rows):
        console.print("[yellow]no item of these tasks has gold evidence: nothing to measure[/]")
    if log and rows and rows[0].run_id:
        console.print(f"logged to MLflow ({len(rows)} child runs, the first {rows[0].run_id}); "
                      "TREC run and qrels files are their artifacts")


def _short(key: str) -> str:
    """retrieval_recall_at_3 -> R@3, retrieval_ndcg_at_10 -> nDCG@10, ..."""
    name = key.removeprefix("retrieval_")
    for long, short in (("recall_at_", "R@"), ("ndcg_at_", "nDCG@"), ("mrr_at_", "MRR@")):
        if name.startswith(long):
            return short + name[len(long):]
    return name.replace("_", " ")
