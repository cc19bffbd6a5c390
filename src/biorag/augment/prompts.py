"""The prompts the RAG methods ask the cell's model (Jinja2); their hash is part of every
cached call's key, so an edited prompt is asked anew."""

from __future__ import annotations

import hashlib

# HyDE (Gao et al., 2022): a hypothetical passage that answers the question is the query
HYDE = """Write a short passage from a medical textbook that answers this question.

Question: {{ question }}

Passage:"""

# several reformulations, searched each and fused (FlashRAG's multi-query, RAG-Fusion)
MULTI = """Write {{ n }} different search queries that would find medical passages answering this question. Write one query per line, nothing else.

Question: {{ question }}

Queries:"""

# RAG² uses the model's rationale as the query
RATIONALE = """Briefly explain what medical knowledge is needed to answer this question, in two or three sentences.

Question: {{ question }}

Explanation:"""

# evidence filtering: read by log-likelihood (P(yes))
RELEVANT = """Question: {{ question }}

Passage: {{ passage }}

Does the passage contain information that helps answer the question? Answer yes or no."""

# i-MedRAG: follow-up questions given what has been read
FOLLOWUP = """You are answering a medical question and have read these passages:

{{ passages }}

Question: {{ question }}

Write {{ n }} short follow-up questions whose answers you still need, one per line, nothing else.

Follow-up questions:"""

# GenRead / MedRGAG: background written by the model
GENERATE = """Write background passage {{ i }} of {{ n }} for this medical question: a short, factual paragraph as in a textbook{% if n > 1 %}, on a different aspect than the other passages{% endif %}.

Question: {{ question }}

Passage:"""

TEMPLATES = {"hyde": HYDE, "multi": MULTI, "rationale": RATIONALE, "relevant": RELEVANT, "followup": FOLLOWUP,
             "generate": GENERATE}


def version(name: str) -> str:
    return hashlib.sha256(TEMPLATES[name].encode()).hexdigest()[:12]
