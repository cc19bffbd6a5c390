"""The transformers backend's log-likelihood strategies (rows, shared KV cache, packed with a
4D mask; auto picks one from the lengths): the same numbers on every path, equal to
lm-evaluation-harness on the same requests, on a tiny random Llama built offline."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tests.helpers.tiny_model import build_tiny_model

from biorag.errors import BioragError, ConfigError
from biorag.models.config import ModelConfig
from biorag.models.hf import CPU_TOKEN_BUDGET, HFGenerator
from biorag.models.hf_scoring import Scorer, _Group, cost_weights
from biorag.models.loading import load_generator

HEADER = ("You are a careful clinician. Answer the question about a phenotype term.\n"
          "Question: Which term matches this definition?\n")
DEFINITIONS = ["A persistently raised arterial blood pressure.", "Abnormally fast heart rate.",
               "Lack of muscle coordination during voluntary movement."]
OPTIONS = [" Hypertension", " Arterial hypotension", " Raised intracranial pressure",
           " Tachycardia", " A"]
# three contexts with a long common head, one short context, and one-context-one-option requests
REQUESTS = [(HEADER + d + "\nAnswer:", o) for d in DEFINITIONS for o in OPTIONS] + [
    ("Definition: fast heart rate.\nAnswer:", o) for o in OPTIONS] + [
    ("Aspirin inhibits", " cyclooxygenase and reduces platelet aggregation."),
    ("Ataxia is a lack of", " muscle coordination"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFGenerator:
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    gen = load_generator(ModelConfig(name="tiny", id=str(folder), batch_size=4))
    assert isinstance(gen, HFGenerator)
    return gen


def _gen(tiny: HFGenerator, strategy: str, **kw) -> HFGenerator:
    return HFGenerator(tiny.model, tiny.tokenizer, loglikelihood=strategy, **kw)


def _passes(gen: HFGenerator, requests) -> tuple[list, list[tuple[int, ...]]]:
    shapes: list[tuple[int, ...]] = []
    hook = gen.model.register_forward_hook(
        lambda m, args, kw, out: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        return gen.loglikelihood(requests), shapes
    finally:
        hook.remove()


@pytest.mark.parametrize("keeps_logits", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_every_strategy_gives_the_same_loglikelihoods(
    tiny: HFGenerator, batch_size: int, keeps_logits: bool
) -> None:
    out = {}
    for strategy in ("rows", "shared", "packed", "auto"):
        gen = _gen(tiny, strategy, batch_size=batch_size)
        gen._keeps_logits = keeps_logits
        out[strategy] = gen.loglikelihood(REQUESTS)
        assert gen.info["loglikelihood_strategy"] in ("rows", "shared", "packed")
    for strategy in ("shared", "packed", "auto"):
        for a, b in zip(out["rows"], out[strategy], strict=True):
            assert b.logprob == pytest.approx(a.logprob, abs=1e-4), strategy  # fp32 sums
            assert (b.n_tokens, b.n_chars, b.is_greedy) == (a.n_tokens, a.n_chars, a.is_greedy)
    assert len({round(r.logprob, 4) for r in out["rows"]}) > 15  # distinct, not all one value


def test_packed_runs_a_context_and_its_options_as_one_row(tiny: HFGenerator) -> None:
    gen = _gen(tiny, "packed", batch_size=8)
    requests = [r for r in REQUESTS if r[0].startswith("Definition")]
    _, shapes = _passes(gen, requests)
    ctx, _ = gen.encode_pair(*requests[0])
    tails = {tuple(gen.encode_pair(c, o)[1][:-1]) for c, o in requests}
    assert shapes == [(1, len(ctx) + sum(map(len, tails)))]  # one pass, no cache copies


def test_packed_with_an_additive_mask_for_eager_attention(tiny: HFGenerator) -> None:
    reference = _gen(tiny, "rows", batch_size=4).loglikelihood(REQUESTS)
    tiny.model.set_attn_implementation("eager")
    try:
        eager = _gen(tiny, "packed", batch_size=4).loglikelihood(REQUESTS)
    finally:
        tiny.model.set_attn_implementation("sdpa")
    for a, b in zip(reference, eager, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-5)


def _groups(gen: HFGenerator, requests) -> list[_Group]:
    """The contexts scored against several multi-token options, as the scorer groups them."""
    by_context: dict[tuple[int, ...], list] = {}
    for i, (context, option) in enumerate(requests):
        ctx, cont = gen.encode_pair(context, option)
        by_context.setdefault(tuple(ctx), []).append((i, cont, len(option)))
    return [_Group(c, r) for c, r in by_context.items() if len({tuple(x[:-1]) for _, x, _ in r}) > 1]


def test_flash_attention_never_packs(tiny: HFGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _gen(tiny, "auto", batch_size=8, token_budget=60)  # one context a pass: packing pays
    groups = _groups(gen, REQUESTS)
    costs = Scorer(gen).costs(groups)
    assert min(costs, key=costs.__getitem__) == "packed"  # where a 4D mask is honoured
    # flash-attention ignores a 4D mask: packing there would silently score garbage
    monkeypatch.setattr(tiny.model.config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(BioragError, match="packed needs an attention"):
        _gen(tiny, "packed").loglikelihood(REQUESTS[:5])
    assert Scorer(gen).choose(groups) == min(("rows", "shared"), key=costs.__getitem__)


def test_auto_runs_the_cheapest_estimate_and_logs_it(
    tiny: HFGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    gen = _gen(tiny, "auto", batch_size=8)
    with caplog.at_level(logging.INFO, logger="biorag.models.hf_scoring"):
        gen.loglikelihood(REQUESTS)
    line = next(r.getMessage() for r in caplog.records if "estimated cost" in r.getMessage())
    costs = {k: float(v.replace(",", "")) for k, v in
             (part.rsplit(" ", 1) for part in line.split("(estimated cost ")[1].rstrip(")").split(", "))}
    assert set(costs) == {"rows", "shared", "packed"}
    assert gen.info["loglikelihood_strategy"] == min(costs, key=costs.__getitem__)
    # one row per option repeats the long context five times: the dearest plan here
    assert costs["rows"] > max(costs["shared"], costs["packed"])
    # said once, not for every batch of a run
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="biorag.models.hf_scoring"):
        gen.loglikelihood(REQUESTS)
    assert not [r for r in caplog.records if "estimated cost" in r.getMessage()]


def test_cost_weights_come_from_the_model_shape(tiny: HFGenerator) -> None:
    head, pair = cost_weights(tiny.model)
    cfg = tiny.model.config
    body = sum(p.numel() for p in tiny.model.get_decoder().parameters()) - cfg.vocab_size * cfg.hidden_size
    assert head == pytest.approx(cfg.vocab_size * cfg.hidden_size / body)
    assert pair == pytest.approx(2 * cfg.hidden_size * cfg.num_hidden_layers / body)


@pytest.mark.parametrize("strategy", ["rows", "shared", "packed"])
def test_a_token_budget_caps_each_pass_and_changes_no_score(tiny: HFGenerator, strategy: str) -> None:
    free, free_shapes = _passes(_gen(tiny, strategy, batch_size=16), REQUESTS)
    capped, shapes = _passes(_gen(tiny, strategy, batch_size=16, token_budget=60), REQUESTS)
    # every pass of more than one row stays under the budget (a row alone may exceed it)
    assert all(r * w <= 60 for r, w in shapes if r > 1)
    assert any(r * w > 60 for r, w in free_shapes if r > 1)
    assert len(shapes) > len(free_shapes)
    for a, b in zip(free, capped, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-5)


def test_a_prefix_every_prompt_shares_runs_once_under_a_budget(tiny: HFGenerator) -> None:
    # a budget makes many passes; the long head they all start with still runs once
    requests = [(HEADER * 3 + d + "\nAnswer:", f" {x}") for d in DEFINITIONS * 3 for x in "ABC"]
    requests = [(c.replace("Answer:", f"Answer {i}:"), x) for i, (c, x) in enumerate(requests)]
    gen = _gen(tiny, "rows", batch_size=16, token_budget=40)
    results, shapes = _passes(gen, requests)
    head = len(gen.encode(HEADER * 3)) - 1
    assert sum(1 for r, w in shapes if r == 1 and w >= head) == 1
    assert len(shapes) > 2
    for a, b in zip(results, _gen(tiny, "rows", batch_size=1).loglikelihood(requests), strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("loglikelihood", "fastest", "loglikelihood must be one of auto, rows, shared, packed"),
    ("token_budget", -1, "token_budget must be >= 0"),
])
def test_model_config_checks_the_scoring_settings(field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(name="m", id="x", **{field: value})


def test_equal_to_lm_evaluation_harness_on_the_same_requests(tiny: HFGenerator) -> None:
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    # the tiny tokenizer adds <s>, as biorag's encoding keeps it: lm-eval is told to add it too
    lm = HFLM(pretrained=tiny.model, tokenizer=tiny.tokenizer, batch_size=4, device="cpu",
              add_bos_token=True)
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(REQUESTS)],
                              disable_tqdm=True)
    assert lm_eval.__version__
    for strategy in ("rows", "shared", "packed"):
        ours = _gen(tiny, strategy, batch_size=4).loglikelihood(REQUESTS)
        for (lp, greedy), r in zip(theirs, ours, strict=True):
            assert r.logprob == pytest.approx(lp, abs=1e-4), strategy
            assert r.is_greedy == greedy


def test_strategy_and_budget_come_from_the_model_config(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    gen = load_generator(ModelConfig(name="t", id=str(folder), loglikelihood="packed",
                                     token_budget=128))
    assert (gen.loglikelihood_strategy, gen.token_budget) == ("packed", 128)
    # on a CPU the default is a budget, and 0 turns it off
    assert load_generator(ModelConfig(name="t", id=str(folder))).token_budget == CPU_TOKEN_BUDGET
    assert load_generator(ModelConfig(name="t", id=str(folder), token_budget=0)).token_budget is None
    gen.loglikelihood(REQUESTS[:5])
    assert gen.info["loglikelihood_strategy"] == "packed"
    assert torch.is_grad_enabled()  # scoring leaves no inference mode behind
