"""Task files with bytes that are not UTF-8, truncated or of the wrong shape, through every
file loader: a message naming the file and the line, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biorag.errors import BioragError
from biorag.tasks import load_examples
from biorag.tasks.config import TaskConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"
# (loader, fixture file): every file loader's own format
FILES = [("medqa", "medqa.jsonl"), ("medmcqa", "medmcqa.jsonl"), ("mcq", "case_challenge.jsonl"),
         ("nli", "mednli.jsonl"), ("coding", "coding.jsonl"), ("summarisation", "meqsum.csv")]


FIELDS = {"meqsum.csv": {"text": "CHQ", "summary": "Summary"},
          "coding.jsonl": {"id": "id", "text": "text", "codes": "codes"}}


def _task(loader: str, path: Path) -> TaskConfig:
    return TaskConfig(name="fuzz", loader=loader, path=str(path), fields=FIELDS.get(path.name, {}))


def _spoil(src: Path, dst: Path, how: str) -> int:
    """Write `src` to `dst` spoiled at its second line; the line number spoiled."""
    lines = src.read_bytes().splitlines(keepends=True)
    i = 1 if len(lines) > 1 else 0
    if how == "bad-bytes":
        lines[i] = lines[i][:5] + b"\xff\xfe" + lines[i][5:]
    elif how == "truncated":
        lines[i] = lines[i][: len(lines[i]) // 2]
        lines = lines[: i + 1]
    elif how == "wrong-type":
        lines[i] = b"[1, 2, 3]\n" if src.suffix == ".jsonl" else b"1,2\n"
    dst.write_bytes(b"".join(lines))
    return i + 1


@pytest.mark.parametrize("how", ["bad-bytes", "truncated", "wrong-type"])
@pytest.mark.parametrize("loader, name", FILES)
def test_a_spoiled_task_file_is_a_message_with_file_and_line(tmp_path, loader, name, how):
    path = tmp_path / name
    line = _spoil(FIXTURES / name, path, how)
    problems: list = []
    try:
        load_examples(_task(loader, path), problems)
    except BioragError as e:  # a whole-file failure: names the file (and the line where known)
        assert str(path) in str(e) or path.name in str(e)
        if how == "bad-bytes":
            assert f"line {line}" in str(e) or f":{line}" in str(e), str(e)
        return
    if how == "wrong-type" and path.suffix == ".csv":
        return  # a CSV row of other cells is a row with missing fields, caught per field below
    assert problems, f"{how} {name}: nothing reported"
    first = problems[0]
    assert first.file == str(path) and first.row == line
    if how == "bad-bytes":
        assert "not valid UTF-8: byte 0xff" in first.message


def test_the_clean_fixtures_load(tmp_path):
    for loader, name in FILES:
        shutil.copy(FIXTURES / name, tmp_path / name)
        assert load_examples(_task(loader, tmp_path / name))
