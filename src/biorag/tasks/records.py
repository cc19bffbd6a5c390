"""Reading a task's records (local files or the Hugging Face hub) and turning them into
`Example`s while collecting every bad row, so `biorag task validate` can list them all."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biorag.errors import ConfigError, InputError, did_you_mean, input_lines, too_long
from biorag.tasks.config import TaskConfig
from biorag.types import Example

log = logging.getLogger(__name__)

KEY = "__key__"  # the key of a record in a JSON object of records (PubMedQA's PMIDs)
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".xlsx")


@dataclass(frozen=True)
class Problem:
    """One bad row: where it is, which field, what is wrong."""

    file: str
    row: int | None
    field: str | None
    message: str

    def error(self, more: int = 0) -> InputError:
        msg = self.message
        if more:
            msg += f" (and {more} more problem{'s' * (more > 1)}; `biorag task validate` lists them all)"
        return InputError(msg, file=self.file, line=self.row, field=self.field)

    def __str__(self) -> str:
        return str(self.error())


class RowError(Exception):
    """Raised by a row converter; the driver adds file and row."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def source_label(cfg: TaskConfig) -> str:
    if cfg.path:
        return cfg.path
    return f"hf:{cfg.dataset}" + (f"/{cfg.subset}" if cfg.subset else "") + f"[{cfg.split}]"


def iter_records(
    cfg: TaskConfig, subsets: list[str | None] | None = None
) -> Iterator[tuple[int | None, dict | Problem]]:
    """(row, record) pairs from the task's file or hub dataset; unreadable rows are Problems."""
    if cfg.path:
        yield from read_file(cfg.path, cfg.name)
    elif cfg.dataset:
        for subset in subsets or [cfg.subset]:
            yield from _hub_records(cfg, subset)
    else:
        raise ConfigError(f"task {cfg.name}: no source; set task.path=FILE or task.dataset=HUB_ID")


def read_file(path_str: str, task: str = "") -> Iterator[tuple[int | None, dict | Problem]]:
    path = Path(path_str).expanduser()
    if not path.is_file():
        hint = (
            f" Put the file there or pass task.path=FILE; `biorag task show {task}` and experiments/task/{task}.yaml describe its format."
            if task
            else ""
        )
        raise InputError(f"no such file.{hint}", file=path_str)
    suffix = path.suffix.lower()
    if suffix == ".json" and _json_lines(path):  # CLUE's data scripts write JSON lines as .json
        suffix = ".jsonl"
    if suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as fh:
            offset = 0
            for line_no, raw in input_lines(fh):
                if raw is None:
                    yield line_no, Problem(path_str, line_no, None, too_long())
                    offset = fh.tell()
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield line_no, Problem(path_str, line_no, None, _not_utf8(e.object[e.start], e.start, offset))
                    offset += len(raw)
                    continue
                offset += len(raw)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, Problem(path_str, line_no, None, f"not valid JSON ({e.msg})")
                    continue
                yield (
                    line_no,
                    rec
                    if isinstance(rec, dict)
                    else Problem(path_str, line_no, None, "not a JSON object"),
                )
    elif suffix == ".json":
        try:
            data = json.loads(_utf8(path, path_str))
        except json.JSONDecodeError as e:
            raise InputError(
                f"not valid JSON ({e.msg} at line {e.lineno})", file=path_str, line=e.lineno
            ) from None
        items = (
            data.items()
            if isinstance(data, dict)
            else enumerate(data)
            if isinstance(data, list)
            else None
        )
        if items is None:
            raise InputError("expected a JSON list or object of records", file=path_str)
        for i, (key, rec) in enumerate(items, 1):
            if not isinstance(rec, dict):
                yield i, Problem(path_str, i, None, f"record {key!r} is not a JSON object")
            else:
                yield i, {KEY: str(key), **rec} if isinstance(data, dict) else rec
    elif suffix in (".csv", ".tsv"):
        with io.StringIO(_utf8(path, path_str), newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for rec in reader:
                yield reader.line_num, dict(rec)
    elif suffix == ".xlsx":  # MeQSum ships as a spreadsheet: its first sheet, a row a record
        import pandas as pd

        try:
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        except ImportError:
            raise InputError("reading .xlsx needs openpyxl (pip install openpyxl)", file=path_str) from None
        for i, rec in enumerate(frame.to_dict("records"), 2):  # row 1 is the header
            yield i, rec
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist(), 1):
            yield i, rec
    else:
        raise InputError(
            f"unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}", file=path_str
        )


