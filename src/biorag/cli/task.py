"""`biorag task ...`: inspect and validate evaluation tasks."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

app = typer.Typer(help="Inspect and validate evaluation tasks.", no_args_is_help=True)

OVERRIDES_HELP = (
    "Task overrides as key=value, with or without the `task.` prefix: task.path=data/x.jsonl "
    "task.n=50 task.fields.question=stem task.split=validation."
)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Task name (`biorag ls tasks`) or a task YAML file."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    n: int = typer.Option(3, "-n", "--num", min=1, help="How many examples to show."),
    with_context: str = typer.Option(
        None, "--with-context", help="Index name or folder: retrieve passages into the prompts."
    ),
    k: int = typer.Option(3, "-k", "--top-k", min=1, help="Passages to retrieve (--with-context)."),
    mode: str = typer.Option("dense", "--mode", "-m", help="Retrieval: dense | bm25 | hybrid."),
    show_config: bool = typer.Option(
        False, "--cfg", help="Print the resolved task config and exit."
    ),
) -> None:
    """Print the first N rendered prompts of a task with their gold answers.

    Token budgets are applied with an estimate (4 characters a token); a run uses the
    model's own tokenizer.

    Example: biorag task show hpo-term-mcq -n 3 --with-context hpo-minilm
    """
    from biorag.cli.console import console
    from biorag.config import to_yaml
    from biorag.prompting import build_prompt, mcq_continuations
    from biorag.tasks import load_examples, load_task_config
    from biorag.types import answer_text

    cfg = load_task_config(name, overrides or [])
    if show_config:
        console.print(to_yaml(cfg), highlight=False)
        return
    examples = load_examples(cfg)
    retriever = None
    if with_context:
        from biorag.retrieval import IndexContext, RetrieverConfig, open_retriever

        spec = RetrieverConfig(index=with_context, mode=mode, build_if_missing=False)
        retriever = open_retriever(spec, IndexContext(owner="task show --with-context"))
    console.print(
        f"[bold]{cfg.name}[/] v{cfg.version} ({cfg.type}, {len(examples)} examples; "
        f"metrics {', '.join(cfg.metrics)}; scoring {cfg.scoring})",
        highlight=False,
    )
    for ex in examples[:n]:
        hits = retriever.retrieve(ex.query or ex.input, k) if retriever else None
        prompt = build_prompt(cfg, ex, hits)
        body = "\n\n".join(
            (f"[dim]<{m['role']}>[/]\n" if len(prompt.messages) > 1 else "") + escape(m["content"])
            for m in prompt.messages
        )
        gold = answer_text(ex.gold)
        if ex.options and cfg.answer_type == "letter":
            gold = f"{gold} ({ex.options['ABCDEFGHIJ'.index(gold)]})"
        footer = [f"gold: {gold}"]
        if ex.options and cfg.scoring != "generate":
            footer.append(
                "scored continuations: " + " | ".join(repr(c) for c in mcq_continuations(cfg, ex))
            )
        if hits is not None:
            footer.append(
                f"passages in prompt: {len(prompt.hit_ids)} of {len(hits)}"
                + (" (cut to the budget)" if prompt.truncated else "")
            )
        console.print(Panel(body, title=escape(ex.id), title_align="left"), highlight=False)
        for line in footer:
            console.print(
                f"  [bold]{escape(line.split(':')[0])}:[/]{escape(line.split(':', 1)[1])}",
                highlight=False,
            )


@app.command("validate")
def validate(
    file: str = typer.Argument(..., help="The file to check."),
    fmt: str = typer.Option(
        None,
        "--type",
        "-t",
        help="Format: mcq | medqa | medmcqa | pubmedqa | mmlu | nli | summarisation | coding | longdoc | healthbench.",
    ),
    task: str = typer.Option(
        None, "--task", help="Check through a task's config (its field mapping)."
    ),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    limit: int = typer.Option(
        200, "--limit", help="Show at most this many problems (all are counted)."
    ),
) -> None:
    """Check a task file and report every bad row: missing fields, gold answers that are
    not among the options, duplicate ids, unreadable lines. Exit code 1 when any.

    Example: biorag task validate my_cases.jsonl --type mcq
    """
    from biorag.cli.console import console
    from biorag.tasks.validate import validate_file

    report = validate_file(file, fmt=fmt, task=task, overrides=overrides or [])
    console.print(f"[bold]{escape(file)}[/] read as {report.format}", highlight=False)
    summary = Table(show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", overflow="fold")
    for key, value in report.summary().items():
        summary.add_row(key, value)
    console.print(summary)
    if report.ok:
        console.print(f"[green]ok[/]: {len(report.examples)} examples, no problems")
        return
    t = Table(title=f"{len(report.problems)} problem(s)")
    for col in ("row", "field", "problem"):
        t.add_column(col, overflow="fold")
    for p in report.problems[:limit]:
        t.add_row("" if p.row is None else str(p.row), p.field or "", escape(p.message))
    console.print(t)
    if len(report.problems) > limit:
        console.print(f"... and {len(report.problems) - limit} more (--limit)")
    raise typer.Exit(1)


@app.command("init")
def init(
    name: str = typer.Argument(..., help="The task's name (and its file's: NAME.yaml)."),
    loader: str = typer.Option(..., "--loader", "-l", help="The loader that reads the file "
                               "(`biorag ls task-loaders`): mcq, medqa, medmcqa, pubmedqa, nli, ..."),
    path: str = typer.Option(..., "--path", "-p", help="The task's data file."),
    to: str = typer.Option(None, "--to", help="Where to write it; default experiments/task/NAME.yaml."),
    subset: str = typer.Option(None, "--subset", help="bioasq: the question type (yesno, factoid, list, summary)."),
    index: str = typer.Option(None, "--index", help="The built index rag arms search (`biorag ls indexes`)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write a commented task YAML for a file of one's own, with the loader's template,
    scoring and budgets written out to edit.

    Example: biorag task init mytask --loader medqa --path data/my_questions.jsonl
    """
    from pathlib import Path

    from biorag.cli.console import console
    from biorag.config import option_sources, packaged_config_dir
    from biorag.tasks.scaffold import write_task_file

    out = write_task_file(name, loader, path, to=to, subset=subset, force=force, index=index)
    console.print(f"[green]wrote[/] {escape(str(out))}", highlight=False)
    known = option_sources("task").get(name)
    if known and known.is_relative_to(packaged_config_dir()):
        console.print(f"[yellow]note[/]: it replaces biorag's own task '{name}' for runs from here")
    if not Path(path).expanduser().exists():
        console.print(f"[yellow]note[/]: {escape(path)} does not exist yet")
    console.print(f"next: biorag task validate {escape(path)} --task {name}\n"
                  f"      biorag experiment validate arm=base model=smollm2 task={name}", highlight=False)
