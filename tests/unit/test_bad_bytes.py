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


def _long_line_file(src: Path, dst: Path, size: int) -> None:
    """`src` with a line of `size` bytes (a JSON string, no newline inside) after its first."""
    lines = src.read_bytes().splitlines(keepends=True)
    with dst.open("wb") as f:
        f.write(lines[0])
        f.write(b'{"question": "' + b"x" * size + b'"}\n')
        f.writelines(lines[1:])


def _peak_mb(load) -> tuple[object, float]:
    import tracemalloc

    tracemalloc.start()
    try:
        out = load()
        return out, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_a_huge_line_in_a_task_file_is_one_problem_read_in_bounded_memory(tmp_path, monkeypatch):
    """A 24 MB line over a 1 MB limit ($BIORAG_MAX_LINE_MB; 64 MB by default): its line is a
    problem that says what to raise, the rest of the file loads, and the line is never held whole."""
    monkeypatch.setenv("BIORAG_MAX_LINE_MB", "1")
    path = tmp_path / "medqa.jsonl"
    _long_line_file(FIXTURES / "medqa.jsonl", path, 24 << 20)
    problems: list = []
    examples, peak = _peak_mb(lambda: load_examples(_task("medqa", path), problems))
    clean = load_examples(_task("medqa", FIXTURES / "medqa.jsonl"))
    assert len(examples) == len(clean) and peak < 8, peak
    assert [(p.file, p.row) for p in problems] == [(str(path), 2)]
    assert "longer than 1 MB" in problems[0].message and "BIORAG_MAX_LINE_MB" in problems[0].message


def test_a_huge_line_in_a_corpus_file_is_one_skipped_record_read_in_bounded_memory(tmp_path, monkeypatch, caplog):
    from biorag.corpora import CorpusConfig, open_corpus

    monkeypatch.setenv("BIORAG_MAX_LINE_MB", "1")
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b'{"id": "a", "text": "first"}\n{"id": "b", "text": "' + b"y" * (24 << 20)
                     + b'"}\n{"id": "c", "text": "third"}\n')
    with pytest.raises(BioragError, match=rf"{path}:2: line longer than 1 MB"):  # on_error=raise, the default
        list(open_corpus(CorpusConfig(name="t", loader="jsonl", path=str(path), title_field=None)))
    reader = open_corpus(CorpusConfig(name="t", loader="jsonl", path=str(path), title_field=None, on_error="skip"))
    docs, peak = _peak_mb(lambda: list(reader))
    assert [d.id for d in docs] == ["a", "c"] and reader.stats.skipped_malformed == 1 and peak < 8, peak
    assert f"{path}:2" in caplog.text and "longer than 1 MB" in caplog.text


def test_a_line_limit_that_is_not_a_number_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("BIORAG_MAX_LINE_MB", "lots")
    with pytest.raises(BioragError, match="BIORAG_MAX_LINE_MB must be a number"):
        load_examples(_task("medqa", FIXTURES / "medqa.jsonl"))
