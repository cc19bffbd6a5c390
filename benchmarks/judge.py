"""What a judge costs and how far it can be trusted, on the embedded SmolLM2-135M.

    python benchmarks/judge.py                     # the label fixtures, each label timed 4 times
    python benchmarks/judge.py --repeat 8 --batch-size 16

Every row judges the same human-labelled answers (tests/fixtures/judges/: a 12-row CSV of
criteria met or not, and HealthBench's meta-eval format with physicians' majority verdicts)
through the same prompts:

- biorag, log-likelihood verdicts: "yes"/"no" scored after the prompt, batched; nothing parsed;
- biorag, generate and parse: the judge writes its verdict (8 new tokens, greedy), batched,
  and the first yes/no in it is read; a verdict without one is counted, never scored;
- plain transformers, one `generate` per prompt: what one writes without a harness (the same
  prompts, the same parsing);
- a jury of the two biorag readings (one model, read both ways), against one judge: its cost.

For each: verdicts/s (timing pass over the labels repeated --repeat times, no cache), the share
of verdicts that could not be parsed, and agreement with the human labels (accuracy and Cohen's
kappa, 95% bootstrap CI; on the labels once). A 135M judge agrees poorly: the point is to
measure it, and to see what generate-and-parse loses to unreadable verdicts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_count, machine_line, set_threads, table

ROOT = Path(__file__).resolve().parents[1]
LABELS = [ROOT / "tests/fixtures/judges/labels.csv", ROOT / "tests/fixtures/judges/healthbench_meta_eval.jsonl"]


def _agreement(values, labels):
    from biorag.judges.agreement import meta_eval

    got = meta_eval(values, [lab.value for lab in labels], kind="binary")
    acc, kappa = got.get("accuracy"), got.get("kappa")

    def f(m):
        return "-" if m is None or math.isnan(m.value) else f"{m.value:.2f} [{m.lo:.2f}, {m.hi:.2f}]"
    return f(acc), f(kappa)


def biorag_row(name, judge, gen, labels, repeat, batch_size):
    from biorag.judges.meta import judge_labels
    from biorag.judges.run import JudgementCache

    with tempfile.TemporaryDirectory() as d:
        values, _ = judge_labels(judge, gen, labels, JudgementCache(Path(d) / "once.jsonl"), "b",
                                 batch_size=batch_size)
    times = []
    with tempfile.TemporaryDirectory() as d:
        many = list(labels) * repeat
        # distinct answers so the cache cannot serve a repeat: a suffix the judge reads
        many = [lab.__class__(**{**lab.__dict__, "answer": f"{lab.answer} ({i})"}) for i, lab in enumerate(many)]
        t = time.perf_counter()
        timed, _ = judge_labels(judge, gen, many, JudgementCache(Path(d) / "timed.jsonl"), "b", batch_size=batch_size)
        times.append(time.perf_counter() - t)
    unparsed = sum(math.isnan(v) for v in timed) / len(timed)
    return [name, f"{len(many) / times[0]:.1f}", f"{unparsed:.0%}", *_agreement(values, labels)], values, times[0]


def plain_row(gen, judge, labels, repeat):
    """One `model.generate` per prompt with transformers, the same prompts and parsing."""
    import torch

    from biorag.judges.methods import Answer, Criterion, questions
    from biorag.judges.verdicts import BINARY, parse_verdict, render

    model, tok = gen.model, gen.tokenizer

    def prompts(labs):
        out = []
        for i, lab in enumerate(labs):
            a = Answer(str(i), lab.prompt, lab.answer, rubric=(Criterion(lab.key, 1.0),))
            out.append(render(gen, questions(a, "rubric", judge.template("rubric"), [])[0].text))
        return out

    def run(ps):
        vals = []
        for p in ps:
            ids = tok(p, return_tensors="pt", add_special_tokens=False).to(model.device)
            with torch.no_grad():
                o = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
            vals.append(parse_verdict(tok.decode(o[0, ids["input_ids"].shape[1]:], skip_special_tokens=True), BINARY))
        return vals

    values = run(prompts(labels))
    many = [lab.__class__(**{**lab.__dict__, "answer": f"{lab.answer} ({i})"})
            for i, lab in enumerate(list(labels) * repeat)]
    t = time.perf_counter()
    timed = run(prompts(many))
    s = time.perf_counter() - t
    unparsed = sum(math.isnan(v) for v in timed) / len(timed)
    return ["transformers, one generate per prompt", f"{len(many) / s:.1f}", f"{unparsed:.0%}",
            *_agreement(values, labels)], s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="times the labels are judged in the timing pass")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("BIORAG_PROGRESS", "0")
    threads = set_threads(cpu_count())
    print(machine_line(threads))

    from biorag.judges.config import load_judge_config
    from biorag.judges.labels import read_labels
    from biorag.models.loading import load_generator, load_model_config

    labels = [lab for path in LABELS for lab in read_labels(path) if lab.kind == "binary"]
    gen = load_generator(load_model_config("smollm2"))
    ll_judge, gen_judge = load_judge_config("smollm2"), load_judge_config("smollm2-generate")
    print(f"\n{len(labels)} human labels (criterion met or not), {sum(lab.value for lab in labels):.0f} met; "
          f"timing pass: {len(labels) * args.repeat} verdicts a row, batch {args.batch_size}")
    ll, ll_values, ll_s = biorag_row("biorag, log-likelihood verdicts", ll_judge, gen, labels, args.repeat,
                                     args.batch_size)
    gp, gp_values, gp_s = biorag_row("biorag, generate and parse", gen_judge, gen, labels, args.repeat,
                                     args.batch_size)
    plain, plain_s = plain_row(gen, gen_judge, labels, args.repeat)
    n = len(labels) * args.repeat
    jury_values = [math.nan if math.isnan(a) or math.isnan(b) or a != b else a for a, b in zip(ll_values, gp_values,
                                                                                                strict=True)]
    jury = ["jury of the two biorag readings", f"{n / (ll_s + gp_s):.1f}",
            f"{sum(math.isnan(v) for v in jury_values) / len(jury_values):.0%} (no majority)",
            *_agreement(jury_values, labels)]
    print(table(["judge", "verdicts/s", "unparsed", "accuracy vs humans", "kappa vs humans"], [ll, gp, plain, jury]))
    print(f"\nratios: log-likelihood / generate-and-parse {gp_s / ll_s:.2f}x faster; biorag generate / one "
          f"generate per prompt {plain_s / gp_s:.2f}x faster; a jury of two costs {(ll_s + gp_s) / ll_s:.2f}x one "
          "log-likelihood judge")


if __name__ == "__main__":
    main()
