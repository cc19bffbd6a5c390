"""Paired tests between two arms scored on the same examples.

Accuracy-like scores (every per-example value 0 or 1) get McNemar's test: exact (a two-sided
binomial test on the discordant pairs) when there are fewer than `EXACT_BELOW` of them, else
the chi-square form with continuity correction. Continuous scores get a paired bootstrap.
Either way the difference of means gets a paired-bootstrap 95% interval, resampled the way
`biorag.scoring.metrics.aggregate` resamples, so the interval of a difference is that of the
per-example differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biorag.scoring.metrics import N_RESAMPLES, aggregate

EXACT_BELOW = 25  # discordant pairs under which McNemar's test is exact (binomial)
SIGN_FLIP_EXACT = 16  # non-zero contrasts up to which the sign-flip test enumerates every assignment
SIGN_FLIPS = 10_000  # random sign assignments above that


@dataclass(frozen=True)
class PairedTest:
    """The difference `treatment - reference` on paired examples, with its test."""

    delta: float  # mean difference of the per-example scores
    lo: float  # 95% paired-bootstrap interval of `delta`
    hi: float
    p: float  # two-sided
    test: str  # "mcnemar-exact" | "mcnemar-chi2" | "paired-bootstrap"
    statistic: float  # McNemar: min(b, c) (exact) or chi-square; bootstrap: the delta
    n: int  # paired examples
    b: int = 0  # McNemar: reference right, treatment wrong
    c: int = 0  # McNemar: reference wrong, treatment right


def is_binary(*scores: Sequence[float]) -> bool:
    """Every value 0 or 1 (accuracy-like), in all the given score lists."""
    return all(set(np.unique(np.asarray(s, dtype=float))) <= {0.0, 1.0} for s in scores)


def mcnemar(reference: Sequence[float], treatment: Sequence[float]) -> tuple[float, float, int, int, str]:
    """McNemar's test on paired 0/1 outcomes: (statistic, p, b, c, method).

    b counts pairs the reference got right and the treatment wrong, c the reverse. With
    b + c < EXACT_BELOW the p-value is the exact two-sided binomial one (statistic min(b, c));
    otherwise chi-square with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c).
    """
    from scipy import stats

    r, t = _paired(reference, treatment)
    if not is_binary(r, t):
        raise ValueError("McNemar's test needs 0/1 scores; use paired_bootstrap for continuous ones")
    b = int(np.sum((r == 1) & (t == 0)))
    c = int(np.sum((r == 0) & (t == 1)))
    if b + c == 0:
        return 0.0, 1.0, b, c, "mcnemar-exact"
    if b + c < EXACT_BELOW:
        p = stats.binomtest(min(b, c), b + c, 0.5).pvalue
        return float(min(b, c)), float(min(p, 1.0)), b, c, "mcnemar-exact"
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return float(chi2), float(stats.chi2.sf(chi2, df=1)), b, c, "mcnemar-chi2"


def paired_bootstrap(
    reference: Sequence[float],
    treatment: Sequence[float],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float, float, float]:
    """Paired bootstrap of the mean difference: (delta, lo, hi, p).

    Examples are resampled with their pairs kept together. The p-value is two-sided, from the
    bootstrap distribution shifted to the null of no difference:
    (1 + #{|delta* - delta| >= |delta|}) / (n_resamples + 1).
    """
    r, t = _paired(reference, treatment)
    diff = t - r
    delta, lo, hi = aggregate(diff, seed=seed, n_resamples=n_resamples)
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n_resamples, diff.size))
    means = diff[idx].mean(axis=1)
    extreme = int(np.sum(np.abs(means - delta) >= abs(delta) - 1e-12))
    return delta, lo, hi, (1 + min(extreme, n_resamples)) / (n_resamples + 1)


def paired_test(
    reference: Sequence[float], treatment: Sequence[float], seed: int = 0, n_resamples: int = N_RESAMPLES
) -> PairedTest:
    """McNemar for 0/1 scores, paired bootstrap otherwise; a bootstrap interval for both."""
    r, t = _paired(reference, treatment)
    delta, lo, hi, p_boot = paired_bootstrap(r, t, seed, n_resamples)
    if is_binary(r, t):
        stat, p, b, c, method = mcnemar(r, t)
        return PairedTest(delta, lo, hi, p, method, stat, r.size, b, c)
    return PairedTest(delta, lo, hi, p_boot, "paired-bootstrap", delta, r.size)


def sign_flip(contrasts: Sequence[float], seed: int = 0, n_resamples: int = SIGN_FLIPS) -> float:
    """Two-sided paired permutation test that per-item contrasts have mean zero: under the
    null each contrast's sign is as likely flipped. p is the share of sign assignments whose
    |sum| is at least the observed |sum| (the observed one counted): over all 2^m assignments
    of the m non-zero contrasts when m <= SIGN_FLIP_EXACT, else over `n_resamples` seeded
    random ones, (1 + #{|sum*| >= |sum|}) / (n_resamples + 1)."""
    x = np.asarray(contrasts, dtype=float)
    nz = x[x != 0]
    if nz.size == 0:
        return 1.0
    observed = abs(nz.sum()) - 1e-12
    if nz.size <= SIGN_FLIP_EXACT:
        bits = (np.arange(2 ** nz.size)[:, None] >> np.arange(nz.size)) & 1
        sums = (1 - 2 * bits) @ nz
        return float(np.mean(np.abs(sums) >= observed))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_resamples, nz.size))
    extreme = int(np.sum(np.abs(signs @ nz) >= observed))
    return (1 + extreme) / (n_resamples + 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (statsmodels' multipletests), in the given order;
    NaN stays NaN and is not counted as a test."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    out = [math.nan] * len(pvalues)
    if idx:
        adjusted = multipletests([pvalues[i] for i in idx], method="holm")[1]
        for i, p in zip(idx, adjusted, strict=True):
            out[i] = float(p)
    return out


def _paired(reference: Sequence[float], treatment: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=float)
    t = np.asarray(treatment, dtype=float)
    if r.shape != t.shape:
        raise ValueError(f"paired scores differ in length: {r.size} and {t.size}")
    if r.size == 0:
        raise ValueError("no paired examples")
    return r, t
