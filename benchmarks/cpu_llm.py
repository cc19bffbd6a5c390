"""What the hf backend gets on a CPU from threads, torch.compile and int8 dynamic quantisation.

    python benchmarks/cpu_llm.py                # this CPU as it is
    python benchmarks/cpu_llm.py --isa avx2     # also with torch held to AVX2 (see below)

The embedded model (SmolLM2-135M-Instruct) scores the same HPO definition->term questions as
`eval_throughput.py` (letters and option texts) through biorag's own `HFGenerator`, once per
variant, each in a fresh process:

- `fp32`: the reference; `fp32-1t`: one thread instead of all cores;
- `compile`: `torch.compile(model.forward, dynamic=True)` (its warm-up reported apart);
- `int8`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear` (int8 weights,
  activations quantised per batch); `int8-body`: the same but for the output head;
- `bf16`: where the CPU has native bf16 units, what `dtype: auto` already picks there.

Each variant's log-likelihoods are compared with fp32's on the same requests (max |dLL| in
nats, and the largest relative to the request's |LL|) and its picks with fp32's. A variant is
worth adopting only when it is faster, keeps >= 95% of fp32's picks and every |dLL| <= 0.5
nats: what bf16, the default on CPUs with bf16 units, does (it flips 1 pick in 48, max 0.44). `--isa avx2` runs the torch variants again with
`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2` and `MKL_ENABLE_INSTRUCTIONS=AVX2`: torch's
own kernels, oneDNN and MKL then use AVX2 only, as on a CPU without AVX-512 (an emulation of
such a CPU's instruction set, not of its caches or clock).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import emit, machine_line, run_child, set_threads, table

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "BIORAG_CPU_BF16": "0"}
VARIANTS = ("fp32", "fp32-1t", "compile", "int8", "int8-body", "bf16")
# what a variant may change, set at what bf16 (the default where the CPU has bf16 units) does:
MAX_DLL = 0.5  # nats, any request
MIN_SAME = 0.95  # share of questions whose pick equals fp32's


def child(variant: str, n: int, batch_size: int, threads: int) -> None:
    import torch

    from biorag.models.loading import load_generator, load_model_config
    from eval_throughput import hpo_items, prompts

    set_threads(1 if variant == "fp32-1t" else threads)
    cfg = load_model_config("smollm2")
    cfg.batch_size, cfg.dtype = batch_size, "bfloat16" if variant == "bf16" else "float32"
    gen = load_generator(cfg)
    if variant.startswith("int8"):
        # int8-body: every Linear but the output head (tied to the input embeddings)
        spec = ({name for name, m in gen.model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
                if variant == "int8-body" else {torch.nn.Linear})
        gen.model = torch.ao.quantization.quantize_dynamic(gen.model, spec, dtype=torch.qint8)
    warmup = 0.0
    items = hpo_items(n)
    texts = prompts(gen, items)
    if variant == "compile":
        gen.model.forward = torch.compile(gen.model.forward, dynamic=True)
        start = time.perf_counter()
        gen.loglikelihood([(t, " A") for t in texts[:8]])
        warmup = time.perf_counter() - start
    requests = {
        "letters": [(t, f" {x}") for t in texts for x in "ABCD"],
        "options": [(t, f" {o}") for t, (_, options, _) in zip(texts, items, strict=True) for o in options],
    }
    out = {"variant": variant, "warmup_s": round(warmup, 1), "capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "gold": [g for _, _, g in items]}
    for path, reqs in requests.items():
        start = time.perf_counter()
        results = gen.loglikelihood(reqs)
        out[f"{path}_s"] = round(time.perf_counter() - start, 2)
        out[f"{path}_ll"] = [r.logprob for r in results]
        out[f"{path}_chars"] = [r.n_chars for r in results]
    emit(out)


def picks(ll: list[float], chars: list[int] | None = None) -> list[int]:
    scores = [x / max(c, 1) for x, c in zip(ll, chars, strict=True)] if chars else ll
    return [max(range(4), key=lambda j: scores[4 * i + j]) for i in range(len(scores) // 4)]


def compare(results: dict[str, dict], label: str) -> list[list]:
    ref = results["fp32"]
    rows = []
    for variant, r in results.items():
        cells, keeps = [label, variant, r["capability"], r["threads"]], True
        for path in ("letters", "options"):
            chars = r[f"{path}_chars"] if path == "options" else None
            same = sum(a == b for a, b in zip(picks(r[f"{path}_ll"], chars),
                                             picks(ref[f"{path}_ll"], chars), strict=True))
            diffs = [abs(a - b) for a, b in zip(r[f"{path}_ll"], ref[f"{path}_ll"], strict=True)]
            rel = max(d / max(abs(b), 1e-9) for d, b in zip(diffs, ref[f"{path}_ll"], strict=True))
            n = len(diffs) // 4
            keeps &= same >= MIN_SAME * n and max(diffs) <= MAX_DLL
            cells += [r[f"{path}_s"], round(ref[f"{path}_s"] / r[f"{path}_s"], 2), f"{same}/{n}",
                      f"{max(diffs):.2g} ({rel:.2%})"]
        faster = r["letters_s"] < ref["letters_s"] and r["options_s"] < ref["options_s"]
        acc = sum(p == g for p, g in zip(picks(r["options_ll"], r["options_chars"]), r["gold"], strict=True))
        cells += [f"{acc}/{len(r['gold'])}", r["warmup_s"] or "",
                  "reference" if variant == "fp32" else "adopt" if faster and keeps else
                  "reject: " + ("slower" if not faster else "changes scores")]
        rows.append(cells)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="questions (4 options each)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--isa", choices=["native", "avx2", "both"], default="both")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--limit", type=float, default=300,
                    help="seconds a variant may take, model load and compile warm-up included")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from _common import cpu_count

    threads = args.threads or cpu_count()
    if "fp32" not in args.variants.split(","):
        ap.error("--variants must include fp32, the reference every other variant is compared with")
    if args.child:
        child(args.child, args.n, args.batch_size, threads)
        return
    from biorag.hardware import cpu_has_native_bf16

    rows = []
    for isa in (["native", "avx2"] if args.isa == "both" else [args.isa]):
        results, failed = {}, []
        for variant in args.variants.split(","):
            if variant == "bf16" and (isa == "avx2" or not cpu_has_native_bf16()):
                continue  # emulated bf16 is slower than fp32: dtype auto never picks it there
            print(f"{isa} {variant} ...", file=sys.stderr, flush=True)
            argv = [__file__, "--child", variant, "--n", str(args.n), "--batch-size", str(args.batch_size),
                    "--threads", str(threads)]
            try:
                results[variant] = run_child(argv, env=AVX2 if isa == "avx2" else {"BIORAG_CPU_BF16": "1"},
                                             timeout=args.limit)
            except subprocess.TimeoutExpired:
                failed.append([isa, variant, "", threads] + [""] * 10 + [f"reject: not done in {args.limit:.0f} s"])
            except SystemExit as e:  # the child died; run_child showed its output
                failed.append([isa, variant, "", threads] + [""] * 10 + [f"reject: {str(e).split('(')[-1][:-1]}"])
        if "fp32" not in results:
            raise SystemExit(f"{isa}: the fp32 reference did not finish; nothing to compare with")
        rows += compare(results, isa) + failed
    print(f"SmolLM2-135M-Instruct through biorag's hf backend, {args.n} HPO questions x 4 options, "
          f"batch {args.batch_size}; seconds, speed-up over fp32 on the same ISA, picks equal to fp32's, "
          f"max |dLL| in nats (largest relative to |LL|); tolerance: >= {MIN_SAME:.0%} of picks kept and "
          f"|dLL| <= {MAX_DLL} nats")
    print(machine_line({"torch": threads}))
    print(table(["ISA", "variant", "torch kernels", "threads", "letters s", "x", "same picks", "max |dLL|",
                 "options s", "x", "same picks", "max |dLL|", "accuracy", "compile warm-up s", "verdict"], rows))


if __name__ == "__main__":
    main()
