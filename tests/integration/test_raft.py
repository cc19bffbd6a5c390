"""RAFT data and the raft arm on real assets: the embedded HPO task (training items from
another seed), a small MiniLM index of term definitions, and a tiny random model.

The gold passage is in exactly the configured share of prompts, distractors are never gold,
training and evaluation items are disjoint, the audit refuses an overlapping set, and a
raft cell refuses to score items its adapter was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.tiny_model import build_tiny_model

from biorag.contamination import AuditSettings
from biorag.corpora.training import DataConfig, RaftSettings
from biorag.errors import BioragError, ContaminationError
from biorag.finetune.config import FinetuneConfig, LoraSettings, TrainSettings
from biorag.finetune.raft import (
    gold_share,
    overlap,
    raft_data,
    refuse_overlap,
    render_task,
    retriever_spec,
)
from biorag.models.config import ModelConfig
from biorag.prompting import approx_tokens
from biorag.tasks.splits import shared_items, training_split

TASK = "hpo-term-mcq"
EVAL_N, TRAIN_N = 6, 10


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("raft")


@pytest.fixture(scope="module")
def index(root: Path) -> Path:
    """Definitions of the evaluation items (seed 0) and of the training items (seed 1), each
    the document of its HPO term, plus a few more terms as extra distractors."""
    from biorag.indexing.build import build_index, load_build_config
    from biorag.tasks import load_examples, load_task_config

    docs = {}
    for seed, n in ((0, EVAL_N + 4), (1, 3 * TRAIN_N)):
        for e in load_examples(load_task_config(TASK, [f"n={n}", f"seed={seed}"])):
            term = e.options["ABCDEFGHIJ".index(e.gold)]
            docs[e.evidence[0]] = {"id": e.evidence[0], "title": term, "text": f"{term}: {e.input}"}
    corpus = root / "defs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs.values()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIORAG_INDEX_DIR", str(root / "indexes"))
        return build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "name=defs",
                                              f"root={root / 'indexes'}"])).path


def _raft(index: Path, **kw) -> RaftSettings:
    settings = {"tasks": [TASK], "arm": "rag", "overrides": [f"arm.retriever.index={index}", "arm.retriever.k=3",
                                                           "task.scoring=loglikelihood"],
                "train": ["task.seed=1"], "exclude": [f"task.n={EVAL_N}"], "n": TRAIN_N, "p_gold": 0.8,
                "depth": 10, **kw}
    return RaftSettings(**settings)


def _examples(index: Path, **kw):
    raft = _raft(index, **kw)
    split = training_split(TASK, raft.overrides, raft.train, raft.exclude, raft.n).cut()
    return split, render_task(split, raft, approx_tokens)


@pytest.mark.parametrize("p_gold", [0.8, 0.5, 0.0])
def test_gold_is_in_exactly_the_configured_share(index: Path, p_gold: float) -> None:
    split, (examples, stats) = _examples(index, p_gold=p_gold)
    assert len(examples) == TRAIN_N and stats["gold_available"] == TRAIN_N
    with_gold = [x for x in examples if x.gold_in_prompt]
    assert len(with_gold) == gold_share(TRAIN_N, p_gold) == stats["gold_drawn"]
    assert {x.id for x in with_gold} == {x.id for x in examples if x.gold_drawn}
    items = {e.id: e for e in split.train}
    for x in examples:
        gold = set(items[x.id].evidence)
        assert len(x.passages) == 3
        # a distractor is never gold: the gold document is there once when drawn, else not at all
        assert sum(d in gold for d in x.passages) == int(x.gold_drawn)
        assert x.messages[-1]["role"] == "assistant"
        assert x.messages[-1]["content"] == " " + items[x.id].options["ABCDE".index(items[x.id].gold)]


def test_the_draw_is_seeded(index: Path) -> None:
    a = {x.id for x in _examples(index, p_gold=0.5)[1][0] if x.gold_drawn}
    b = {x.id for x in _examples(index, p_gold=0.5)[1][0] if x.gold_drawn}
    c = {x.id for x in _examples(index, p_gold=0.5, seed=7)[1][0] if x.gold_drawn}
    assert a == b and len(a) == len(c) == 5 and a != c


def test_training_items_are_not_evaluation_items() -> None:
    split = training_split(TASK, [], ["task.seed=1"], [f"task.n={EVAL_N}"], TRAIN_N).cut()
    assert len(split.train) == TRAIN_N and not shared_items(split.train, split.evaluation)
    # the same generator and seed as the evaluation: its first items are the evaluation items
    same = training_split(TASK, [], [], [f"task.n={EVAL_N}"], TRAIN_N)
    assert sorted(same.dropped) == sorted(e.id for e in same.evaluation)
    assert not {e.id for e in same.train} & {e.id for e in same.evaluation}


def test_audit_refuses_an_overlapping_set(index: Path, tmp_path: Path) -> None:
    tiny = build_tiny_model(tmp_path / "tiny")
    cfg = FinetuneConfig(
        model=ModelConfig(name="tiny", id=str(tiny)),
        data=DataConfig(name="raft-overlap", objective="raft", raft=_raft(index, train=[], keep_apart=False)),
        name="tiny-raft", output_dir=str(tmp_path / "adapters"),
        train=TrainSettings(seq_len=2048, batch_size=2, max_steps=1), audit=AuditSettings(),
    )
    from biorag.finetune.train import load_tokenizer

    data = raft_data(cfg, load_tokenizer(cfg.model))
    _, found = overlap(cfg, data)
    assert sorted(found[TASK]) == sorted(e.id for e in data.splits[0].evaluation)
    with pytest.raises(ContaminationError, match="--allow-overlap"):
        refuse_overlap("raft-overlap", found)
    from biorag.finetune.run import run_finetune

    with pytest.raises(ContaminationError):
        run_finetune(cfg)
    assert not (tmp_path / "adapters" / "tiny-raft").exists()


def test_raft_adapter_trains_and_its_cell_refuses_training_items(index: Path, tmp_path: Path) -> None:
    from biorag.config import compose, to_typed
    from biorag.experiment.arms import RunConfig
    from biorag.experiment.resources import prepare
    from biorag.finetune.run import run_finetune

    tiny = build_tiny_model(tmp_path / "tiny")
    cfg = FinetuneConfig(
        model=ModelConfig(name="tiny", id=str(tiny)),
        data=DataConfig(name="raft-tiny", objective="raft", raft=_raft(index)),
        name="tiny-raft", output_dir=str(tmp_path / "adapters"), lora=LoraSettings(r=4, alpha=8),
        train=TrainSettings(seq_len=2048, batch_size=2, max_steps=2, eval_fraction=0.0),
        audit=AuditSettings(),
    )
    result = run_finetune(cfg)
    m = result.manifest
    assert m["data"]["objective"] == "raft" and m["data"]["gold_share"] == 0.8
    assert m["data"]["tasks"][TASK]["gold_in_prompt"] == gold_share(TRAIN_N, 0.8)
    assert m["results"]["steps"] == 2 and len(m["data"]["train_items"][TASK]) >= TRAIN_N

    def cell(*task: str):
        over = ["arm=raft", "model=fake", f"task={TASK}", f"arm.adapter={result.path}",
                f"arm.retriever.index={index}", *task]
        c = to_typed(compose("run", over), RunConfig)
        c.model = cfg.model
        return c

    assert len(prepare(cell(f"task.n={EVAL_N}")).examples) == EVAL_N  # the evaluation items: fine
    with pytest.raises(BioragError, match="was trained on"):
        prepare(cell("task.seed=1", "task.n=3"))  # the training items themselves


def test_raft_retrieves_with_the_arms_spec_and_no_run_config() -> None:
    from biorag.errors import ConfigError
    from biorag.retrieval.spec import RetrieverConfig

    spec = retriever_spec(RaftSettings(tasks=[TASK], arm="rag", overrides=["arm.retriever.k=3",
                                                                           "task.scoring=loglikelihood"]))
    assert isinstance(spec, RetrieverConfig) and (spec.k, spec.mode, spec.index) == (3, "dense", None)
    with pytest.raises(ConfigError, match="closed-book"):
        retriever_spec(RaftSettings(tasks=[TASK], arm="base"))
    with pytest.raises(ConfigError, match=r"model\.dtype=bf16 do not apply"):
        retriever_spec(RaftSettings(tasks=[TASK], overrides=["model.dtype=bf16"]))
