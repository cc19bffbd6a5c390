"""The shape of the package: one package per stage, each stage importing only the stages on
its floor or below, no import circles, MLflow behind `biorag.tracking`, and one shared
definition of what is shared."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "biorag"
STAGES = ("corpora", "indexing", "retrieval", "tasks", "models", "scoring", "tracking", "finetune",
          "experiment", "report", "cli")

# The floors, lowest first: a stage may import the stages on lower floors, and those on its
# own floor as long as no two of them import each other (no circle, checked below). The order
# follows the data flow: shared vocabulary, then models and tasks (a task knows nothing of
# retrieval), what is scored and prompted, the corpora, their indexes, retrieval over them, the
# contamination audit (of indexes and training data), then what calls the model around
# retrieval -- the judges and the model-calling RAG methods go on a floor of their own here,
# between `contamination` and `finetune`, when they land -- then fine-tuning (RAFT retrieves
# as an arm does, through `retrieval/`), the experiment runner, the report and the CLI.
# `__main__` counts as the CLI; the package root (`biorag/__init__.py`) imports nothing.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("types", "errors", "progress"),
    ("config", "registry", "hardware", "tracking"),
    ("atomic",),
    ("models",),
    ("tasks",),
    ("scoring", "prompting"),
    ("corpora",),
    ("indexing",),
    ("retrieval",),
    ("contamination",),
    ("judges", "augment"),
    ("finetune",),
    ("experiment",),
    ("report",),
    ("cli", "__main__"),
)
FLOOR = {stage: n for n, floor in enumerate(FLOORS) for stage in floor}

# A module over this many lines is an outlier worth a look. Not a target: modules are split
# where they hold two things (STYLE.md), and a cap at 400 made commits move code only to get
# back under it; 600 flags what has grown well past any module of today's tree.
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = f
    return out


def _imports(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """Every module an import statement names (at module level or inside a function), relative
    imports resolved against the importing module's package; `text`: the code, if not the file's."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    package = package.removesuffix(".__init__") if path.name == "__init__.py" else package.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            out += [(base, node.lineno)] + [(f"{base}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def _stage(module: str) -> str | None:
    """The stage a `biorag.*` module belongs to (`biorag.retrieval.fusion` -> retrieval)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "biorag" and len(parts) > 1 else None


def _stage_imports() -> dict[tuple[str, str], list[str]]:
    """{(importing stage, imported stage): ["module (line n)", ...]} across stages."""
    known = {_stage(m) for m in _modules()} - {None}
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in _modules().items():
        src = _stage(name)
        for target, line in _imports(path):
            dst = _stage(target)
            if src and dst in known and dst != src:
                edges.setdefault((src, dst), []).append(f"{name} (line {line})")
    return edges


def test_every_stage_has_a_floor() -> None:
    stages = {_stage(m) for m in _modules()} - {None}
    assert not stages - set(FLOOR), (f"{sorted(stages - set(FLOOR))} on no floor: add them to FLOORS in "
                                     "tests/unit/test_layout.py and to the architecture page")
    root = [name for name, _ in _imports(SRC / "__init__.py")]
    assert root and all(name.split(".")[0] in sys.stdlib_module_names for name in root), \
        f"the package root imports no stage, only the standard library: {root}"


def test_each_stage_imports_only_its_floor_and_below() -> None:
    upward = [f"{src} -> {dst}: {', '.join(sorted(set(where)))}" for (src, dst), where in sorted(_stage_imports().items())
              if FLOOR[dst] > FLOOR[src]]
    assert not upward, "imports up the floors (tests/unit/test_layout.py FLOORS):\n" + "\n".join(upward)


def test_no_circles_between_stages() -> None:
    """Stages on one floor may import each other one way only; no circle through several."""
    edges: dict[str, set[str]] = {}
    for src, dst in _stage_imports():
        edges.setdefault(src, set()).add(dst)
    circles = []

    def reach(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > start:  # each circle once, from its smallest stage
                reach(start, nxt, [*path, nxt])

    for stage in sorted(edges):
        reach(stage, stage, [stage])
    assert not circles, "import circles between stages: " + "; ".join(circles)


def test_the_walk_sees_imports_inside_functions_and_relative_ones() -> None:
    code = "def f():\n    from biorag.experiment.resources import prepare\n    from ..tasks import x\n"
    found = dict(_imports(SRC / "finetune" / "raft.py", code))
    assert found["biorag.experiment.resources"] == 2 and found["biorag.tasks"] == 3
    assert FLOOR[_stage("biorag.experiment.resources")] > FLOOR["finetune"]


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
def test_no_module_is_an_outlier(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, (f"{name} has {lines} lines; if it holds two things, split it by meaning "
                                "(docs/contributing.md)")


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
