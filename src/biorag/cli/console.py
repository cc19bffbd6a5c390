"""Where the CLI writes what the user sees (the library logs; it never prints)."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
