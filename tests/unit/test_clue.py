"""CLUE reproduced: its six files read as distributed, LongHealth's three settings, CLUE's
scoring rules (and its first-item double count under clue_compat), UMLS-F1 on a tiny
knowledge base, protocol=clue's shots, study=clue's plan and the report's levels."""

from __future__ import annotations

import random
from pathlib import Path
from statistics import mean
from types import SimpleNamespace

import pytest

from biorag.prompting import build_prompt
from biorag.report.clue_levels import levels, quirks
from biorag.report.study import Cell
from biorag.scoring.clue import UMLSLinker, clue_accuracy, clue_icd, set_linker, umls_f1
from biorag.scoring.evaluate import score_task
from biorag.scoring.metrics import aggregate, compute_metrics
from biorag.tasks import load_examples, load_task_config
from biorag.tasks.longhealth import ABSTAIN
from biorag.types import Prediction

CLUE = Path(__file__).resolve().parents[1] / "fixtures" / "clue"
FILES = {  # task -> (the file in CLUE's data/ layout, items, first gold)
    "mednli": ("MedNLI/mli_test_v1.jsonl", 6, "entailment"),
    "meqsum": ("MeQSum/MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx", 5,
               "Is it safe to drink alcohol while taking metformin?"),
    "problem-summary": ("ProblemSummary/BioNLP2023-1A-Test.csv", 6,
                        "Community acquired pneumonia; acute on chronic hypoxic respiratory failure; COPD;"),
    "medisumqa": ("MeDiSumQA/MeDiSumQA.json", 4, "You should continue amoxicillin-clavulanate for five more days."),
    "medisumcode": ("MeDiSumCode/MeDiSumCode.json", 4, ("J189", "J441", "I10")),
    "longhealth": ("LongHealth/benchmark_v5.json", 4, "B"),
    "longhealth-mixed": ("LongHealth/benchmark_v5.json", 4, "B"),
    "longhealth-absent": ("LongHealth/benchmark_v5.json", 4, "F"),
}


def clue_task(name: str, *overrides: str):
    return load_task_config(name, [f"task.path={CLUE / FILES[name][0]}", *overrides])


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_clue_file_loads_through_its_task(name: str) -> None:
    examples = load_examples(clue_task(name))
    assert len(examples) == FILES[name][1] and examples[0].gold == FILES[name][2]


def test_clue_files_are_where_the_task_configs_look() -> None:
    for name, (rel, _, _) in FILES.items():
        assert load_task_config(name).path == f"data/{rel}"


def test_problem_summary_sections_and_medisumqa_question() -> None:
    ps = load_examples(clue_task("problem-summary"))[0]
    assert ps.metadata["Subjectives"].startswith("Pt reports") and ps.metadata["Assessment"].startswith("72M")
    assert "Objectives" not in ps.metadata  # CLUE's prompt shows subjectives and assessment
    qa = load_examples(clue_task("medisumqa"))[0]
    assert qa.metadata["question"] == "Which antibiotic should I keep taking at home?" == qa.query


# -- LongHealth's three settings ----------------------------------------------------------------


def test_longhealth_settings() -> None:
    own = {t for e in load_examples(clue_task("longhealth")) if e.metadata["patient"] == "patient_01" for t in e.documents}
    mixed = [e for e in load_examples(clue_task("longhealth-mixed")) if e.id.startswith("patient_01-q1")]
    absent = [e for e in load_examples(clue_task("longhealth-absent")) if e.id.startswith("patient_01-q1")]
    (m,), (a,) = mixed, absent
    # 2: the two answering texts first, then the other patient's texts; option F added
    assert m.documents[:2] == tuple(sorted(own, key=lambda t: not t.startswith("Admission"))[:0]) + m.documents[:2]
    assert "R-CHOP" in m.documents[0] and "R-CHOP" in m.documents[1]
    assert set(m.documents[2:]) and not set(m.documents[2:]) & own  # foreign documents
    assert m.options[-1] == ABSTAIN and len(m.options) == 6 and m.gold == "B"
    # 3: other patients' texts only, and the abstention option is the gold answer
    assert not set(a.documents) & own and a.gold == "F" and a.options[5] == ABSTAIN


