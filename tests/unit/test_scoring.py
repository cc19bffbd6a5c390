"""Answer extraction and metrics: hand-made outputs scored to known values."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from biorag.scoring import metrics as scoring
from biorag.scoring.metrics import (
    MetricUnavailable,
    accuracy,
    aggregate,
    code_f1,
    code_f1_category,
    compute_metrics,
    exact_match,
    extract_codes,
    extract_label,
    extract_letter,
    macro_f1,
    mcq_argmax,
    normalise_code,
    parse_output,
    rouge,
)
from biorag.tasks.extraction import extract_answers

OPTIONS = ("Asthma", "Bronchiectasis", "Asthma NOS", "Pneumonia", "Sarcoidosis")
NLI = ("entailment", "neutral", "contradiction")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The answer is (C)", "C"),
        ("C.", "C"),
        ("**C**", "C"),
        ("c) asthma NOS, because ...", "C"),
        ("Answer: C", "C"),
        ("answer: c", "C"),
        ("The correct answer is: (D) Pneumonia", "D"),
        ("The best choice is option D.", "D"),
        ("C. A is wrong because it ignores the history.", "C"),
        ("Bronchiectasis", "B"),  # an option's text instead of its letter
        ("I think it is Asthma NOS.", "C"),  # the longer option wins over the one it contains
        ("A 45-year-old man like this most likely has pneumonia", "D"),  # "A" is an article
        ("Ｃ", "C"),  # full-width letter
        ("（Ｃ）", "C"),
        ("Answer:\u00a0D", "D"),  # non-breaking space
        ("", None),
        ("   ", None),
        ("I am not sure.", None),  # no letter, no option text
        ("A or C", None),  # two different letters
        ("The answer is A or C", None),
        ("I would pick (B), not (C)", None),
        ("The answer is a fever.", None),  # a lower-case article is not an answer
        ("E. coli grew in the culture", None),  # a genus abbreviation, not option E
        ("F", None),  # outside A-E
    ],
)
def test_extract_letter(output: str, expected: str | None) -> None:
    assert extract_letter(output, OPTIONS) == expected


def test_extract_letter_respects_the_number_of_options() -> None:
    assert extract_letter("E", ("a", "b", "c", "d")) is None
    assert extract_letter("D", ("a", "b", "c", "d")) == "D"
    assert extract_letter("yes", ("yes", "no", "maybe")) == "A"
    assert extract_letter("Maybe.", ("yes", "no", "maybe")) == "C"
    assert extract_letter("yes, but maybe not", ("yes", "no", "maybe")) is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("entailment", "entailment"),
        ("The premise entails the hypothesis.", "entailment"),
        ("It contradicts it", "contradiction"),
        ("NEUTRAL", "neutral"),
        ("B", "neutral"),  # a lettered answer maps to the label in order
        ("neutral or contradiction", None),
        ("", None),
        ("no idea", None),
    ],
)
def test_extract_label(output: str, expected: str | None) -> None:
    assert extract_label(output, NLI) == expected


def test_codes_are_normalised_and_extracted() -> None:
    assert (
        normalise_code("J45.909")
        == normalise_code("j45909")
        == normalise_code(" J45. 909 ")
        == "J45909"
    )
    assert extract_codes("J45.909, e11.9 and I10; again J45909") == ("J45909", "E119", "I10")
    assert extract_codes("S72.001A and Z3A.01") == ("S72001A", "Z3A01")
    assert extract_codes("T2D, no codes here") == ()
    assert extract_codes("") == ()


def test_parse_output_by_answer_type() -> None:
    assert parse_output("letter", "Answer: B", OPTIONS) == "B"
    assert parse_output("label", "contradiction", NLI) == "contradiction"
    assert parse_output("codes", "I10, E11.9") == ("I10", "E119")
    assert parse_output("text", "  a summary \n") == "a summary"
    with pytest.raises(ValueError):
        parse_output("number", "1")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Answer: atorvastatin.", ("atorvastatin",)),
        ("1. CFTR\n2) ENaC\n- SCNN1A\n", ("CFTR", "ENaC", "SCNN1A")),
        ("vitamin A, vitamin D, and vitamin K", ("vitamin A", "vitamin D", "vitamin K")),
        ("idarucizumab; protamine sulfate", ("idarucizumab", "protamine sulfate")),
        ("1,25-dihydroxyvitamin D", ("1,25-dihydroxyvitamin D",)),  # a comma with no space
        ("salt and pepper", ("salt and pepper",)),  # "and" alone does not separate
        ("**CFTR**\n\ncftr.", ("CFTR",)),  # the same answer twice is kept once
        ("", ()),
    ],
)
def test_extract_answers(output: str, expected: tuple[str, ...]) -> None:
    assert extract_answers(output) == expected
    assert parse_output("answers", output) == expected


# real-looking outputs of the cot and medrag protocols, each parser path, with the letter read
PROTOCOL_OUTPUTS = [
    ('{"step_by_step_thinking": "TSH is raised and free T4 low.", "answer_choice": "B"}', "json", "B"),
    ('```json\n{"step_by_step_thinking": "...", "answer_choice": "C. Pneumonia"}\n```\nI hope this helps.', "json", "C"),
    ('{"step_by_step_thinking": "the budget ran out while thinking", "answer_choice": "D', "json", "D"),
    ("No JSON here, but the answer is (B).", "json", "B"),  # then the robust extraction
    ('{"step_by_step_thinking": "A fits.", "answer_choice": "A"} {"answer_choice": "C"}', "json", None),
    ("A is unlikely, B is possible, but the fever points to C.\nFinal answer: C", "final_line", "C"),
    ("Reasoning...\n**Final Answer:** (D)", "final_line", "D"),
    ("**C**", "final_line", "C"),
    ("Final answer: A\nOn reflection, no.\nFinal answer: C", "final_line", None),  # two answers
    ("The answer is A or C.", "final_line", None),
    ("I cannot tell from the information given.", "final_line", None),
    ("Step 1: the fever. Step 2: the cough.\nFinal answer: Pneumonia", "final_line", "C"),
]


@pytest.mark.parametrize(("output", "answer_format", "expected"), PROTOCOL_OUTPUTS)
def test_protocol_answers_are_read_or_left_unread(output: str, answer_format: str, expected) -> None:
    options = ("Asthma", "COPD", "Pneumonia", "Sarcoidosis")
    assert parse_output("letter", output, options, answer_format) == expected


def test_unparsed_answers_are_wrong_and_counted_never_a_letter() -> None:
    from biorag.scoring.evaluate import score_task
    from biorag.tasks import load_task_config
    from biorag.types import Example

    cfg = load_task_config("medqa", ["task.protocol=cot"])
    examples = [Example(id=str(i), task="medqa", input="q?", gold=g, options=("w", "x", "y", "z"))
                for i, g in enumerate("ABCD")]
    outputs = ["Final answer: A", "no idea", "Final answer: A", "I would say A or B"]
    s = score_task(cfg, examples, outputs)
    assert s.metrics["accuracy"].per_example == (1.0, 0.0, 0.0, 0.0)
    assert s.metrics["unparsed_rate"].per_example == (0.0, 1.0, 0.0, 1.0)
    assert s.metrics["unparsed_rate"].value == 0.5
    assert [p.parsed for p in s.predictions] == ["A", None, "A", None]


def test_accuracy_counts_unparsed_as_wrong() -> None:
    r = accuracy(["A", None, "C", "D"], ["A", "B", "C", "A"], seed=1)["accuracy"]
    assert r.value == 0.5
    assert r.per_example == (1.0, 0.0, 1.0, 0.0)
    assert r.n == 4
    assert 0.0 <= r.lo <= r.value <= r.hi <= 1.0


def test_aggregate_is_seeded_percentile_bootstrap() -> None:
    x = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    mean, lo, hi = aggregate(x, seed=3)
    assert mean == pytest.approx(0.7)
    assert aggregate(x, seed=3) == (mean, lo, hi)  # same seed, same interval
    # the same computation by hand: resample, mean, 2.5th/97.5th percentiles
    idx = np.random.default_rng(3).integers(0, 10, size=(1000, 10))
    means = np.asarray(x, dtype=float)[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert lo < mean < hi
    assert aggregate([1.0], seed=0) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        aggregate([], seed=0)


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    gold = [
        "entailment",
        "neutral",
        "contradiction",
        "entailment",
        "neutral",
        "contradiction",
        "entailment",
    ]
    pred = ["entailment", "entailment", "contradiction", None, "neutral", "neutral", "entailment"]
    r = macro_f1(pred, gold, seed=0)["macro_f1"]
    expected = f1_score(gold, [p or "none" for p in pred], labels=list(NLI), average="macro")
    assert r.value == pytest.approx(expected)
    assert r.lo <= r.value <= r.hi
    assert r.per_example == (1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)
    perfect = macro_f1(gold, gold)["macro_f1"]
    assert (perfect.value, perfect.lo, perfect.hi) == (1.0, 1.0, 1.0)


def test_exact_match_normalises_case_space_and_punctuation() -> None:
    r = exact_match(["What is asthma?", "what  is ASTHMA", "Asthma", None], ["What is asthma"] * 4)[
        "exact_match"
    ]
    assert r.per_example == (1.0, 1.0, 0.0, 0.0)
    codes = exact_match([("J45909", "I10"), ("I10",)], [("I10", "J45.909"), ("I10", "E11.9")])[
        "exact_match"
    ]
    assert codes.per_example == (1.0, 0.0)


def test_code_f1_micro_and_category() -> None:
    gold = [("J45.909", "I10"), ("E11.9",), ("J18.9",)]
    pred = [("J45909", "I10", "E78.5"), ("E11.65",), ()]
    r = code_f1(pred, gold, seed=0)
    # tp = 2 + 0 + 0, fp = 1 + 1 + 0, fn = 0 + 1 + 1
    assert r["code_precision"].value == pytest.approx(2 / 4)
    assert r["code_recall"].value == pytest.approx(2 / 4)
    assert r["code_f1"].value == pytest.approx(4 / 8)
    assert r["code_f1"].per_example == pytest.approx((0.8, 0.0, 0.0))
    c = code_f1_category(pred, gold, seed=0)
    # categories: {J45, I10, E78} vs {J45, I10}; {E11} vs {E11}; {} vs {J18}
    assert c["code_precision_category"].value == pytest.approx(3 / 4)
    assert c["code_recall_category"].value == pytest.approx(3 / 4)
    assert c["code_f1_category"].value == pytest.approx(6 / 8)
    assert c["code_f1_category"].per_example == pytest.approx((0.8, 1.0, 0.0))


def test_rouge_known_values_and_empty_output() -> None:
    r = rouge(["the cat sat", ""], ["the cat sat on the mat", "anything"], seed=0)
    assert r["rouge1"].per_example == pytest.approx((2 * 1.0 * 0.5 / 1.5, 0.0))
    assert r["rouge2"].per_example[0] == pytest.approx(2 * 1.0 * 0.4 / 1.4)
    assert r["rougeL"].value == pytest.approx((2 / 3) / 2)


def test_bertscore_is_skipped_with_a_reason_when_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_bert_score(name: str, *args, **kwargs):
        if name == "bert_score":
            raise ImportError("No module named 'bert_score'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bert_score)
    with pytest.raises(MetricUnavailable, match="bert_score"):
        scoring.bertscore(["a"], ["a"])
    results, skipped = compute_metrics(["rouge", "bertscore"], ["a b"], ["a b"])
    assert "bertscore" in skipped and "pip install" in skipped["bertscore"]
    assert results["rouge1"].value == 1.0


def test_unknown_metric_lists_known_ones() -> None:
    from biorag.errors import ConfigError

    with pytest.raises(ConfigError, match="accuracy"):
        compute_metrics(["acuracy"], ["A"], ["A"])


def test_mismatched_lengths_are_errors() -> None:
    with pytest.raises(ValueError):
        accuracy(["A"], ["A", "B"])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_mcq_argmax_plain_and_length_normalised() -> None:
    # option 0 is short and likely in total; option 1 is long but likelier per character
    logprobs = [-3.0, -6.0, -20.0]
    n_chars = [2, 40, 10]
    assert mcq_argmax(logprobs, n_chars) == (0, 1)
    assert mcq_argmax([-1.0, -1.0], [3, 3]) == (0, 0)  # ties go to the first option
    assert mcq_argmax([-5.0, -1.0], [0, 1]) == (1, 1)  # empty continuations do not divide by 0


# -- metric properties live on the registered scorer ---------------------------------------


@scoring.scorer("my_micro", corpus_level=True, headline=-1)
def _my_metric(parsed, gold, *, seed=0, n_resamples=10):
    return {}


def test_metric_properties_come_from_the_registered_scorers() -> None:
    from biorag.scoring.metrics import headline_rank, metric_info

    assert metric_info("macro_f1").corpus_level and metric_info("macro_f1_ll_norm").corpus_level
    assert metric_info("code_recall_category").corpus_level
    assert not metric_info("accuracy_ll").corpus_level and not metric_info("rougeL").corpus_level
    assert metric_info("unknown_key") == scoring.MetricInfo(("unknown_key",))
    ranked = sorted(["rougeL", "rouge1", "macro_f1", "accuracy", "accuracy_ll", "accuracy_ll_norm", "code_f1"],
                    key=headline_rank)
    assert ranked == ["accuracy_ll_norm", "accuracy_ll", "accuracy", "macro_f1", "code_f1", "rouge1", "rougeL"]
    assert headline_rank("exact_match") is None and headline_rank("n") is None


def test_a_plugin_scorer_decides_the_headline_and_how_a_report_treats_it(monkeypatch) -> None:
    from biorag import registry
    from biorag.report.compare import _is_corpus_level, headline_metric

    monkeypatch.setitem(registry._ENTRIES["scorer"], "my", "tests.unit.test_scoring:_my_metric")
    logged = {"t/accuracy": 0.5, "t/accuracy_ci_low": 0.4, "t/my_micro": 0.7, "t/n": 10}
    assert headline_metric(logged, "t") == "my_micro"
    assert _is_corpus_level("my_micro")
    monkeypatch.delitem(registry._ENTRIES["scorer"], "my")
    assert headline_metric(logged, "t") == "accuracy"
