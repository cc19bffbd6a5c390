"""`biorag task ...`: inspect and validate evaluation tasks."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect and validate evaluation tasks.", no_args_is_help=True)
