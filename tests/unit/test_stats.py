"""Paired tests on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biorag.scoring.metrics import aggregate
from biorag.scoring.stats import holm, is_binary, mcnemar, paired_bootstrap, paired_test


def _pairs(b: int, c: int, both_right: int = 0, both_wrong: int = 0) -> tuple[list[float], list[float]]:
    """Reference and treatment 0/1 scores with b (ref right, treatment wrong) and c (reverse)."""
    ref = [1.0] * b + [0.0] * c + [1.0] * both_right + [0.0] * both_wrong
    tre = [0.0] * b + [1.0] * c + [1.0] * both_right + [0.0] * both_wrong
    return ref, tre


def test_mcnemar_exact_matches_the_binomial_by_hand() -> None:
    # b=1, c=9: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * (1 + 10) / 2**10
    stat, p, b, c, method = mcnemar(*_pairs(1, 9, both_right=5, both_wrong=5))
    assert (b, c, method, stat) == (1, 9, "mcnemar-exact", 1.0)
    assert p == pytest.approx(22 / 1024, abs=1e-12)
    # symmetric discordance: nothing to see
    assert mcnemar(*_pairs(4, 4))[1] == pytest.approx(1.0)
    # no discordant pairs at all
    assert mcnemar(*_pairs(0, 0, both_right=3))[:2] == (0.0, 1.0)


def test_mcnemar_chi2_with_continuity_correction_for_many_discordant_pairs() -> None:
    # b=10, c=30: chi2 = (|10 - 30| - 1)^2 / 40 = 9.025; p = erfc(sqrt(chi2 / 2)) for 1 df
    stat, p, b, c, method = mcnemar(*_pairs(10, 30, both_right=20))
    assert method == "mcnemar-chi2" and (b, c) == (10, 30)
    assert stat == pytest.approx(9.025)
    assert p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)
    assert p == pytest.approx(0.002663, abs=1e-6)


def test_mcnemar_rejects_continuous_scores() -> None:
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0.5, 1.0], [0.0, 1.0])


def test_paired_bootstrap_constant_shift_and_no_difference() -> None:
    ref = np.linspace(0.1, 0.6, 20)
    delta, lo, hi, p = paired_bootstrap(ref, ref + 0.25, seed=0, n_resamples=1000)
    assert delta == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    assert p == pytest.approx(1 / 1001)  # the smallest p 1000 resamples can give
    delta, lo, hi, p = paired_bootstrap(ref, ref, seed=0)
    assert (delta, lo, hi, p) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_interval_is_that_of_the_differences() -> None:
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, 50)
    tre = ref + rng.normal(0.05, 0.2, 50)
    delta, lo, hi, p = paired_bootstrap(ref, tre, seed=3)
    assert (delta, lo, hi) == aggregate(tre - ref, seed=3)
    assert lo < delta < hi and 0 < p <= 1
    # opposite direction: same p, mirrored interval
    d2, lo2, hi2, p2 = paired_bootstrap(tre, ref, seed=3)
    assert d2 == pytest.approx(-delta) and p2 == pytest.approx(p)
    assert (lo2, hi2) == pytest.approx((-hi, -lo))


def test_paired_test_picks_the_test_by_score_type() -> None:
    t = paired_test(*_pairs(1, 9, both_right=5, both_wrong=5))
    assert t.test == "mcnemar-exact" and t.p == pytest.approx(22 / 1024)
    assert t.delta == pytest.approx(8 / 20) and t.lo <= t.delta <= t.hi and t.n == 20
    t = paired_test([0.2, 0.4, 0.6], [0.3, 0.5, 0.7])
    assert t.test == "paired-bootstrap" and t.delta == pytest.approx(0.1)
    assert is_binary([0, 1, 1.0]) and not is_binary([0, 0.5])
    with pytest.raises(ValueError, match="length"):
        paired_test([1, 0], [1])


def test_holm_adjusts_in_order_and_keeps_nan() -> None:
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm([0.04, 0.01, math.nan, 0.02]) == pytest.approx([0.04, 0.03, math.nan, 0.04], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]
