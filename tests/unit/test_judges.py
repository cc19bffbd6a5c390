"""The judge engine on scripted judges: exact rubric scores (negative criteria, clipping),
scales, support, parse accounting, the cache, juries and the context check."""

from __future__ import annotations

import math

import pytest
from tests.helpers.scripted_judge import ScriptedJudge

from biorag.judges.config import JudgeConfig
from biorag.judges.methods import Answer, Criterion, claims, read_rubric
from biorag.judges.run import JudgeError, JudgementCache, item_metrics, judge_answers, jury
from biorag.judges.verdicts import BINARY, SCALE, by_loglikelihood, parse_verdict

RUBRIC = (Criterion("names the drug", 5), Criterion("gives the dose", 3), Criterion("advises rest", 2),
          Criterion("recommends a dangerous dose", -4, ("axis:safety",)))


def _judge(name="j", verdict="loglikelihood", **kw) -> JudgeConfig:
    return JudgeConfig(name=name, model="fake", verdict=verdict, **kw)


def _run(tmp_path, judge, gen, answers, methods, **kw):
    cache = JudgementCache(tmp_path / f"{judge.name}.jsonl")
    return judge_answers(judge, gen, answers, methods, cache, "id0", **kw)


def _answer(item="q1", text="Take aspirin.", **kw) -> Answer:
    return Answer(item, "I have a headache.", text, **kw)


def test_rubric_scores_equal_healthbench_arithmetic_with_negative_points_and_clipping(tmp_path):
    answers = [
        _answer("all", rubric=RUBRIC),  # 5+3+2 of 10
        _answer("neg", rubric=RUBRIC),  # 5+3-4 of 10
        _answer("clip", rubric=RUBRIC),  # -4 of 10: clipped to 0
    ]
    script = {"all": ("names the drug", "gives the dose", "advises rest"),
              "neg": ("names the drug", "gives the dose", "recommends a dangerous dose"),
              "clip": ("recommends a dangerous dose",)}
    scores = {}
    for a in answers:
        got = _run(tmp_path / a.item, _judge(), ScriptedJudge(yes=script[a.item]), [a], ["rubric"])
        scores[a.item] = got.items[a.item]
    assert scores["all"]["rubric_score"] == 1.0
    assert scores["neg"]["rubric_score"] == pytest.approx(0.4)
    assert scores["clip"]["rubric_score"] == 0.0
    # the safety axis has no positive points: no score rather than a division by zero
    assert math.isnan(scores["all"]["rubric_axis_safety"])


def test_log_likelihood_verdicts_are_the_normalised_probability_of_yes():
    gen = ScriptedJudge(yes=("fever",))
    yes, no = by_loglikelihood(gen, ["Claim: fever is present", "Claim: rash"], BINARY)
    p = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-5.0))
    assert yes.prob == pytest.approx(p) and yes.value == 1.0
    assert no.prob == pytest.approx(1 - p) and no.value == 0.0
    scale, = by_loglikelihood(ScriptedJudge(points={"accuracy": 4}),
                              ["Rate the answer's accuracy (x). Answer with one number from 1 to 5."], SCALE)
    w = [math.exp(-0.1 if k == 4 else -5.0) for k in range(1, 6)]
    assert scale.value == pytest.approx(sum(k * x for k, x in zip(range(1, 6), w, strict=True)) / sum(w))


def test_unparsed_generated_verdicts_are_counted_and_never_scored_as_met(tmp_path):
    a = _answer(rubric=RUBRIC)
    got = _run(tmp_path, _judge(verdict="generate"), ScriptedJudge(unparsed=True), [a], ["rubric"])
    assert got.items["q1"]["judge_unparsed_rate"] == 1.0
    assert math.isnan(got.items["q1"]["rubric_score"])
    assert all(math.isnan(v.value) for v in got.verdicts)
    m = item_metrics(got, ["q1"])
    assert math.isnan(m["rubric_score"].value) and m["rubric_score"].n == 0
    assert parse_verdict("Yes, it does.", BINARY) == 1.0 and parse_verdict("4/5", SCALE) == 4.0
    assert math.isnan(parse_verdict("unclear", BINARY))