def test_longhealth_under_clue_packs_answering_texts_then_shuffles() -> None:
    cfg = clue_task("longhealth", "task.protocol=clue")
    examples = load_examples(cfg)
    assert len(examples) == 4 * 5  # five prompts a question
    q1 = [e for e in examples if e.id.startswith("patient_01-q1-")]
    assert [e.documents[:2] for e in q1] == [q1[0].documents[:2]] * 5  # answering texts first
    # a budget for the answering texts only: both are kept, whatever the order
    small = load_task_config("longhealth", [f"task.path={CLUE / FILES['longhealth'][0]}", "task.protocol=clue",
                                            "task.document_tokens=110"])
    orders = set()
    for e in q1:
        text = build_prompt(small, e).messages[-1]["content"]
        assert "R-CHOP" in text.split("END DOCUMENTS")[0] and "Discharge letter 11/2021" not in text
        orders.add(text.index("Admission note") < text.index("Follow-up letter"))
        assert build_prompt(small, e).messages == build_prompt(small, e).messages  # seeded
    assert orders == {True, False}  # the order is mixed between the five prompts
    assert "The correct answer is" in text and cfg.max_new_tokens == 50


# -- CLUE's scoring rules -----------------------------------------------------------------------


def test_clue_mednli_rule_counts_the_label_exactly_once() -> None:
    outs = ["ENTAILMENT", "entailment or entailment", "Entailment, not contradiction", "neutral"]
    got = clue_accuracy(outs, ["entailment"] * 3 + ["contradiction"], n_resamples=10)["clue_accuracy"]
    assert got.per_example == (1.0, 0.0, 1.0, 0.0)


def test_clue_longhealth_rule_reads_the_answer_phrase() -> None:
    outs = ["The correct answer is B: R-CHOP.", "B", "The correct answer is F: none", "the correct answer is B:"]
    got = clue_accuracy(outs, ["B", "B", "F", "B"], n_resamples=10)["clue_accuracy"]
    assert got.per_example == (1.0, 0.0, 1.0, 0.0)


def test_clue_icd_scores_by_hand() -> None:
    outs = ["ICD-10 Codes: J18.9, J44.1, Z99.99", "e10.10 E87.6", "nothing"]
    got = clue_icd(outs, [("J189", "J441", "I10"), ("E1010", "E876"), ("N179",)], n_resamples=10)
    # note 1: preds J189 J441 Z9999, gold J189 J441 I10 -> P 2/3 R 2/3; note 2: regex is
    # case-sensitive (e10.10 missed): preds E876 -> P 1 R 1/2; note 3: no codes
    assert got["clue_icd_f1"].per_example == pytest.approx((2 / 3, 2 / 3, 0.0))
    assert got["clue_icd_f1_category"].per_example == pytest.approx((2 / 3, 2 / 3, 0.0))  # J18 J44 | Z99 I10
    assert got["clue_valid_codes"].per_example == pytest.approx((2 / 3, 1.0, 0.0))  # Z99.99 is no code


def _clue_update_results_mean(values: list[float]) -> float:
    """CLUE's eval/utils.py update_results + compute_average_results, as written."""
    results: dict[str, list[float]] = {}
    for v in values:
        if "ACCURACY" not in results:
            results["ACCURACY"] = [v]
        results["ACCURACY"].append(v)
    return mean(results["ACCURACY"])


def test_clue_compat_counts_the_first_item_twice_exactly() -> None:
    outs = ["ENTAILMENT", "NEUTRAL", "CONTRADICTION", "entailment", "neutral", "neutral"]
    train = f"task.shots_path={CLUE / 'MedNLI/mli_train_v1.jsonl'}"  # shots from training: all 6 scored
    plain_cfg = clue_task("mednli", "task.protocol=clue", train)
    plain = score_task(plain_cfg, load_examples(plain_cfg), outs)
    compat_cfg = clue_task("mednli", "task.protocol=clue-compat", train)
    compat = score_task(compat_cfg, load_examples(compat_cfg), outs)
    per = list(plain.metrics["clue_accuracy"].per_example)
    assert per == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert plain.metrics["clue_accuracy"].value == pytest.approx(0.5)
    assert compat.metrics["clue_accuracy"].value == pytest.approx(_clue_update_results_mean(per)) == pytest.approx(4 / 7)
    assert compat.metrics["clue_accuracy"].per_example == tuple(per)  # still one value an item
    assert compat.metrics["macro_f1"].value == plain.metrics["macro_f1"].value  # corpus-level: untouched
    assert compat_cfg.temperature == 1.0 and clue_task("mednli", "task.protocol=clue").temperature == 0.0
    # LongHealth's means never had the quirk
    assert not clue_task("longhealth", "task.protocol=clue-compat").double_count_first