def _not_utf8(byte: int, in_line: int, line_start: int) -> str:
    return (f"not valid UTF-8: byte 0x{byte:02x} at byte {in_line} of the line (byte "
            f"{line_start + in_line} of the file); re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _utf8(path: Path, path_str: str) -> str:
    """A whole file's text; bytes that are not UTF-8 are an error naming the line and offset."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        raise InputError(_not_utf8(raw[e.start], e.start - start, start), file=path_str,
                         line=raw.count(b"\n", 0, e.start) + 1) from None


def _json_lines(path: Path) -> bool:
    """Whether a .json file holds one object a line rather than one JSON value."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = next((line for line in fh if line.strip()), "")
        second = next((line for line in fh if line.strip()), "")
    if not first.lstrip().startswith("{") or not second.lstrip().startswith("{"):
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def read_json(cfg: TaskConfig, what: str, where: str) -> tuple[str, Any]:
    """The text and the parsed JSON of a task's one file (`what`, e.g. "MIRAGE's
    benchmark.json"; `where`: where a user gets it)."""
    if not cfg.path:
        raise ConfigError(f"task {cfg.name}: set task.path to {what}")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise InputError(f"no such file. {what} is at {where}; pass task.path=FILE", file=cfg.path)
    raw = _utf8(path, cfg.path)
    try:
        return raw, json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", file=cfg.path, line=e.lineno) from None


def _hub_records(cfg: TaskConfig, subset: str | None) -> Iterator[tuple[int, dict]]:
    import datasets

    ds = datasets.load_dataset(cfg.dataset, subset, split=cfg.split, revision=cfg.revision)
    for i, rec in enumerate(ds, 1):
        yield i, dict(rec)


def get(rec: dict, dotted: str) -> Any:
    """A field of a record; dotted names reach into nested objects (`context.contexts`)."""
    value: Any = rec
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise RowError("missing", field=dotted)
        value = value[part]
    return value


def text(rec: dict, dotted: str, *, required: bool = True) -> str:
    """A non-empty string field (numbers are turned into text); comma-separated names join
    several columns, each under its name (a note's sections)."""
    if "," in dotted:
        parts = [
            (name.strip(), text(rec, name.strip(), required=False)) for name in dotted.split(",")
        ]
        joined = "\n\n".join(f"{name}:\n{value}" for name, value in parts if value)
        if required and not joined:
            raise RowError("empty", field=dotted)
        return joined
    try:
        value = get(rec, dotted)
    except RowError:
        if required:
            raise
        return ""
    if value is None:
        value = ""
    if isinstance(value, (dict, list)):
        raise RowError(f"expected text, found a JSON {type(value).__name__}", field=dotted)
    value = str(value).strip()
    if required and not value:
        raise RowError("empty", field=dotted)
    return value


def example_id(cfg: TaskConfig, rec: dict, field: str | None, row: int | None) -> str:
    """The record's id field when it has one, else `<task>-<row>`."""
    if field:
        try:
            value = get(rec, field)
        except RowError:
            value = None
        if value not in (None, ""):
            return str(value)
    return f"{cfg.name}-{row}"


def resolve_fields(
    cfg: TaskConfig, defaults: dict[str, str | None], required: tuple[str, ...]
) -> dict[str, str | None]:
    """The loader's default field names overridden by the task's `fields` mapping."""
    unknown = [k for k in cfg.fields if k not in defaults]
    if unknown:
        raise ConfigError(
            f"task {cfg.name}: fields: " + did_you_mean(unknown[0], defaults, what="field")
        )
    fields = {**defaults, **cfg.fields}
    for name in required:
        if not fields.get(name):
            raise ConfigError(f"task {cfg.name}: field '{name}' is required and cannot be null")
    return fields


Converter = Callable[[dict, int | None], "Example | list[Example]"]


def build(
    cfg: TaskConfig,
    convert: Converter,
    problems: list[Problem] | None,
    records: Iterator[tuple[int | None, dict | Problem]] | None = None,
    id_field: str | None = "id",
) -> list[Example]:
    """Convert every record; bad rows and duplicate ids become Problems.

    With a `problems` list, they are appended there and the good examples returned (for
    validation); without one, the first is raised with a count of the rest.
    """
    where = source_label(cfg)
    found: list[Problem] = []
    examples: list[Example] = []
    seen: dict[str, int | None] = {}
    for row, rec in records if records is not None else iter_records(cfg):
        if isinstance(rec, Problem):
            found.append(rec)
            continue
        try:
            made = convert(rec, row)
        except RowError as e:
            found.append(Problem(where, row, e.field, str(e)))
            continue
        for ex in made if isinstance(made, list) else [made]:
            if ex.id in seen:
                found.append(
                    Problem(
                        where, row, id_field, f"duplicate id '{ex.id}' (first at row {seen[ex.id]})"
                    )
                )
                continue
            seen[ex.id] = row
            examples.append(ex)
    if not examples and not found:
        found.append(Problem(where, None, None, "no examples: the task is empty"))
    if problems is not None:
        problems.extend(found)
        return examples
    if found:
        raise found[0].error(more=len(found) - 1)
    return examples
