"""The GPU paths in one short run (under 8 minutes on one H100/H200), on a machine that has
torch, transformers, sentence-transformers and peft but maybe no faiss, vLLM, MLflow or
internet. Every model is built here from a config with random weights (throughput does not
depend on the weights), so nothing is downloaded; a part whose library is missing is skipped
and the report says so.

    python benchmarks/gpu_check.py                 # on the GPU machine, from the repo root
    python benchmarks/gpu_check.py --smoke         # tiny sizes on CPU: checks the script runs
    # with the device tool: run(command="python benchmarks/gpu_check.py", timeout_s=540)

It reports:
1. embedding: sentences/s of an all-MiniLM-L6-v2-shaped encoder through sentence-transformers
   at fp16, and the share of the GPU's dense fp16 peak that is (FLOPs counted per token:
   2 x parameters of the encoder layers + attention), plus biorag's `encode` path on the same
   model when biorag's indexing imports (it needs faiss);
2. scoring: biorag's hf backend (bf16, batched log-likelihood of " A".." D") against the naive
   loop (one `generate` per question), SmolLM2-135M-shaped, items/s and the ratio;
3. LoRA: one bf16 training step (forward, backward, AdamW) of biorag's `load_for_training`
   model against plain peft on the same base, tokens/s and the ratio;
4. vLLM against hf on the same items, when vllm imports (it does not travel to a machine
   without it: the wheel is too large).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

# dense fp16/bf16 tensor-core peaks, TFLOP/s (NVIDIA's datasheets, SXM parts, no sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def log(msg: str) -> None:
    print(msg, flush=True)


def device_and_peak():
    import torch

    if not torch.cuda.is_available():
        return "cpu", None, "cpu"
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return "cuda", peak, name


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm up (kernels, allocator)
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - start) / repeat


def tokenizer_dir(tmp: Path) -> Path:
    from tests.helpers.tiny_model import build_tiny_model

    return build_tiny_model(tmp / "tok")  # a BPE tokenizer trained here, and its chat template


def check_embedding(device: str, peak: float | None, smoke: bool, tmp: Path) -> dict:
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    n, seq = (64, 32) if smoke else (65536, 128)
    vocab = tmp / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(30517)]]
    vocab.write_text("\n".join(words))
    cfg = BertConfig(vocab_size=len(words), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)
    folder = tmp / "minilm"
    BertModel(cfg).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    word = models.Transformer(str(folder), max_seq_length=seq)
    st = SentenceTransformer(modules=[word, models.Pooling(384, "mean"), models.Normalize()], device=device)
    if device == "cuda":
        st.half()
    texts = [" ".join(f"w{(i * 7 + j) % 30000}" for j in range(seq - 2)) for i in range(n)]
    secs = timed(lambda: st.encode(texts, batch_size=512, convert_to_numpy=True))
    layer_params = sum(p.numel() for name, p in st[0].auto_model.named_parameters() if "encoder" in name)
    flops_per_token = 2 * layer_params + 2 * 2 * cfg.num_hidden_layers * seq * cfg.hidden_size
    achieved = flops_per_token * n * seq / secs / 1e12
    out = {"sentences_per_s": round(n / secs), "tokens": seq, "achieved_tflops": round(achieved, 3),
           "dtype": "fp16" if device == "cuda" else "fp32"}
    if peak:
        out["share_of_fp16_peak"] = round(achieved / peak, 3)
    try:
        from biorag.indexing.embedding import EmbedderConfig, load_embedder

        emb = load_embedder(EmbedderConfig(name="minilm-random", model=str(folder), batch_size=512,
                                           max_seq_length=seq))
    except ImportError as e:  # biorag's indexing needs faiss, which a GPU box may lack
        out["biorag_encode"] = f"skipped ({e})"
    else:
        secs_b = timed(lambda: emb.embed_passages(texts))
        out["biorag_sentences_per_s"] = round(n / secs_b)
        out["biorag_vs_st"] = round(secs / secs_b, 2)
    return out


def smollm2_shaped(tmp: Path, tok: Path, smoke: bool) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tok)
    cfg = LlamaConfig(vocab_size=max(49152 if not smoke else 1024, len(tokenizer)),
                      hidden_size=576 if not smoke else 64, num_hidden_layers=30 if not smoke else 2,
                      num_attention_heads=9 if not smoke else 4, num_key_value_heads=3 if not smoke else 2,
                      intermediate_size=1536 if not smoke else 128, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    folder = tmp / "smollm2-shaped"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def mcq_prompts(gen, n: int) -> list[str]:
    stems = ["Hypertension is persistently raised arterial blood pressure.",
             "Ataxia is a lack of muscle coordination affecting gait.",
             "Microcephaly is a small head circumference.", "Pneumonia presents with fever and cough."]
    out = []
    for i in range(n):
        q = (f"Question {i}: {stems[i % 4]} Which term matches? Options: A anaemia, B seizure, "
             f"C ataxia, D tachycardia. Answer with the letter.")
        out.append(gen.render_chat([{"role": "user", "content": q}]) + "Answer:")
    return out


def check_scoring(device: str, model_dir: Path, smoke: bool) -> dict:
    import torch

    from biorag.models.config import ModelConfig
    from biorag.models.loading import load_generator

    n = 8 if smoke else 512
    gen = load_generator(ModelConfig(name="smollm2-shaped", id=str(model_dir), batch_size=64,
                                     dtype="bfloat16" if device == "cuda" else "float32"))
    texts = mcq_prompts(gen, n)
    requests = [(t, f" {c}") for t in texts for c in "ABCD"]
    secs = timed(lambda: gen.loglikelihood(requests))
    model, tok = gen.model, gen.tokenizer
    naive_n = min(n, 64)

    def naive() -> None:
        with torch.inference_mode():
            for t in texts[:naive_n]:
                enc = tok(t, return_tensors="pt", add_special_tokens=False).to(model.device)
                model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)

    secs_naive = timed(naive) / naive_n * n
    out = {"items": n, "biorag_items_per_s": round(n / secs, 1),
           "naive_items_per_s": round(n / secs_naive, 1), "speedup": round(secs_naive / secs, 1),
           "dtype": gen.info.get("dtype")}
    out["_texts"] = texts
    return out


def check_lora(device: str, model_dir: Path, smoke: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from biorag.finetune.config import LoraSettings, TrainSettings
    from biorag.finetune.train import load_for_training
    from biorag.models.config import ModelConfig

    batch, seq = (2, 32) if smoke else (16, 512)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ids = torch.randint(4, 1000, (batch, seq), device=device)

    def step_fn(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    cfg = ModelConfig(name="smollm2-shaped", id=str(model_dir), dtype="bfloat16" if device == "cuda" else "float32")
    ours, _, _ = load_for_training(cfg, LoraSettings(), TrainSettings())
    ours.train()
    secs_ours = timed(step_fn(ours), repeat=3 if smoke else 10)
    del ours
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    plain = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05))
    plain.train()
    secs_plain = timed(step_fn(plain), repeat=3 if smoke else 10)
    tokens = batch * seq
    return {"tokens_per_step": tokens, "biorag_tokens_per_s": round(tokens / secs_ours),
            "plain_peft_tokens_per_s": round(tokens / secs_plain),
            "biorag_vs_plain": round(secs_plain / secs_ours, 2)}


def check_vllm(model_dir: Path, texts: list[str], hf_items_per_s: float) -> dict:
    try:
        import vllm  # noqa: F401
    except Exception as e:
        return {"skipped": f"vllm does not import here ({type(e).__name__}): too large to carry"}
    from biorag.models.config import ModelConfig
    from biorag.models.loading import load_generator

    gen = load_generator(ModelConfig(name="smollm2-shaped", id=str(model_dir), backend="vllm"))
    requests = [(t, f" {c}") for t in texts for c in "ABCD"]
    secs = timed(lambda: gen.loglikelihood(requests))
    return {"vllm_items_per_s": round(len(texts) / secs, 1),
            "vllm_vs_hf": round(len(texts) / secs / hf_items_per_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU): check the script runs")
    ap.add_argument("--only", default="embedding,scoring,lora,vllm")
    args = ap.parse_args()
    import torch

    device, peak, name = device_and_peak()
    if device == "cpu" and not args.smoke:
        raise SystemExit("no CUDA GPU here; run with --smoke to check the script on CPU")
    report: dict = {"device": name, "torch": torch.__version__, "peak_fp16_tflops": peak}
    only = set(args.only.split(","))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        tok = tokenizer_dir(tmp)
        model_dir = smollm2_shaped(tmp, tok, args.smoke)
        parts = [("embedding", lambda: check_embedding(device, peak, args.smoke, tmp)),
                 ("scoring", lambda: check_scoring(device, model_dir, args.smoke)),
                 ("lora", lambda: check_lora(device, model_dir, args.smoke))]
        for part, fn in parts:
            if part not in only:
                continue
            t0 = time.perf_counter()
            try:
                report[part] = fn()
            except ImportError as e:
                report[part] = {"skipped": f"{e}"}
            report.setdefault(part, {})["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"{part}: {json.dumps({k: v for k, v in report[part].items() if k != '_texts'})}")
        if "vllm" in only:
            scoring = report.get("scoring", {})
            texts = scoring.pop("_texts", None)
            report["vllm"] = (check_vllm(model_dir, texts, scoring["biorag_items_per_s"]) if texts
                              else {"skipped": "needs the scoring part"})
            log(f"vllm: {json.dumps(report['vllm'])}")
        report.get("scoring", {}).pop("_texts", None)
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
