"""What a loader brings: the task type, template, scoring and budgets a task of that loader
gets for every setting its YAML leaves out, so `name`, `loader` and `path` make a task.

A packaged task YAML sets all of these itself (and they are the examples to copy);
these defaults serve the task files of one's own (`biorag task init` writes them out).
"""

from __future__ import annotations

from typing import Any

# the settings a loader may fill, and what each is when neither the YAML nor the loader says
# (the schema's own defaults before loaders brought theirs: a plugin loader keeps them)
GENERIC: dict[str, Any] = {
    "type": "",
    "template": "",
    "scoring": "generate",
    "continuation": "letter",
    "context_tokens": 1024,
    "document_tokens": 3072,
    "max_new_tokens": 32,
    "metrics": ["accuracy"],
    "labels": [],
}
FILLED = tuple(GENERIC)

_CONTEXT = """\
{% if context %}
Relevant passages:
{{ context }}

{% endif %}
"""
_DOCUMENTS = """\
{% if documents %}
Documents:
{{ documents }}

{% endif %}
"""
_OPTIONS = """\
{% for letter, text in options %}
{{ letter }}. {{ text }}
{% endfor %}
Answer with the letter of the correct option.
Answer:
"""
MCQ_TEMPLATE = _CONTEXT + "{{ input }}\n\n" + _OPTIONS
MCQ_DOCUMENTS_TEMPLATE = _CONTEXT + _DOCUMENTS + "Question: {{ input }}\n\n" + _OPTIONS
NLI_TEMPLATE = _CONTEXT + """\
Premise: {{ premise }}
Hypothesis: {{ hypothesis }}

Does the premise entail the hypothesis, contradict it, or neither?
Answer with one word: {% for letter, text in options %}{{ text }}{% if not loop.last %}, {% endif %}{% endfor %}.
Answer:
"""
SUMMARISATION_TEMPLATE = _CONTEXT + """\
{% if question is defined and question %}
Text:
{{ input }}

Answer this question about the text, briefly.
Question: {{ question }}
Answer:
{% else %}
Summarise this text briefly.

{{ input }}

Summary:
{% endif %}
"""
CODING_TEMPLATE = _CONTEXT + """\
Give the ICD-10-CM codes for this text, separated by commas.

{{ input }}

Codes:
"""
QA_TEMPLATE = _CONTEXT + _DOCUMENTS + """\
Question: {{ input }}

Answer with short names (an entity, a number or a short phrase), best first, one per line, and nothing else.
Answer:
"""
SUMMARY_QA_TEMPLATE = _CONTEXT + _DOCUMENTS + """\
Question: {{ input }}

Answer in two or three sentences.
Answer:
"""

CONVERSATION_TEMPLATE = _CONTEXT + "{{ input }}\n"  # HealthBench: the conversation is the prompt

_MCQ = {"type": "mcq", "template": MCQ_TEMPLATE, "scoring": "both", "continuation": "letter",
        "max_new_tokens": 16, "metrics": ["accuracy"]}
_CLOZE = {**_MCQ, "continuation": "text", "context_tokens": 512}  # embedded: options scored as text
_TEXT = {"scoring": "generate", "max_new_tokens": 128}

LOADER_DEFAULTS: dict[str, dict[str, Any]] = {
    "mcq": _MCQ,
    "medqa": _MCQ,
    "medmcqa": _MCQ,
    "mmlu": _MCQ,
    "mirage": _MCQ,
    "pubmedqa": {**_MCQ, "template": MCQ_DOCUMENTS_TEMPLATE, "document_tokens": 1536,
                 "metrics": ["accuracy", "macro_f1"]},
    "longdoc": {**_MCQ, "type": "longdoc", "template": MCQ_DOCUMENTS_TEMPLATE, "scoring": "generate",
                "document_tokens": 6000},
    "nli": {"type": "nli", "template": NLI_TEMPLATE, "scoring": "both", "continuation": "text",
            "max_new_tokens": 8, "metrics": ["accuracy", "macro_f1"],
            "labels": ["entailment", "neutral", "contradiction"]},
    "summarisation": {"type": "summarisation", "template": SUMMARISATION_TEMPLATE, **_TEXT,
                      "metrics": ["rouge"]},
    "coding": {"type": "coding", "template": CODING_TEMPLATE, **_TEXT,
               "metrics": ["code_f1", "code_f1_category", "exact_match"]},
    # the conversation is the item's document: kept whole up to 8k tokens; rubric_score is
    # given by the task's judge (biorag.judges), against each item's rubric
    "healthbench": {"type": "summarisation", "template": CONVERSATION_TEMPLATE, "scoring": "generate",
                    "document_tokens": 8192, "max_new_tokens": 512, "metrics": ["rubric_score"]},
    "hpo-term-mcq": _CLOZE,
    "icd10-code-mcq": _CLOZE,
    "icd10-coding": {"type": "coding", "template": CODING_TEMPLATE, "scoring": "generate",
                     "context_tokens": 768, "max_new_tokens": 48,
                     "metrics": ["code_f1", "code_f1_category", "exact_match"]},
}
# BioASQ: the question type (`subset`) decides the task type and prompt
BIOASQ_DEFAULTS: dict[str, dict[str, Any]] = {
    "yesno": {**_MCQ, "template": MCQ_DOCUMENTS_TEMPLATE, "metrics": ["accuracy", "macro_f1"]},
    "factoid": {"type": "qa", "template": QA_TEMPLATE, "scoring": "generate", "max_new_tokens": 48,
                "metrics": ["factoid"]},
    "list": {"type": "qa", "template": QA_TEMPLATE, "scoring": "generate", "max_new_tokens": 128,
             "metrics": ["list_f1"]},
    "summary": {"type": "summarisation", "template": SUMMARY_QA_TEMPLATE, "scoring": "generate",
                "document_tokens": 256, "max_new_tokens": 160, "metrics": ["rouge"]},
}


def loader_defaults(loader: str, subset: str | None = None) -> dict[str, Any]:
    """Every fillable setting as a task of `loader` gets it when its YAML is silent: the
    loader's own, else the generic one (a plugin loader brings none: type and template
    must then be in the YAML)."""
    own = BIOASQ_DEFAULTS.get(subset or "", {}) if loader == "bioasq" else LOADER_DEFAULTS.get(loader, {})
    return {key: _copy(own.get(key, GENERIC[key])) for key in FILLED}


def brings_defaults(loader: str) -> bool:
    return loader in LOADER_DEFAULTS or loader == "bioasq"


def is_unset(value: Any) -> bool:
    """An unset fillable setting: empty string, empty list, or None."""
    return value is None or value == "" or (isinstance(value, list | tuple) and not value)


def fill_defaults(task: Any) -> None:
    """Set each of the task's unset fillable settings to its loader's default (in place)."""
    defaults = loader_defaults(task.loader, task.subset)
    for key in FILLED:
        if is_unset(getattr(task, key)):
            setattr(task, key, defaults[key])


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
