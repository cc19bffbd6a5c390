"""The README is an entry point whose links land on the documentation site's pages, and every
page is in the site's navigation. (`scripts/test.sh` also builds the site with --strict, which
checks every link and anchor between pages.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md is the entry point: at most 150 lines"
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert (REPO / "scripts" / "demo.sh").is_file() and (REPO / "scripts" / "test.sh").is_file()


def test_readme_links_land_on_files_of_the_repository() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in local), "README links into no docs page"
    missing = [link for link in local if not (REPO / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert sorted(nav) == pages
    for page in ("architecture.md", "cli.md", "contributing.md", "own-data.md"):
        assert page in nav, page


def test_the_cli_reference_is_generated_from_the_commands() -> None:
    import click

    from biorag.cli import app, click_app

    assert "::: mkdocs-click" in (REPO / "docs" / "cli.md").read_text()
    assert ":command: click_app" in (REPO / "docs" / "cli.md").read_text()
    assert hasattr(click_app, "commands") or isinstance(click_app, click.Command)
    names = set(click_app.commands)
    assert {"index", "experiment", "report", "predictions", "ui", "finetune"} <= names
    assert app.info.name == "biorag"
