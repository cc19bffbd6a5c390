"""The shape of the package: one package per stage, no import circles, MLflow behind
`biorag.tracking`, modules of a readable size, and one shared definition of what is shared."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "biorag"
STAGES = ("corpora", "indexing", "retrieval", "tasks", "models", "scoring", "tracking", "finetune",
          "experiment", "report", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = f
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement names (at module level or inside a function)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def test_every_stage_is_a_package() -> None:
    for stage in STAGES:
        assert (SRC / stage / "__init__.py").is_file(), f"src/biorag/{stage}/ is not a package"
    flat = sorted(p.stem for p in SRC.glob("*.py"))
    assert flat == ["__init__", "__main__", "atomic", "config", "contamination", "errors", "hardware",
                    "progress", "prompting", "registry", "types"]


def test_only_tracking_imports_mlflow() -> None:
    offenders = [f"{name} (line {line})" for name, path in _modules().items()
                 if not name.startswith("biorag.tracking")
                 for mod, line in _imports(path) if mod == "mlflow" or mod.startswith("mlflow.")]
    assert not offenders, "mlflow imported outside biorag.tracking: " + ", ".join(offenders)


def test_no_import_circles() -> None:
    mods = _modules()
    edges = {m: {t for t, _ in _imports(p) if t in mods and t != m} for m, p in mods.items()}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt, [*stack, nxt], done)
        done.add(node)

    done: set[str] = set()
    for m in sorted(mods):
        if m not in done:
            visit(m, [m], done)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_readable(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= 400, f"{name} has {lines} lines; split it by meaning (docs/contributing.md)"


def test_tracking_keys_name_what_the_runner_and_report_use() -> None:
    """The writers and the reader share the names: no tag or artifact string is repeated."""
    from biorag.tracking import keys

    for name in ("experiment/runner.py", "report/study.py", "finetune/run.py"):
        text = (SRC / name).read_text()
        for literal in ('"biorag.kind"', '"predictions.jsonl"', '"index_manifest.json"', '"baseline_arm"',
                        '"model_family"', '"mlflow.parentRunId"', '"_ci_low"'):
            assert literal not in text, f"{name} spells {literal} instead of using biorag.tracking.keys"
    assert keys.metric("medqa", "accuracy") == "medqa/accuracy"
    assert keys.split_metric("medqa/accuracy_ci_low") == ("medqa", "accuracy_ci_low")
    assert keys.versions({"backend": "hf"}) == {"versions.backend": "hf"}


def test_titled_puts_a_title_in_front_once() -> None:
    from biorag.types import adds_title, titled

    assert titled("Fever", "Raised temperature") == "Fever. Raised temperature"
    assert titled("Fever", "Fever is a raised temperature") == "Fever is a raised temperature"
    assert titled("", "text") == "text"
    assert titled("T", "x", "\n") == "T\nx"
    assert not adds_title("Fever", "Fever 38C") and adds_title("Fever", "38C")


def test_title_rule_has_one_definition() -> None:
    """Every stage that shows a title before a text goes through `biorag.types.titled`."""
    offenders = [name for name, path in _modules().items() if name != "biorag.types"
                 and any(s in path.read_text() for s in (".startswith(title)", ".startswith(doc.title)",
                                                          ".startswith(chunk.title)", ".startswith(hit.chunk.title)"))]
    assert not offenders, offenders


def test_letters_live_in_types_so_tasks_and_prompting_do_not_import_scoring() -> None:
    for name, path in _modules().items():
        if name.startswith(("biorag.tasks", "biorag.prompting")):
            assert not [m for m, _ in _imports(path) if m.startswith("biorag.scoring")], name
