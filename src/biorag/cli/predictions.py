"""`biorag predictions show`: a cell's items, answers and passages, for error analysis."""

from __future__ import annotations

import json
import math

import typer
from rich.markup import escape

app = typer.Typer(help="Read a cell's predictions back: items, gold, answers, passages, scores.",
                  no_args_is_help=True)


@app.command("show")
def show(
    target: str = typer.Argument(..., help="A cell's run id, or a cell name (arm/model/task, e.g. "
                                           "rag/smollm2/hpo-term-mcq) in --study."),
    study: str = typer.Option(None, "--study", "-s", help="A study name, parent run id or experiment; "
                                                            "default: the latest study run with results."),
    wrong: bool = typer.Option(False, "--wrong", help="Only the items the cell got wrong (headline metric < 1)."),
    stratum: str = typer.Option(None, "--stratum", help="Only one retrieval stratum of a rag cell: evidence "
                                                        "(gold evidence in the prompt), no-evidence, leaked, clean."),
    metric: str = typer.Option(None, "--metric", help="The per-item metric that decides right and wrong; "
                                                      "default: the task's headline."),
    limit: int = typer.Option(10, "-n", "--limit", min=0, help="Items shown; 0: all."),
    as_json: bool = typer.Option(False, "--json", help="Print the items as JSON (all fields, no limit)."),
) -> None:
    """Print a cell's items with the gold answer, the model's answer and output, the passages
    in its prompt and every per-item score.

    Examples:

      biorag predictions show rag/smollm2/hpo-term-mcq --wrong

      biorag predictions show rag/smollm2/hpo-term-mcq --stratum no-evidence -n 5

      biorag predictions show 1c3ed290d4424e17b2c12edc67997247 --json > items.json
    """
    from biorag.cli.console import console, err_console
    from biorag.report.predictions import cell_items

    view = cell_items(target, study, wrong=wrong, stratum=stratum, metric=metric)
    for note in view.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if as_json:
        console.print_json(data={"cell": view.cell, "run_id": view.run_id, "metric": view.metric,
                                 "items": [i.to_dict() for i in view.items]})
        return
    shown = view.items if limit == 0 else view.items[:limit]
    which = " wrong" if wrong else ""
    which += f" in stratum {stratum}" if stratum else ""
    console.print(f"[bold]{escape(view.cell)}[/] (run {view.run_id}): {len(view.items)}{which} of "
                  f"{view.n_total} items, showing {len(shown)}; right/wrong by {view.metric}", highlight=False)
    for n, item in enumerate(shown, 1):
        mark = "?" if math.isnan(item.correct) else "right" if item.correct >= 1 else "wrong"
        colour = {"right": "green", "wrong": "red"}.get(mark, "yellow")
        console.print(f"\n[bold]{n}. {escape(item.id)}[/] [{colour}]{mark}[/]", highlight=False)
        if item.input is not None:
            console.print(escape(item.input), highlight=False)
        for letter, option in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", item.options, strict=False):
            console.print(f"  {letter}. {escape(option)}", highlight=False)
        console.print(f"gold: [bold]{escape(item.gold)}[/]   answer: [bold]{escape(item.answer or '(none)')}[/]",
                      highlight=False)
        if item.output:
            console.print(f"output: {escape(json.dumps(item.output))}", highlight=False)
        if item.option_logprobs:
            best = max(range(len(item.option_logprobs)), key=item.option_logprobs.__getitem__)
            lls = ", ".join(f"{chr(65 + j)} {v:.2f}" for j, v in enumerate(item.option_logprobs))
            console.print(f"log-likelihoods: {lls} (highest: {chr(65 + best)})", highlight=False)
        for i, p in enumerate(item.passages, 1):
            console.print(f"  passage {i} \\[{escape(p.chunk_id)}]: {escape(p.text or '(text not here)')}",
                          highlight=False)
        scores = ", ".join(f"{k} {v:g}" for k, v in sorted(item.scores.items()) if not math.isnan(v))
        console.print(f"[dim]scores: {escape(scores)}[/]", highlight=False)
