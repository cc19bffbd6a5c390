"""The `biorag` command line. It parses arguments and calls the library; no logic here."""

from __future__ import annotations

import logging
import sys

import typer

from biorag.cli.console import console, err_console
from biorag.errors import BioragError


def _piped_help_width() -> None:
    """Help piped to a file or a pager keeps the docstrings' own lines (up to 100 characters,
    indented) whole: rich would otherwise wrap them at 80 and leave a word on a line of its
    own mid-sentence."""
    import os

    from typer import rich_utils

    if not sys.stdout.isatty() and not os.environ.get("TERMINAL_WIDTH") and not os.environ.get("COLUMNS"):
        rich_utils.MAX_WIDTH = PIPED_HELP_WIDTH


PIPED_HELP_WIDTH = 120
_piped_help_width()

app = typer.Typer(
    name="biorag",
    help=(
        "Does adapting an LLM to medicine help, and which way? Build retrieval indexes over "
        "medical corpora, run experiment arms (base, rag, lora, lora_rag) tracked in MLflow, "
        "and compare them.\n\nConfigs are biorag's own, then ./experiments/, then the folders in "
        "$BIORAG_CONFIG_PATH (a file of your own adds or replaces one of the same name); "
        "choose them as group=option and override fields as key=value, e.g. "
        "`biorag index build corpus=hpo embedder=minilm index=hnsw`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from biorag import __version__

        console.print(f"biorag {__version__}")
        raise typer.Exit()


# libraries whose INFO and DEBUG lines are noise at biorag's levels (some set their own level on
# import, so a handler filter keeps them quiet rather than a logger level)
NOISY = ("httpx", "urllib3", "filelock", "sentence_transformers", "faiss", "bm25s", "fontTools")


class _QuietLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in NOISY


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; warnings only."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    from biorag import progress

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if quiet:
        progress.set_enabled(False)


def _register() -> None:
    from biorag.cli import (
        doctor,
        experiment,
        index,
        judge,
        ls,
        predictions,
        retrieval,
        task,
        tracking,
    )
    from biorag.cli import finetune as finetune_cli
    from biorag.cli import report as report_cli

    app.add_typer(index.app, name="index")
    app.add_typer(experiment.app, name="experiment")
    app.add_typer(task.app, name="task")
    app.add_typer(retrieval.app, name="retrieval")
    app.add_typer(predictions.app, name="predictions")
    app.add_typer(judge.app, name="judge")
    app.add_typer(tracking.app, name="tracking")
    ls.register(app)
    doctor.register(app)
    report_cli.register(app)
    finetune_cli.register(app)


_register()


def __getattr__(name: str) -> object:
    """`click_app`: the app as a click command, built on first use (the docs' CLI reference
    renders every command's help from it with mkdocs-click)."""
    if name == "click_app":
        return typer.main.get_command(app)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


INTERRUPTED = ("[yellow]interrupted.[/] Nothing finished is lost: run the same command again to "
               "resume (finished index shards, fine-tune checkpoints and predictions are kept).")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`), raised as Ctrl-C is, so runs end KILLED,
    nothing half-written stays and the resume line is printed."""


_terminated = False


def _terminate(signum: int, frame: object) -> None:
    global _terminated
    _terminated = True
    raise Terminated


def main() -> None:
    """Entry point: run the app; a BioragError is a message and exit code 2, not a traceback;
    Ctrl-C and SIGTERM stop it cleanly (exit 130 and 143)."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except BioragError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except SystemExit as e:
        if e.code == 130:  # Typer's exit on Ctrl-C (and on SIGTERM, raised as one)
            err_console.print(INTERRUPTED, highlight=False)
            sys.exit(143 if _terminated else 130)
        raise
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED, highlight=False)
        sys.exit(143 if _terminated else 130)
