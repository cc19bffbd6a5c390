"""biorag's multiple-choice scoring against lm-evaluation-harness, side by side in one run.

    python benchmarks/eval_throughput.py --lm-eval                  # 48 items, 2 rounds
    python benchmarks/eval_throughput.py --lm-eval --n 100 --rounds 3 --budgets 0,256,1024

Both score the same requests with the same model object (the embedded SmolLM2-135M-Instruct
at biorag's default dtype for this CPU), the same prompt without chat template and the same
batch size: lm-eval 0.4.13's `HFLM.loglikelihood` (what `lm_eval --model hf` runs for a
multiple_choice task) and biorag's `HFGenerator.loglikelihood`. Items are the embedded
hpo-term-mcq task (5 options) written MedQA-style ("Question: ...\\nA. ...\\nAnswer:"), on three
paths:

- letters: " A" … " E" after "Answer:";
- option texts: " <term>" after "Answer:" (multi-token continuations of one context);
- 5-shot: five solved items before each question (a long prefix every prompt shares), letters.

Runs alternate (lm-eval, biorag, lm-eval, ...) so that a noisy machine slows both; each
side's figure is its median over --rounds. Also printed: both accuracies (argmax of the
summed log-likelihood, as lm-eval's `acc`), the largest |difference| of a log-likelihood,
and, for option texts, each of biorag's strategies forced (rows / shared / packed) beside
`auto`'s choice and, with --budgets, other token budgets (0: none; the CPU default is 512).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from _common import machine_line, table, verdict

LETTERS = "ABCDEFGHIJ"
TARGETS = {"letters": 1.0, "option texts": 1.5, "5-shot": 2.0}


def _question(example, answered: bool) -> str:
    lines = [f"Question: {example.input}"]
    lines += [f"{LETTERS[i]}. {o}" for i, o in enumerate(example.options)]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {example.gold}\n\n" if answered else text


def path_requests(examples, shots) -> dict[str, tuple[list[tuple[str, str]], list[int]]]:
    """path -> (requests, options per item), in item order."""
    plain = [_question(e, False) for e in examples]
    prefix = "".join(_question(e, True) for e in shots)
    sizes = [len(e.options) for e in examples]
    letters = [(p, f" {LETTERS[i]}") for p, e in zip(plain, examples, strict=True)
               for i in range(len(e.options))]
    texts = [(p, f" {o}") for p, e in zip(plain, examples, strict=True) for o in e.options]
    shot = [(prefix + c, x) for c, x in letters]
    return {"letters": (letters, sizes), "option texts": (texts, sizes), "5-shot": (shot, sizes)}


def accuracy(logprobs: list[float], sizes: list[int], examples) -> float:
    right, at = 0, 0
    for k, e in zip(sizes, examples, strict=True):
        scores = logprobs[at : at + k]
        right += LETTERS[scores.index(max(scores))] == e.gold
        at += k
    return right / len(examples)


def _timed(fn: Callable[[], list[float]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(n: int, batch_size: int, rounds: int, budgets: list[int], threads) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from biorag.hardware import cpu_bf16, cpu_has_native_bf16
    from biorag.models.hf import HFGenerator, cpu_token_budget
    from biorag.models.loading import load_generator, load_model_config
    from biorag.tasks import load_examples, load_task_config

    cfg = load_model_config("smollm2")
    cfg.batch_size, cfg.chat = batch_size, "false"
    gen = load_generator(cfg)
    lm = HFLM(pretrained=gen.model, tokenizer=gen.tokenizer, batch_size=batch_size, device="cpu")
    items = load_examples(load_task_config("hpo-term-mcq", [f"n={n + 5}"]))
    shots, examples = items[:5], items[5:]

    def biorag(requests, **kw) -> list[float]:
        kw["token_budget"] = cpu_token_budget(kw.get("token_budget"), gen.model)  # as configs do
        g = HFGenerator(gen.model, gen.tokenizer, name="smollm2", batch_size=batch_size,
                        chat="false", **kw)
        out = [r.logprob for r in g.loglikelihood(requests)]
        biorag.chosen = g.info["loglikelihood_strategy"]  # type: ignore[attr-defined]
        return out

    def lmeval(requests) -> list[float]:
        instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        return [lp for lp, _ in lm.loglikelihood(instances, disable_tqdm=True)]

    biorag(path_requests(examples[:2], shots)["option texts"][0])  # warm both up
    lmeval(path_requests(examples[:2], shots)["option texts"][0])
    rows, strategy_rows, ratios = [], [], {}
    for path, (requests, sizes) in path_requests(examples, shots).items():
        times: dict[str, list[float]] = {"lm-eval": [], "biorag": []}
        for _ in range(rounds):
            t, theirs = _timed(lambda r=requests: lmeval(r))
            times["lm-eval"].append(t)
            t, ours = _timed(lambda r=requests: biorag(r))
            times["biorag"].append(t)
        chosen = biorag.chosen  # type: ignore[attr-defined]
        ours_s, theirs_s = statistics.median(times["biorag"]), statistics.median(times["lm-eval"])
        ratios[path] = theirs_s / ours_s
        delta = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
        rows.append([path, len(requests), theirs_s, ours_s, chosen, ratios[path], TARGETS[path],
                     verdict(ratios[path] >= TARGETS[path]), accuracy(theirs, sizes, examples),
                     accuracy(ours, sizes, examples), f"{delta:.1e}"])
        if path == "option texts":
            for strategy in ("rows", "shared", "packed"):
                t, _ = _timed(lambda s=strategy, r=requests: biorag(r, loglikelihood=s))
                strategy_rows.append([f"{strategy} (forced)", t, theirs_s / t])
            for budget in budgets:
                t, _ = _timed(lambda b=budget, r=requests: biorag(r, token_budget=b))
                strategy_rows.append([f"auto, token_budget={budget or 'none'}", t, theirs_s / t])

    kind = "native bf16" if cpu_has_native_bf16() else "no native bf16 (AVX2-class)"
    print(f"SmolLM2-135M-Instruct ({gen.info.get('dtype')}, bf16 in use: {cpu_bf16()}), "
          f"{n} hpo-term-mcq items x 5 options, MedQA-style prompt without chat template, "
          f"batch {batch_size}, median of {rounds} alternating rounds")
    print(f"CPU: {kind}")
    print(machine_line(threads))
    print(table(["path", "requests", "lm-eval s", "biorag s", "biorag strategy", "lm-eval/biorag",
                 "target", "", "acc lm-eval", "acc biorag", "max |dLL|"], rows))
    print("\noption texts, one run each (lm-eval/biorag against lm-eval's median):")
    print(table(["biorag", "seconds", "lm-eval/biorag"], strategy_rows))
    met = all(ratios[p] >= TARGETS[p] for p in ratios)
    print(f"\nall targets met: {verdict(met)}  (lm-eval 0.4.13; ratios above 1 mean biorag is faster)")
