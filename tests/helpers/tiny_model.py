"""A tiny, random, offline causal LM + tokenizer for tests that need a real transformers model.

`build_tiny_model(tmp_path / "tiny")` writes, in well under a second, a folder that
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` (and so
`ModelConfig(id=str(folder))`) load like any hub checkpoint: a sentencepiece-style BPE tokenizer
trained on a few medical sentences, with BOS added the way Llama's tokenizer adds it, and
a 2-layer `LlamaForCausalLM` initialised from a fixed seed. Its outputs are meaningless
but deterministic, which is what batching, caching and plumbing tests need.
"""

from __future__ import annotations

import string
from pathlib import Path

SENTENCES = [
    "Hypertension is persistently raised arterial blood pressure.",
    "Type 2 diabetes mellitus is characterised by insulin resistance and hyperglycaemia.",
    "Aspirin inhibits cyclooxygenase and reduces platelet aggregation.",
    "Ataxia is a lack of muscle coordination affecting gait, speech and eye movements.",
    "Microcephaly is a head circumference more than two standard deviations below the mean.",
    "Pneumonia presents with fever, cough, dyspnoea and pleuritic chest pain.",
    "Answer: A. B. C. D. The correct option is the one that best matches the definition.",
    "Options: A B C D E. Answer: A. Answer: B. Answer: C. Answer: D. Answer: E.",
    "Question: Which term matches this definition? Options: anaemia, seizure, tachycardia.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def build_tiny_model(
    path: Path, *, chat_template: bool = True, seed: int = 0, add_bos: bool = True
) -> Path:
    """Write a tiny random Llama model and its tokenizer to `path`; returns `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    # sentencepiece-style pieces ("▁word") decode to readable text, unlike random byte tokens
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=specials,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    if add_bos:  # like Llama: "<s>" before every encoded text when special tokens are on
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # a larger spread than the 0.02 default makes the random model's choices less flat
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(path)
    return path
