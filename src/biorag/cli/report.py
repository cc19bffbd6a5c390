"""`biorag report` and `biorag ui`: read a study back, and open the MLflow UI on the store."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from biorag.cli.console import FORMAT_HELP


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("ui")(ui)


def report(
    target: str = typer.Argument(
        None, show_default=False,
        help="A study name (its latest run with results), a parent run id, or an MLflow experiment "
             "name; default: the latest study run in the store that has results.",
    ),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Report folder; default reports/<experiment>-<run id prefix>/."),
    baseline: str = typer.Option(None, help="Arm to compare against; default: the study's baseline_arm."),
    metric: str = typer.Option(None, "--metric", "-m",
                               help="Headline metric (e.g. accuracy_ll); default: each task's first listed "
                                    "metric that was measured."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP),
    latex: bool = typer.Option(False, "--latex", help="Also write booktabs LaTeX tables (results.tex, "
                                                      "deltas.tex, factorial.tex) into the report folder."),
    dpi: int = typer.Option(150, min=50, max=1200, help="Resolution of the PNG figures (SVG and PDF "
                                                         "are written beside them)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the report as artifacts of the parent run."),
    all_metrics: bool = typer.Option(False, "--all", help="Print the deltas of every metric, not only the headline."),
    unparsed_threshold: float = typer.Option(
        0.05, help="Warn about a cell whose generated answers could not be read more often than this."),
) -> None:
    """Compare a study's arms: every metric with 95% CIs, paired tests against the baseline arm
    and between general and biomedical models, cost beside quality, figures (PNG, SVG, PDF),
    Markdown, HTML and, with --latex, LaTeX tables.

    When the arms form the RAG x fine-tune 2x2 (base, rag, lora, lora_rag; raft beside them),
    the report adds the main effects of retrieval and fine-tuning and their interaction, with
    paired bootstrap CIs, sign-flip tests (Holm-adjusted), their cost, an interaction plot
    and a sentence per model and task on which cell is best.

    Examples:

      biorag report                     (the latest study run with results)

      biorag report embedded --out reports/embedded --latex --dpi 300

      biorag report embedded --metric accuracy_ll --format csv > tables.csv

      biorag report 1c3ed290d4424e17b2c12edc67997247 --baseline base
    """
    from rich.markup import escape

    from biorag.cli.console import check_format, print_tables
    from biorag.report.compare import build_report, log_to_parent, report_dir
    from biorag.report.render import all_tables, write_report
    from biorag.report.study import read_study

    say = check_format(fmt)  # md, csv and json keep stdout to the tables
    study = read_study(target, baseline)
    for note in study.notes:
        say.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    rep = build_report(study, unparsed_threshold, metric)
    tables = all_tables(rep, headline_only=not all_metrics)
    print_tables(tables, fmt, left=3)
    folder = report_dir(study, out)
    files = write_report(rep, folder, dpi=dpi, latex=latex)
    if log:
        log_to_parent(rep, folder)
    for p in rep.problems:
        say.print(f"[yellow]check failed:[/] {escape(p)}", highlight=False)
    for w in (w for w in rep.warnings if w not in study.notes):
        say.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    say.print(f"report of run {study.parent_run_id} ({study.experiment}) in {folder}/: "
              + ", ".join(p.name for p in files.values())
              + (" (also logged to the parent run under report/)" if log else ""), highlight=False)


def ui(
    port: int = typer.Option(5000, help="Port to listen on; 0 picks a free one."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; keep 127.0.0.1 unless you mean to share it."),
) -> None:
    """Start the MLflow UI on the project's store (MLFLOW_TRACKING_URI, else ./mlflow.db) and
    print its URL. Stop it with Ctrl+C."""
    from biorag.cli.console import console
    from biorag.tracking.runs import tracking_uri
    from biorag.tracking.ui import start_ui

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        console.print(f"MLFLOW_TRACKING_URI points at a server already: open {uri}")
        return
    # a TERM (not only Ctrl+C) must stop the server too: exit through start_ui's cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with start_ui(uri, host=host, port=port) as server:
        console.print(f"MLflow UI on {uri}\n  {server.url}\n  runs of the latest study: {server.runs_url()}"
                      "\nCtrl+C stops it.")
        server.wait()