# -- UMLS-F1 ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_linker():
    """A rule-based spaCy pipeline that links a few phrases to a three-concept knowledge base."""
    spacy = pytest.importorskip("spacy")
    from spacy.language import Language
    from spacy.tokens import Span

    kb = SimpleNamespace(cui_to_entity={
        "C0032285": SimpleNamespace(canonical_name="Pneumonia"),
        "C0011880": SimpleNamespace(canonical_name="Diabetic Ketoacidosis"),
        "C0020538": SimpleNamespace(canonical_name="Hypertensive disease"),
    })
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "ENTITY", "pattern": [{"LOWER": "pneumonia"}], "id": "C0032285"},
        {"label": "ENTITY", "pattern": [{"LOWER": "dka"}], "id": "C0011880"},
        {"label": "ENTITY", "pattern": [{"LOWER": "diabetic"}, {"LOWER": "ketoacidosis"}], "id": "C0011880"},
        {"label": "ENTITY", "pattern": [{"LOWER": "hypertension"}], "id": "C0020538"},
        {"label": "ENTITY", "pattern": [{"LOWER": "cough"}], "id": ""},  # an entity with no concept
    ])
    if not Span.has_extension("kb_ents"):
        Span.set_extension("kb_ents", default=[])

    @Language.component("tiny_kb_linker")
    def link(doc):
        for ent in doc.ents:
            ent._.kb_ents = [(ent.ent_id_, 1.0)] if ent.ent_id_ else []
        return doc

    nlp.add_pipe("tiny_kb_linker")
    set_linker(UMLSLinker(nlp, kb))
    yield
    set_linker(None)


def test_umls_f1_equals_a_hand_count(tiny_linker) -> None:
    preds = ["Pneumonia and DKA with cough.", "hypertension", ""]
    refs = ["pneumonia, hypertension", "Diabetic ketoacidosis", "pneumonia"]
    got = umls_f1(preds, refs, n_resamples=10)
    # 1: {Pneumonia, DKA} vs {Pneumonia, Hypertensive}: P 1/2 R 1/2 F 1/2; 2: nothing shared; 3: empty
    assert got["umls_precision"].per_example == (0.5, 0.0, 0.0)
    assert got["umls_recall"].per_example == (0.5, 0.0, 0.0)
    assert got["umls_f1"].value == pytest.approx(0.5 / 3)


def test_umls_f1_without_the_linker_is_absent_with_its_reason() -> None:
    pytest.importorskip("spacy")
    try:
        import scispacy  # noqa: F401
        pytest.skip("scispaCy is installed here")
    except ImportError:
        pass
    set_linker(None)
    results, skipped = compute_metrics(["rouge", "umls_f1"], ["pneumonia"], ["pneumonia"], n_resamples=10)
    assert "umls_f1" not in results and "rouge1" in results
    assert "scispacy" in skipped["umls_f1"].lower()


# -- protocol=clue: shots --------------------------------------------------------------------------


@pytest.mark.parametrize("name,shots", [("mednli", 3), ("meqsum", 3), ("problem-summary", 3),
                                         ("medisumqa", 1), ("medisumcode", 1), ("longhealth", 0)])
def test_protocol_clue_renders_its_shots_and_never_scores_them(name: str, shots: int) -> None:
    cfg = clue_task(name, "task.protocol=clue")
    assert cfg.shots == shots
    examples = load_examples(cfg)
    everything = load_examples(clue_task(name))
    scored = {e.id for e in examples}
    for e in examples:
        roles = [m["role"] for m in build_prompt(cfg, e).messages]
        assert roles == ["system", *["user", "assistant"] * shots, "user"]
        assert len(e.shots) == shots and not {s.id for s in e.shots} & scored
    if name == "longhealth":
        assert len(scored) == 5 * len(everything)  # CLUE's five prompts a question
    else:
        assert len(scored) == len(everything) - shots


def test_shots_from_a_training_file_score_every_test_item() -> None:
    cfg = clue_task("mednli", "task.protocol=clue", f"task.shots_path={CLUE / 'MedNLI/mli_train_v1.jsonl'}")
    examples = load_examples(cfg)
    assert len(examples) == 6 and all(s.id.startswith("t-") for s in examples[0].shots)
    prompt = build_prompt(cfg, examples[0]).messages
    assert prompt[2]["role"] == "assistant" and prompt[2]["content"] in ("entailment", "contradiction", "neutral")