def test_the_cache_asks_the_judge_nothing_twice(tmp_path):
    a = _answer(rubric=RUBRIC)
    gen = ScriptedJudge(yes=("names the drug",))
    first = _run(tmp_path, _judge(), gen, [a], ["rubric"])
    calls = gen.calls
    again = _run(tmp_path, _judge(), gen, [a, a], ["rubric"])
    assert gen.calls == calls and again.asked == 0 and again.reused == 8
    assert again.items["q1"] == first.items["q1"]
    # another answer to the same item is judged anew
    _run(tmp_path, _judge(), gen, [_answer(text="Take ibuprofen.", rubric=RUBRIC)], ["rubric"])
    assert gen.calls == calls + 2 * len(RUBRIC)


def test_support_judges_each_claim_against_the_prompt_passages_and_is_nan_closed_book(tmp_path):
    text = "Aspirin relieves headache. It cures cancer."
    rag = _answer("r", text, passages=("Aspirin relieves headache in adults.",))
    book = _answer("b", text)
    got = _run(tmp_path, _judge(), ScriptedJudge(yes=("relieves headache",)), [rag, book], ["support"])
    assert got.items["r"]["claims_supported"] == 0.5 and got.items["r"]["answer_supported"] == 0.0
    assert math.isnan(got.items["b"]["claims_supported"]) and math.isnan(got.items["b"]["answer_supported"])
    assert claims(text) == ["Aspirin relieves headache.", "It cures cancer."]


def test_scale_reads_each_axis_against_the_reference(tmp_path):
    a = _answer(reference="Aspirin 500 mg.")
    got = _run(tmp_path, _judge(verdict="generate"), ScriptedJudge(points={"accuracy": 5, "clarity": 2}), [a], ["scale"])
    assert got.items["q1"]["scale_accuracy"] == 5.0 and got.items["q1"]["scale_clarity"] == 2.0
    assert got.items["q1"]["scale_completeness"] == 3.0
    assert _run(tmp_path / "x", _judge(), ScriptedJudge(), [_answer()], ["scale"]).items["q1"] == {}


def test_a_jury_takes_the_majority_and_a_tie_is_no_verdict(tmp_path):
    a = _answer(rubric=RUBRIC[:2])
    said = [("names the drug", "gives the dose"), ("names the drug",), ()]
    judged = [_run(tmp_path / str(i), _judge(f"j{i}"), ScriptedJudge(yes=y), [a], ["rubric"]) for i, y in enumerate(said)]
    assert jury([a], ["rubric"], judged, ["accuracy"]).items["q1"]["rubric_score"] == pytest.approx(5 / 8)
    tie = jury([a], ["rubric"], judged[1:], ["accuracy"])
    assert math.isnan(tie.items["q1"]["rubric_score"])  # "names the drug": 1 of 2


def test_a_prompt_longer_than_the_judge_reads_is_an_error_naming_the_item(tmp_path):
    a = _answer("long", "word " * 300, rubric=RUBRIC[:1])
    with pytest.raises(JudgeError, match=r"item long is \d+ tokens longer than its model reads \(100\)"):
        _run(tmp_path, _judge(), ScriptedJudge(), [a], ["rubric"], max_length=100)
    assert not (tmp_path / "j.jsonl").exists() or (tmp_path / "j.jsonl").read_text() == ""


@pytest.mark.parametrize(("rubric", "field"), [
    ([{"criterion": "x"}], "rubrics[0].points"),
    ([{"criterion": "x", "points": "five"}], "rubrics[0].points"),
    ([{"points": 3}], "rubrics[0].criterion"),
])
def test_a_bad_rubric_names_its_field(rubric, field):
    from biorag.errors import InputError

    with pytest.raises(InputError) as e:
        read_rubric(rubric, "hb.jsonl:4")
    assert "hb.jsonl:4" in str(e.value) and field in str(e.value)


