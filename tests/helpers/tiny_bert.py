"""Tiny random BERT encoders built offline: a bi-encoder side (`BertModel`) or a
cross-encoder (`BertForSequenceClassification`, one label), with a word-level vocabulary of
a few medical words so different texts give different token ids. Outputs are meaningless
but deterministic for a seed: what dual-encoder and rerank plumbing tests need."""

from __future__ import annotations

import string
from pathlib import Path

WORDS = ["fever", "seizure", "seizures", "ataxia", "anaemia", "microcephaly", "pneumonia", "cough", "gait", "head", "blood", "pressure", "the", "a", "of", "is", "with", "and", "what", "which", "term", "patient", "note", "plan", "treat", "review", "presents", "asthma", "fracture", "migraine", "eczema", "sepsis", "raised", "temperature", "small"]


def build_tiny_bert(path: Path, *, seed: int = 0, cross_encoder: bool = False, hidden_size: int = 32) -> Path:
    """Write a 2-layer BERT, 32 wide unless told (and its tokenizer), to `path`; returns `path`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *string.ascii_lowercase,
                                *string.digits, *string.punctuation,
                                *(f"##{c}" for c in string.ascii_lowercase + string.digits)]))
    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                      cls_token="[CLS]", mask_token="[MASK]").save_pretrained(path)
    # a wide initialisation: random scores that differ visibly between inputs
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.5)
    torch.manual_seed(seed)
    (BertForSequenceClassification if cross_encoder else BertModel)(cfg).save_pretrained(path)
    return path
