"""What the CLI prints when piped: whole cells, whole help lines."""

from __future__ import annotations

import io

from rich.table import Table
from typer.testing import CliRunner

from biorag.cli import app
from biorag.cli.console import _Console


def test_a_piped_table_wraps_and_never_cuts_a_cell():
    out = io.StringIO()
    con = _Console(file=out, width=60)
    assert not con.is_terminal
    t = Table(title="results")
    for h in ("arm", "model", "hpo-term-mcq-with-a-long-name\naccuracy_ll_norm", "icd10-code-mcq\naccuracy_ll"):
        t.add_column(h)
    t.add_row("lora_rag (baseline)", "smollm2-135m-instruct-mine", "+0.123 [0.045, 0.201]", "0.456 [0.400, 0.512]")
    con.print(t)
    text = out.getvalue()
    assert "…" not in text
    flat = "".join(ch for ch in text if ch.isalnum() or ch in "_.+[,]-")
    for cell in ("accuracy_ll_norm", "smollm2-135m-instruct-mine", "+0.123[0.045,0.201]", "hpo-term-mcq-with-a-long-name"):
        assert cell in flat


def test_piped_help_keeps_the_docstring_lines_whole():
    result = CliRunner().invoke(app, ["experiment", "run", "--help"])
    assert result.exit_code == 0
    lines = [ln.strip() for ln in result.output.splitlines()]
    assert "A rag arm builds its index when missing. A killed run started again with the same" in lines


def test_version_on_its_own():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("biorag ")


def test_a_piped_line_of_text_is_not_broken():
    out = io.StringIO()
    con = _Console(file=out, width=40)
    command = "biorag experiment run arm=base,rag,lora,lora_rag model=smollm2 task=mytask arm.adapter=mine"
    con.print(f"Compare it: {command}")
    assert command in out.getvalue() and out.getvalue().count("\n") == 1
