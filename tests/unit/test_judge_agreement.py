"""Jury agreement, meta-evaluation against human labels and the pairwise arena: the numbers
equal the reference packages and hand computations; unparsed verdicts are missing, never met."""

from __future__ import annotations

import math
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from biorag.judges.agreement import TIE, combine_orders, jury_agreement, meta_eval, pairwise
from biorag.judges.labels import read_labels
from biorag.scoring.metrics import MetricResult

NAN = math.nan
LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "judges" / "labels.csv"
# a scripted judge on the 12 rows of the label fixture (humans: 1 0 0 1 0 0 1 1 0 1 0 1)
JUDGE = [1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1]


# -- juries --------------------------------------------------------------------------------


def test_alpha_and_kappa_of_a_tiny_jury_equal_the_hand_computation() -> None:
    # units u1..u4: judge a says 1 1 0 0, judge b 1 0 0 0
    table = {"a": {"u1": 1, "u2": 1, "u3": 0, "u4": 0}, "b": {"u1": 1, "u2": 0, "u3": 0, "u4": 0}}
    out = jury_agreement(table, level="nominal")
    # coincidences o00=4, o01=o10=1, o11=2 (n=8, n0=5, n1=3): D_o = 2/8, D_e = 2*5*3/(8*7)
    assert out["alpha"] == pytest.approx(1 - (2 / 8) / (30 / 56))  # 16/30
    # p_o = 3/4; p_e = .5*.25 + .5*.75 = .5 -> kappa = .5
    assert out["kappa"] == {"a|b": pytest.approx(0.5)}
    assert out["bias"] == {"a": pytest.approx(0.25), "b": pytest.approx(-0.25)}
    assert out["n_units"] == 4


