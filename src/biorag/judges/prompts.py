"""biorag's judge prompts (Jinja2). A judge config may replace any of them
(`templates: {rubric: ...}`); the prompt's hash is part of every judgement's cache key.

Every binary prompt ends with a yes/no question and every scale prompt with a 1-5 one, so the
verdict can be read by scoring those tokens (log-likelihood) or by parsing what a judge wrote.
"""

from __future__ import annotations

# HealthBench's grader asks whether a response meets one rubric criterion; this is its
# question, shortened for small judges and ending in a yes/no answer
RUBRIC = """You are grading a response in a conversation against one rubric criterion.

Conversation:
{{ conversation }}

Response to grade:
{{ answer }}

Criterion: {{ criterion }}

Does the response meet this criterion? Answer yes or no."""

# MedHELM-style scales against a reference answer
SCALE = """You are grading an answer against a reference answer written by an expert.

Question or input:
{{ question }}

Reference answer:
{{ reference }}

Answer to grade:
{{ answer }}

Rate the answer's {{ axis }} ({{ axis_help }}) from 1 (very poor) to 5 (excellent). Answer with one number from 1 to 5."""

AXIS_HELP = {
    "accuracy": "whether what it says is medically correct and agrees with the reference",
    "completeness": "whether it covers what the reference covers",
    "clarity": "whether it is clear and well organised",
}

# RAG faithfulness: is one claim of the answer supported by the passages the model was given
SUPPORT = """Passages:
{{ passages }}

Claim: {{ claim }}

Is the claim supported by the passages above? Answer yes or no."""

# which of two answers is better (shown in both orders by the caller)
PAIRWISE = """You are comparing two answers to the same question.

Question or input:
{{ question }}

Answer A:
{{ answer_a }}

Answer B:
{{ answer_b }}

Which answer is better, A or B? Answer with one letter."""

TEMPLATES = {"rubric": RUBRIC, "scale": SCALE, "support": SUPPORT, "pairwise": PAIRWISE}

# the tokens a verdict is read from, by kind
YES_NO = ("yes", "no")
SCALE_POINTS = ("1", "2", "3", "4", "5")
AB = ("A", "B")