def test_verdict_probabilities_on_a_tiny_model_equal_a_hand_computation(tmp_path):
    """P(yes) from the judge path equals softmax over the summed log-probabilities of the
    verdict tokens, computed here with the model's own forward pass."""
    import torch
    from tests.helpers.tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biorag.judges.verdicts import render
    from biorag.models.config import ModelConfig
    from biorag.models.loading import load_generator

    folder = build_tiny_model(tmp_path / "tiny")
    gen = load_generator(ModelConfig(name="tiny", id=str(folder), batch_size=4))
    prompt = render(gen, "Claim: aspirin reduces platelet aggregation. Is it supported? Answer yes or no.")
    got, = by_loglikelihood(gen, [prompt], BINARY)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def logprob(cont: str) -> float:
        ctx = tok(prompt)["input_ids"]
        whole = tok(prompt + cont)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits.log_softmax(-1)[0]
        return float(sum(logits[i - 1, whole[i]] for i in range(len(ctx), len(whole))))

    cont = "yes" if prompt[-1].isspace() else " yes"
    yes, no = logprob(cont), logprob(cont.replace("yes", "no"))
    assert got.prob == pytest.approx(math.exp(yes) / (math.exp(yes) + math.exp(no)), abs=1e-3)


@pytest.mark.parametrize(("protocol", "output", "said", "whole"), [
    ("loglikelihood", "", "The answer is Ataxia.", False),  # the chosen option, one claim
    ("cot", "Ataxia is poor coordination. So the answer is B.", "Ataxia is poor coordination. So the answer is B.",
     True),  # the reasoning's claims
])
def test_what_a_judge_sees_of_a_log_likelihood_and_a_cot_cell(protocol, output, said, whole):
    from types import SimpleNamespace

    from biorag.experiment.judging import cell_answers, cell_methods
    from biorag.experiment.plan import plan_run
    from biorag.types import CellRecord, Chunk, Example, Prediction

    cfg = plan_run(["arm=base", "model=fake", "task=hpo-term-mcq", f"task.protocol={protocol}",
                    "judges=[smollm2]"]).cells[0]
    ex = Example("e1", "hpo-term-mcq", "Lack of coordination?", "B", options=("Anaemia", "Ataxia"))
    pred = Prediction("e1", output, "B", "B")
    rec = CellRecord("e1", "h", ("c1",), output, (), 10, 0.0, 0.0)
    index = SimpleNamespace(found_rows=lambda ids: {"c1": 0},
                            chunk=lambda row: Chunk("c1", "d1", "Ataxia is a lack of coordination.", title="Ataxia"))
    rag, = cell_answers(cfg, [ex], [pred], [rec], SimpleNamespace(index=index))
    book, = cell_answers(cfg, [ex], [pred], [rec], None)
    assert rag.answer == said and rag.claims_from_output is whole
    assert rag.passages == ("Ataxia is a lack of coordination.",) and book.passages is None
    assert cell_methods(cfg, [rag]) == ["support"]


def test_validate_names_a_judged_metric_without_a_judge_and_counts_the_questions():
    from pathlib import Path

    from biorag.experiment.checks import check_cells
    from biorag.experiment.judging import plan_judges
    from biorag.experiment.plan import plan_run

    fixture = Path(__file__).parents[1] / "fixtures" / "tasks" / "healthbench" / "healthbench.jsonl"
    bare = plan_run(["arm=base", "model=fake", "task=healthbench", f"task.path={fixture}", "task.judge=null"]).cells
    assert any(p.what == "judge" and "rubric_score" in p.why for p in check_cells(bare))
    judged = plan_run(["arm=base", "model=fake", "task=healthbench", f"task.path={fixture}"]).cells
    assert not [p for p in check_cells(judged) if p.what == "judge"]
    plan, = plan_judges(judged)
    # rubric criteria of the 4 items, and 3 scale axes for each item with an ideal completion
    from biorag.tasks import load_examples

    examples = load_examples(judged[0].task)
    criteria = sum(len(e.metadata["rubrics"]) for e in examples)
    assert plan.questions == criteria + 3 * sum(bool(e.gold) for e in examples)
    assert plan.requests == 2 * criteria + 5 * 3 * sum(bool(e.gold) for e in examples)
