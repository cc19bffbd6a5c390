"""Prompts: one template with and without context, token budgets, continuations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from biorag.config import packaged_config_dir
from biorag.errors import ConfigError
from biorag.prompting import (
    approx_tokens,
    build_prompt,
    mcq_continuations,
    pack,
    render_prompt,
    truncate_to_tokens,
)
from biorag.tasks import load_task_config
from biorag.tasks.config import TaskConfig
from biorag.types import Chunk, Example, Hit

MARKER = "Zyxwv passage about something"


def words(text: str) -> int:
    """A tokenizer stand-in: one token per whitespace-separated word."""
    return len(text.split())


def hit(i: int, text: str, title: str = "") -> Hit:
    return Hit(
        Chunk(id=f"c{i}", doc_id=f"d{i}", text=text, title=title), score=1.0 / (i + 1), rank=i + 1
    )


def example_for(cfg: TaskConfig) -> Example:
    meta = {"question": "Q?", "case": "", "premise": "P.", "hypothesis": "H.", "subject": "anatomy"}
    if cfg.type == "summarisation":
        return Example(id="x", task=cfg.name, input="A long question about knees.", gold="knees?",
                       metadata=meta)
    if cfg.type == "coding":
        return Example(id="x", task=cfg.name, input="Asthma.", gold=("J45.909",))
    if cfg.type == "nli":
        return Example(
            id="x",
            task=cfg.name,
            input="Premise: P.\nHypothesis: H.",
            gold="neutral",
            options=tuple(cfg.labels),
            metadata=meta,
        )
    docs = ("Document text one.", "Document text two.") if cfg.type == "longdoc" else ()
    return Example(
        id="x",
        task=cfg.name,
        input="Which one?",
        gold="B",
        options=("Aa", "Bb", "Cc"),
        documents=docs,
        metadata=meta,
    )


TASKS = sorted(p.stem for p in (packaged_config_dir() / "task").glob("*.yaml"))


@pytest.mark.parametrize("name", TASKS)
def test_every_task_template_shows_context_only_with_hits(name: str) -> None:
    cfg = load_task_config(name)
    ex = example_for(cfg)
    closed = build_prompt(cfg, ex)
    rag = build_prompt(cfg, ex, [hit(0, MARKER, title="Some title")])
    assert MARKER not in closed.text and MARKER in rag.text
    assert closed.hit_ids == () and rag.hit_ids == ("c0",)
    # the closed-book prompt is the with-context prompt without the context block
    assert "passage" not in closed.text.lower()
    assert ex.input.splitlines()[0] in closed.text or cfg.type == "nli"
    assert closed.messages[-1]["role"] == "user"
    for letter, text in zip("ABC", ex.options, strict=False):
        if cfg.type in ("mcq", "longdoc"):
            # lettered when the letters are scored; the option texts at least when they are
            shown = text if cfg.continuation == "text" else f"{letter}. {text}"
            assert shown in closed.text


def test_render_prompt_returns_chat_messages_with_optional_system() -> None:
    cfg = load_task_config("medqa")
    ex = example_for(cfg)
    assert [m["role"] for m in render_prompt(cfg, ex)] == ["user"]
    with_system = replace(cfg, system="You are a careful clinician.")
    messages = render_prompt(with_system, ex)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You are a careful clinician."


def test_context_is_trimmed_to_the_token_budget() -> None:
    cfg = replace(load_task_config("medqa"), context_tokens=120)
    hits = [hit(i, " ".join(f"w{i}_{j}" for j in range(40))) for i in range(4)]
    p = build_prompt(cfg, example_for(cfg), hits, count_tokens=words)
    context = p.text.split("Relevant passages:")[1].split("Which one?")[0]
    assert words(context) <= 120
    # two whole passages (41 words each with their "[n]" marker), then a cut third
    assert p.hit_ids == ("c0", "c1", "c2")
    assert p.truncated
    assert "w2_0" in context and "w2_39" not in context and "…" in context
    assert "w3_0" not in context
    roomy = build_prompt(
        replace(cfg, context_tokens=1000), example_for(cfg), hits, count_tokens=words
    )
    assert roomy.hit_ids == ("c0", "c1", "c2", "c3") and not roomy.truncated


def test_a_passage_is_left_out_rather_than_cut_to_a_stub() -> None:
    texts = ["one two three", " ".join(["x"] * 100)]
    packed, used, cut = pack(texts, budget=20, count_tokens=words)
    assert (packed, used, cut) == ("one two three", 1, True)


def test_truncate_to_tokens_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta epsilon"
    assert truncate_to_tokens(text, 10, words) == text
    assert truncate_to_tokens(text, 3, words) == "alpha beta …"
    assert truncate_to_tokens(text, 0, words) == ""
    assert approx_tokens("abcd" * 10) == 10


def test_documents_are_packed_under_document_tokens() -> None:
    cfg = replace(load_task_config("longhealth"), document_tokens=40)
    docs = tuple(" ".join(f"d{i}w{j}" for j in range(30)) for i in range(3))
    ex = Example(
        id="x", task="longhealth", input="Which drug?", gold="A", options=("a", "b"), documents=docs
    )
    p = build_prompt(cfg, ex, count_tokens=words)
    assert "d0w29" in p.text and "d1w0" not in p.text and p.truncated
    assert "Document 1:" in p.text


def test_long_inputs_of_coding_tasks_are_cut_to_document_tokens() -> None:
    cfg = replace(load_task_config("medisumcode"), document_tokens=50)
    ex = Example(
        id="x", task="medisumcode", input=" ".join(f"n{j}" for j in range(200)), gold=("I10",)
    )
    p = build_prompt(cfg, ex, count_tokens=words)
    assert "n0 " in p.text and "n199" not in p.text and p.truncated


def test_mcq_continuations_letters_or_option_texts() -> None:
    cfg = load_task_config("medqa")
    ex = example_for(cfg)
    assert mcq_continuations(cfg, ex) == [" A", " B", " C"]
    assert mcq_continuations(replace(cfg, continuation="text"), ex) == [" Aa", " Bb", " Cc"]
    nli = load_task_config("mednli")
    assert mcq_continuations(nli, example_for(nli)) == [" entailment", " neutral", " contradiction"]
    with pytest.raises(ValueError):
        mcq_continuations(cfg, replace(ex, options=()))


def test_template_errors_are_config_errors() -> None:
    cfg = load_task_config("medqa")
    with pytest.raises(ConfigError, match="undefined"):
        build_prompt(replace(cfg, template="{{ no_such_variable }}"), example_for(cfg))
    with pytest.raises(ConfigError, match="template"):
        build_prompt(replace(cfg, template="{% if %}"), example_for(cfg))
    # an empty template is the loader's (biorag.tasks.defaults); a blank one is no template
    assert replace(cfg, template="").template.startswith("{% if context %}")
    with pytest.raises(ConfigError, match="no template"):
        build_prompt(replace(cfg, template="  \n"), example_for(cfg))


def test_templates_are_sandboxed() -> None:
    cfg = replace(
        load_task_config("medqa"), template="{{ example.__class__.__init__.__globals__ }}"
    )
    with pytest.raises(ConfigError, match="unsafe"):
        build_prompt(cfg, example_for(cfg))