def test_alpha_with_missing_verdicts_equals_krippendorffs_own() -> None:
    table = {
        "j1": {"c1": 1, "c2": 0, "c3": 1, "c4": 1, "c5": 0, "c6": 1},
        "j2": {"c1": 1, "c2": 0, "c3": 0, "c4": 1, "c5": NAN, "c6": 1},  # c5 unparsed
        "j3": {"c1": 1, "c2": 1, "c3": 1, "c4": 1, "c5": 0},  # c6 never judged
    }
    out = jury_agreement(table, level="nominal")
    data = [[1, 0, 1, 1, 0, 1], [1, 0, 0, 1, NAN, 1], [1, 1, 1, 1, 0, NAN]]
    assert out["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    assert out["missing"] == {"j1": 0, "j2": 1, "j3": 1}
    assert set(out["kappa"]) == {"j1|j2", "j1|j3", "j2|j3"}
    # j2 and j3 share c1..c4 only: 1 0 0 1 against 1 1 1 1: p_o = 1/2 = p_e -> kappa 0
    assert out["kappa"]["j2|j3"] == pytest.approx(0.0)

    scales = {"x": {"a": 5, "b": 3, "c": 1, "d": 4}, "y": {"a": 4, "b": 3, "c": 2, "d": 4},
              "z": {"a": 5, "b": 2, "c": 1, "d": NAN}}
    out = jury_agreement(scales, level="interval")
    ref = krippendorff.alpha(reliability_data=[[5, 3, 1, 4], [4, 3, 2, 4], [5, 2, 1, NAN]],
                             level_of_measurement="interval")
    assert out["alpha"] == pytest.approx(ref)
    # y is generous on a (4 vs 5, 5) and c (2 vs 1, 1): bias against the others' mean
    assert out["bias"]["y"] == pytest.approx(np.mean([4 - 5, 3 - 2.5, 2 - 1, 4 - 4]))


def test_one_judge_or_perfect_unanimity_has_no_alpha() -> None:
    assert math.isnan(jury_agreement({"a": {"u": 1, "v": 0}})["alpha"])
    assert math.isnan(jury_agreement({"a": {"u": 1, "v": 1}, "b": {"u": 1, "v": 1}})["alpha"])


# -- meta-evaluation -----------------------------------------------------------------------


def test_meta_eval_on_the_label_fixture_gives_the_hand_computed_kappa() -> None:
    human = [lab.value for lab in read_labels(LABELS)]
    assert human == [1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    out = meta_eval(JUDGE, human, kind="binary")
    # 9 of 12 agree; judge 7 met / 5 not, humans 6 / 6: p_e = (7*6 + 5*6) / 144 = .5
    assert out["accuracy"].value == pytest.approx(9 / 12)
    assert out["kappa"].value == pytest.approx((0.75 - 0.5) / (1 - 0.5))
    # TP 5, FP 2, FN 1
    assert out["f1_met"].value == pytest.approx(10 / 13)
    assert (out["n"], out["n_missing"]) == (12, 0)
    for key in ("accuracy", "kappa", "f1_met"):
        r = out[key]
        assert isinstance(r, MetricResult) and r.lo <= r.value <= r.hi and r.hi > r.lo


def test_unparsed_judge_verdicts_are_missing_never_met() -> None:
    human = [1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    judge = list(JUDGE)
    judge[7] = NAN  # a wrong "not met" on a met criterion becomes unparsed
    judge[1] = NAN  # a right "not met" becomes unparsed
    out = meta_eval(judge, human)
    assert (out["n"], out["n_missing"]) == (10, 2)
    # scored on the 10 parsed units: 8 agree (as "met" the first NaN would make 9 of 12)
    assert out["accuracy"].value == pytest.approx(8 / 10)
    assert out["accuracy"].per_example == (1, 0, 1, 1, 1, 1, 1, 1, 0, 1)
    # f1: TP 5, FP 2, FN 0 (the unparsed met unit is no false negative, and no true positive)
    assert out["f1_met"].value == pytest.approx(10 / 12)
    everything_missing = meta_eval([NAN, NAN], [1, 0])
    assert everything_missing == {"n": 0, "n_missing": 2}


def test_meta_eval_on_a_scale_reports_spearman() -> None:
    judge, human = [1, 2, 3, 4, 5, 3], [1, 2, 4, 4, 5, 2]
    out = meta_eval(judge, human, kind="scale")
    from scipy.stats import spearmanr

    assert out["spearman"].value == pytest.approx(spearmanr(judge, human).statistic)
    assert out["accuracy"].value == pytest.approx(4 / 6)
    assert "f1_met" not in out
    with pytest.raises(ValueError, match="3 judge values for 2"):
        meta_eval([1, 0, 1], [1, 0])


# -- pairwise ------------------------------------------------------------------------------


def _first_shown(items: list[str], arms: list[str]) -> list[tuple[str, str, str, str]]:
    """A judge that always picks the answer it is shown first, run in both orders."""
    picks = []
    for item in items:
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                picks += [(item, a, b, a), (item, b, a, b)]
    return picks


def test_a_position_biased_judge_comes_out_as_all_ties() -> None:
    items = [f"q{i}" for i in range(6)]
    outcomes = combine_orders(_first_shown(items, ["base", "rag", "lora"]))
    assert len(outcomes) == 6 * 3 and {o[3] for o in outcomes} == {TIE}
    out = pairwise(outcomes)
    assert out["tie_rate"] == {"base|lora": 1.0, "base|rag": 1.0, "lora|rag": 1.0}
    assert out["win_rate"]["rag>base"].value == 0.5 and out["win_rate"]["base>rag"].value == 0.5
    assert all(abs(s) < 1e-6 for s in out["strength"].values())


def test_orders_that_agree_give_a_win_and_an_unparsed_order_gives_nothing() -> None:
    picks = [("q1", "a", "b", "a"), ("q1", "b", "a", "a"),  # a both times: a wins
             ("q2", "a", "b", "b"), ("q2", "b", "a", None),  # unparsed: left out
             ("q3", "a", "b", "a")]  # one order only: left out
    assert combine_orders(picks) == [("q1", "a", "b", "a")]
    with pytest.raises(ValueError, match="neither"):
        combine_orders([("q1", "a", "b", "c")])


def test_bradley_terry_ranks_the_arms_as_constructed() -> None:
    outcomes = []
    # lora_rag beats rag on 7 of 8 items, rag beats base on 7 of 8, lora_rag beats base on all
    for i in range(8):
        outcomes.append((f"q{i}", "lora_rag", "rag", "lora_rag" if i else "rag"))
        outcomes.append((f"q{i}", "rag", "base", "rag" if i else "base"))
        outcomes.append((f"q{i}", "base", "lora_rag", "lora_rag" if i < 7 else TIE))
    out = pairwise(outcomes)
    assert out["ranking"] == ["lora_rag", "rag", "base"]
    s = out["strength"]
    assert s["lora_rag"] > s["rag"] > s["base"] and sum(s.values()) == pytest.approx(0)
    win = out["win_rate"]["rag>base"]
    assert win.value == pytest.approx(7 / 8) and win.n == 8 and win.lo < 7 / 8 <= win.hi
    assert out["win_rate"]["lora_rag>base"].value == pytest.approx(7.5 / 8)  # the tie is half
    assert out["n"] == {"base|lora_rag": 8, "base|rag": 8, "lora_rag|rag": 8}