def test_shots_from_clue_are_cluee_own_draw() -> None:
    cfg = clue_task("mednli", "task.protocol=clue", "task.shots_from=clue")
    order = load_examples(clue_task("mednli"))
    random.seed(1)  # exactly what eval/eval_mednli.py does
    random.shuffle(order)
    examples = load_examples(cfg)
    assert [s.id for s in examples[0].shots] == [e.id for e in order[:3]]
    assert [e.id for e in examples] == [e.id for e in order[3:]]


def test_medisumcode_shot_answer_is_cluees_phrase() -> None:
    cfg = clue_task("medisumcode", "task.protocol=clue")
    ex = load_examples(cfg)[0]
    assert build_prompt(cfg, ex).messages[2]["content"] == "ICD-10 Codes: " + ", ".join(ex.shots[0].gold)


def test_protocol_clue_applies_to_clue_tasks_only() -> None:
    from biorag.tasks.protocols import ProtocolNotApplicable

    with pytest.raises(ProtocolNotApplicable, match="clue"):
        load_task_config("medqa", ["task.protocol=clue"])


# -- study=clue and the report -------------------------------------------------------------------


def test_study_clue_plans_six_tasks_for_nine_models() -> None:
    from biorag.experiment.plan import plan

    _, cells, _ = plan(["study=clue"])
    assert len({c.model.name for c in cells}) == 9
    assert {c.task.name for c in cells} == set(FILES)  # LongHealth as its three settings
    assert len(cells) == 9 * 8 and {c.task.protocol for c in cells} == {"clue"}


def _cell(task: str, protocol: str, metric: str, scores: list[float], logged: float | None = None) -> Cell:
    v, lo, hi = aggregate(scores)
    v = v if logged is None else logged
    metrics = {f"{task}/{metric}": v, f"{task}/{metric}_ci_low": lo, f"{task}/{metric}_ci_high": hi}
    preds = [Prediction(f"{task}-{i}", "", None, "", scores={metric: s}) for i, s in enumerate(scores)]
    return Cell(f"{task}-{protocol}", "base", "m", task, "general", None, 0, metrics, preds, protocol=protocol)


def test_report_levels_and_quirks_by_hand() -> None:
    cells = [
        _cell("mednli", "clue", "clue_accuracy", [1, 0, 1, 1]),  # 0.75
        _cell("meqsum", "clue", "rougeL", [0.2, 0.4]),  # 0.3
        _cell("problem-summary", "clue", "rougeL", [0.3]),  # 0.3
        _cell("medisumqa", "clue", "rougeL", [0.1, 0.3]),  # 0.2
        _cell("medisumcode", "clue", "clue_icd_f1", [0.5, 0.5]),  # 0.5
        _cell("longhealth", "clue", "clue_accuracy", [1, 1]),  # settings: 1.0, 0.5, 0.0 -> 0.5
        _cell("longhealth-mixed", "clue", "clue_accuracy", [1, 0]),
        _cell("longhealth-absent", "clue", "clue_accuracy", [0, 0]),
        _cell("mednli", "clue-compat", "clue_accuracy", [1, 1, 0, 0], logged=3 / 5),  # first twice
    ]
    found = {(lv.protocol, lv.level): lv for lv in levels(cells, n_resamples=200)}
    one, two = found[("clue", "Level 1")], found[("clue", "Level 2")]
    assert one.value == pytest.approx((0.75 + 0.3 + 0.3) / 3) and not one.missing
    assert two.value == pytest.approx((0.2 + 0.5 + 0.5) / 3) and not two.missing
    assert one.lo <= one.value <= one.hi and two.lo < two.hi
    assert found[("clue-compat", "Level 1")].missing == ["meqsum", "problem-summary"]
    (q,) = quirks(cells)
    assert q.task == "mednli" and q.double_count == pytest.approx(3 / 5 - 0.5)
    assert q.sampling == pytest.approx(0.5 - 0.75) and q.n == 4


def test_ls_protocols_lists_clue_and_its_compat_twin() -> None:
    from typer.testing import CliRunner

    from biorag.cli import app

    r = CliRunner().invoke(app, ["ls", "protocols"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "clue-compat" in r.output and "cot" in r.output
