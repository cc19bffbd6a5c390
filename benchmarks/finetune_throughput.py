"""LoRA training throughput: `biorag finetune` vs a plain peft + transformers Trainer script,
on the same packed blocks, the same model and the same settings, in one run.

    python benchmarks/finetune_throughput.py                  # smollm2, hpo-mini, 8 steps
    python benchmarks/finetune_throughput.py --steps 20 --batch-size 4 --seq-len 512
    python benchmarks/finetune_throughput.py --model llama3-8b-instruct --qlora   # on a GPU

Each side runs in its own fresh process (peak memory is per process) and reports training
tokens/s over the Trainer's own train_runtime, peak memory (resident set on CPU, allocated
CUDA memory on a GPU) and the last loss. The plain script tokenises the same documents the
same way (text + EOS, concatenated, cut into --seq-len blocks, run_clm style) and trains
LoRA on peft's default modules with the same optimiser settings, seed and dtype (fp32 on
CPU, bf16 on a GPU); it saves no checkpoints, while biorag saves one every 10 steps (its
resume points) and keeps no eval split here. With the same blocks and seed both see the
batches in the same order, so their losses should agree closely.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine_line, run_child, set_threads, table, verdict

LR, WARMUP, R, ALPHA, DROPOUT, SEED = 5e-4, 0.05, 8, 16, 0.05, 0


def child_biorag(args: argparse.Namespace, workdir: str) -> None:
    import torch

    from biorag import progress
    from biorag.finetune.run import load_finetune_config, run_finetune

    progress.set_enabled(False)
    set_threads(args.threads)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
    overrides = [
        f"model={args.model}", f"data={args.data}", "name=bench", f"output_dir={workdir}/adapters",
        f"train.max_steps={args.steps}", f"train.seq_len={args.seq_len}",
        f"train.batch_size={args.batch_size}", f"train.learning_rate={LR}", f"train.warmup={WARMUP}",
        f"lora.r={R}", f"lora.alpha={ALPHA}", f"lora.dropout={DROPOUT}", f"train.seed={SEED}",
        "train.eval_fraction=0", "audit.tasks=[]", "experiment=bench-finetune",
    ]
    if args.qlora:
        overrides.append("model.load_in_4bit=true")
    cfg = load_finetune_config(overrides)
    result = run_finetune(cfg, force=True)
    r = result.manifest["results"]
    emit({
        "tokens": r["tokens"], "train_s": r["train_seconds"], "wall_s": r["wall_seconds"],
        "tokens_per_s": r["tokens_per_second"], "last_loss": r["train_loss_last"],
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "dtype": result.manifest["dtype"],
    })


def child_plain(args: argparse.Namespace, workdir: str) -> None:
    """What a user would write with peft and the Trainer directly."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from biorag.corpora.training import corpus_documents  # the same documents, read the same way
    from biorag.models.loading import load_model_config, weights_location

    set_threads(args.threads)
    started = time.perf_counter()
    model_cfg = load_model_config(args.model)
    where, _ = weights_location(model_cfg)
    data = _data_config(args.data)
    texts = [text for _, _, text in corpus_documents(data)]

    tok = AutoTokenizer.from_pretrained(where)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    flat = [t for x in ids for t in [*x, tok.eos_token_id]]
    n = len(flat) // args.seq_len * args.seq_len
    blocks = [{"input_ids": flat[i : i + args.seq_len], "labels": flat[i : i + args.seq_len]}
              for i in range(0, n, args.seq_len)]

    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    kwargs = {"dtype": dtype}
    if args.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    if cuda:
        kwargs["device_map"] = {"": 0}
    set_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    model.config.use_cache = False
    if args.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=R, lora_alpha=ALPHA,
                                             lora_dropout=DROPOUT))
    targs = TrainingArguments(
        output_dir=f"{workdir}/plain", per_device_train_batch_size=args.batch_size,
        learning_rate=LR, max_steps=args.steps, lr_scheduler_type="cosine", warmup_steps=WARMUP,
        logging_steps=1, save_strategy="no", seed=SEED, data_seed=SEED, report_to="none",
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not cuda,
        disable_tqdm=True, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=blocks, data_collator=default_data_collator)
    out = trainer.train()
    tokens = args.steps * args.batch_size * args.seq_len
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    emit({
        "tokens": tokens, "train_s": out.metrics["train_runtime"], "wall_s": time.perf_counter() - started,
        "tokens_per_s": tokens / out.metrics["train_runtime"], "last_loss": losses[-1],
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "dtype": str(dtype).removeprefix("torch."),
    })


def _data_config(name: str):
    from biorag.config import load_option
    from biorag.corpora.training import DataConfig

    return load_option("data", name, DataConfig)


def main() -> None:
    from _common import cpu_count

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default="hpo-mini", help="a pretrain config in experiments/data/")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--qlora", action="store_true", help="4-bit base (GPU, bitsandbytes)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two sides this many times")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", choices=["biorag", "plain"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = args.threads or cpu_count()
    if args.child:
        return (child_biorag if args.child == "biorag" else child_plain)(args, args.workdir)

    passthrough = ["--model", args.model, "--data", args.data, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                   "--threads", str(args.threads), *(["--qlora"] if args.qlora else [])]
    results: dict[str, list[dict]] = {"plain": [], "biorag": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for side in ("plain", "biorag"):  # alternated, so drifting load hits both
                results[side].append(run_child([__file__, "--child", side, "--workdir", workdir, *passthrough],
                                               env={"BIORAG_PROGRESS": "0"}))

    def best(side: str) -> dict:
        return max(results[side], key=lambda r: r["tokens_per_s"])

    rows = []
    for side, label in (("plain", "plain peft + Trainer"), ("biorag", "biorag finetune")):
        r = best(side)
        peak = r["gpu_peak_mb"] if r["gpu_peak_mb"] is not None else r["peak_rss_mb"]
        rows.append([label, r["tokens_per_s"], r["tokens"], r["train_s"], r["wall_s"], peak, r["last_loss"]])
    mem = "GPU peak MiB" if best("plain")["gpu_peak_mb"] is not None else "peak RSS MiB"
    print(f"LoRA r={R} on {args.model} ({best('plain')['dtype']}{', 4-bit' if args.qlora else ''}), "
          f"data {args.data}: {args.steps} steps x {args.batch_size} x {args.seq_len} tokens; "
          f"best of {args.repeats}")
    print(machine_line({"torch": args.threads}))
    print(table(["path", "tokens/s", "tokens", "train s", "wall s", mem, "last loss"], rows))
    ratio = best("biorag")["tokens_per_s"] / best("plain")["tokens_per_s"]
    print(f"\nbiorag / plain tokens/s: {ratio:.2f}x  target >= 0.9x: {verdict(ratio >= 0.9)}")
    print(json.dumps({"ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
