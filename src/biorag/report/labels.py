"""What a report calls things: metric and task display names, the order of the arms, and the
chance level of a task. Tables keep the ids (they join with MLflow and the CSVs); figures and
LaTeX tables show these names."""

from __future__ import annotations

import math
import textwrap

# the RAG x fine-tune 2x2 first, then the arm fine-tuned for retrieval; the rest by name
ARM_ORDER = ("base", "rag", "lora", "lora_rag", "raft")

METRIC_NAMES = {
    "accuracy": "Accuracy",
    "exact_match": "Exact match",
    "macro_f1": "Macro-F1",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bertscore": "BERTScore",
    "code_f1": "Code F1 (micro)",
    "code_precision": "Code precision (micro)",
    "code_recall": "Code recall (micro)",
    "code_f1_category": "Code F1 (category, micro)",
    "code_precision_category": "Code precision (category, micro)",
    "code_recall_category": "Code recall (category, micro)",
    "factoid_mrr": "Factoid MRR",
    "factoid_strict_acc": "Factoid strict accuracy",
    "factoid_lenient_acc": "Factoid lenient accuracy",
    "list_f1": "List F1",
    "list_precision": "List precision",
    "list_recall": "List recall",
    "clue_accuracy": "Accuracy (CLUE)",
    "clue_icd_f1": "ICD F1 (CLUE)",
    "clue_icd_f1_category": "ICD F1, category (CLUE)",
    "clue_valid_codes": "Valid codes (CLUE)",
    "umls_precision": "UMLS precision",
    "umls_recall": "UMLS recall",
    "umls_f1": "UMLS F1",
    "unparsed_rate": "Unparsed rate",
    "truncated_outputs": "Truncated outputs",
    "retrieval_evidence_in_prompt": "Evidence in prompt",
    "retrieval_ndcg_at_10": "nDCG@10",
    "retrieval_mrr_at_10": "MRR@10",
    "leak_source_in_index": "Source in index (leak)",
}
# log-likelihood variants of an option metric (biorag.scoring.evaluate), longest first
VARIANTS = (("_ll_norm", "length-normalised log-likelihood"), ("_ll", "log-likelihood"))
CHANCE_METRICS = ("accuracy", "clue_accuracy", "factoid_strict_acc", "factoid_lenient_acc")


def arm_key(arm: str) -> tuple[int, str]:
    """Sort key of an arm: base, rag, lora, lora_rag, raft, then the others by name."""
    return (ARM_ORDER.index(arm) if arm in ARM_ORDER else len(ARM_ORDER), arm)


def base_metric(key: str) -> tuple[str, str]:
    """(the scorer's key, the log-likelihood variant's suffix or "")."""
    for suffix, _ in VARIANTS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key.removesuffix(suffix), suffix
    return key, ""


def metric_name(key: str) -> str:
    """A metric's display name: `accuracy_ll_norm` -> "Accuracy (length-normalised log-likelihood)"."""
    base, suffix = base_metric(key)
    if base.startswith("retrieval_recall_at_"):
        name = f"Recall@{base.removeprefix('retrieval_recall_at_')}"
    else:
        name = METRIC_NAMES.get(base) or base.replace("_", " ").capitalize()
    return f"{name} ({dict(VARIANTS)[suffix]})" if suffix else name


def task_name(task: str, description: str = "", width: int = 0) -> str:
    """A task's display name: its id and, when its config has one, its description (wrapped
    at `width` characters when given)."""
    text = f"{task}: {description}" if description and description != task else task
    return "\n".join(textwrap.wrap(text, width)) if width else text


def has_chance(metric: str) -> bool:
    """Whether guessing has a known level on this metric (the accuracies of a choice)."""
    return base_metric(metric)[0] in CHANCE_METRICS


def chance_of(option_counts: list[int], task_type: str = "", n_options: int | None = None,
              labels: int = 0) -> float:
    """The accuracy of a uniform guess: the mean of 1/n over the items' option counts (from the
    log-likelihoods the cell scored), else 1/n of the task's options or labels; NaN otherwise."""
    counts = [n for n in option_counts if n > 0]
    if counts:
        return sum(1 / n for n in counts) / len(counts)
    if labels > 1:
        return 1 / labels
    if task_type == "mcq" and n_options:
        return 1 / n_options
    return math.nan
