"""Fine-tuning data: loss on responses only, packing, the seeded split, bad rows, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.tiny_model import build_tiny_model

from biorag.corpora.training import DataConfig
from biorag.errors import ConfigError, InputError
from biorag.finetune.data import IGNORE, in_eval, pack, render_sft, sft_data
from biorag.models.text import TokenEncoder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tok")))


def _labelled(tokenizer, ids: list[int], labels: list[int]) -> str:
    assert len(ids) == len(labels)
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels, strict=True))
    return tokenizer.decode([x for x in labels if x != IGNORE])


def test_prompt_response_with_chat_template_learns_the_response_only(tokenizer) -> None:
    messages = [{"role": "user", "content": "Define ataxia."},
                {"role": "assistant", "content": "Ataxia is a lack of muscle coordination."}]
    ids, labels = render_sft(messages, tokenizer, TokenEncoder(tokenizer), use_template=True)
    assert labels[0] == IGNORE and labels[-1] != IGNORE
    # the template's end of turn is learned too (so the model stops); the tiny vocabulary
    # has no newline token, hence startswith
    assert _labelled(tokenizer, ids, labels).startswith("Ataxia is a lack of muscle coordination.</s>")
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ids) == tokenizer.decode(TokenEncoder(tokenizer).encode(whole))


def test_plain_prompt_response_ends_with_eos(tokenizer) -> None:
    messages = [{"role": "user", "content": "Define ataxia."},
                {"role": "assistant", "content": "Ataxia is a lack of coordination."}]
    ids, labels = render_sft(messages, tokenizer, TokenEncoder(tokenizer), use_template=False)
    assert ids[0] == tokenizer.bos_token_id and labels[-1] == tokenizer.eos_token_id
    assert _labelled(tokenizer, ids, labels).startswith("Ataxia is a lack of coordination.")
    n_prompt = labels.index(next(x for x in labels if x != IGNORE))
    assert "Define ataxia." in tokenizer.decode(ids[:n_prompt])


def test_every_assistant_turn_takes_loss_and_no_other(tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Define ataxia."},
                {"role": "assistant", "content": "Lack of coordination."},
                {"role": "user", "content": "And aspirin?"},
                {"role": "assistant", "content": "A platelet inhibitor."}]
    ids, labels = render_sft(messages, tokenizer, TokenEncoder(tokenizer), use_template=True)
    learned = _labelled(tokenizer, ids, labels)
    assert "Lack of coordination." in learned and "A platelet inhibitor." in learned
    assert "aspirin" not in learned and "Be brief" not in learned and "ataxia" not in learned


def test_sft_file_errors_name_file_line_and_field(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(InputError) as e:
        sft_data(DataConfig(name="bad", objective="sft", path=str(path)), tokenizer, 64, 0, 0.0)
    assert f"{path}:2" in str(e.value) and "'response'" in str(e.value)
    path.write_text("{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1.*not JSON"):
        sft_data(DataConfig(name="bad", objective="sft", path=str(path)), tokenizer, 64, 0, 0.0)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(InputError, match="no assistant message"):
        sft_data(DataConfig(name="bad", objective="sft", path=str(path)), tokenizer, 64, 0, 0.0)


def test_packing_cuts_equal_blocks() -> None:
    blocks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 4], [5, 6, 7, 8]]  # remainder [9] dropped
    assert all(b["labels"] == b["input_ids"] for b in blocks)
    assert [b["input_ids"] for b in pack([[1, 2]], 4)] == [[1, 2]]  # all there is: kept


def test_eval_split_is_seeded_and_order_free() -> None:
    ids = [f"HP:{i:07d}" for i in range(2000)]
    held = {i for i in ids if in_eval(i, 0, 0.1)}
    assert 150 < len(held) < 250
    assert held == {i for i in reversed(ids) if in_eval(i, 0, 0.1)}
    assert held != {i for i in ids if in_eval(i, 1, 0.1)}
    assert not any(in_eval(i, 0, 0.0) for i in ids)


def test_data_configs_validate_and_compose() -> None:
    from biorag.finetune.config import load_finetune_config

    with pytest.raises(ConfigError, match="objective"):
        DataConfig(name="x", objective="dpo")
    cfg = load_finetune_config(["data=instructions-example", "name=x", "lora.r=16", "train.max_steps=5"])
    assert cfg.data.objective == "sft" and cfg.lora.r == 16 and cfg.train.max_steps == 5
    assert cfg.adapter_name() == "x"
    default = load_finetune_config([])
    assert default.data.name == "hpo-mini" and default.adapter_name() == "smollm2-hpo-mini"
    with pytest.raises(ConfigError, match="Did you mean 'learning_rate'"):
        load_finetune_config(["train.learning_rat=1e-3"])
