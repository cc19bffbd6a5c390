"""How far judges can be trusted: agreement within a jury, agreement with human labels, and
the pairwise arena between arms. Pure functions over plain data (no model, no MLflow).

A verdict value is 1.0 (met) / 0.0 (not met) for binary judgements and 1..5 for scales;
NaN is an unparsed verdict. NaN is always *missing*: counted, left out of every statistic,
never scored as met (nor as not met).

- `jury_agreement`: Krippendorff's alpha over all judges (the `krippendorff` package),
  Cohen's kappa for each pair on the units both rated, and each judge's bias (its mean
  difference from the other judges on the same units).
- `meta_eval`: one judge against human labels: accuracy, kappa and F1 of "met" (binary),
  Spearman's rho (scale), each with a paired bootstrap interval over the labelled units.
- `combine_orders` and `pairwise`: a judge shown two arms' answers in both orders; the arm it
  picks both times wins, a disagreement between the orders (position bias) is a tie; win
  rates with intervals and a Bradley–Terry ranking of all arms (`choix`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from biorag.scoring.metrics import N_RESAMPLES, MetricResult

log = logging.getLogger(__name__)

LEVELS = ("nominal", "interval")
KINDS = ("binary", "scale")
TIE = "tie"
CONFIDENCE = 0.95
# Bradley–Terry: choix's regularisation (a prior pseudo-comparison between every pair of
# arms), so an arm that won or lost every comparison still gets a finite strength
BT_ALPHA = 0.01

Outcome = tuple[str, str, str, str]  # (item, arm_a, arm_b, winner: arm_a | arm_b | "tie")


# -- intervals -----------------------------------------------------------------------------


def paired_interval(
    statistic: Callable[..., float],
    *columns: Sequence[float],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """A percentile bootstrap interval of `statistic(*columns)`, resampling the units (rows)
    together (scipy.stats.bootstrap, paired). Resamples where the statistic is undefined (a
    kappa of one class only) are left out rather than making the interval NaN; fewer than two
    units give (nan, nan)."""
    from scipy.stats import bootstrap

    arrays = [np.asarray(c, dtype=float) for c in columns]
    if len(arrays[0]) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # undefined resamples warn; they are dropped below
        warnings.simplefilter("ignore")
        res = bootstrap(tuple(arrays), statistic, paired=True, vectorized=False,
                        n_resamples=n_resamples, method="percentile",
                        confidence_level=confidence, rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(dist, [tail, 100 - tail])
    return float(lo), float(hi)


def _result(name: str, value: float, statistic: Callable[..., float], *columns: Sequence[float],
            seed: int, per_example: Iterable[float] = ()) -> MetricResult:
    lo, hi = paired_interval(statistic, *columns, seed=seed)
    return MetricResult(name, float(value), lo, hi, len(columns[0]), tuple(float(v) for v in per_example))


# -- statistics (each defined on float arrays so the bootstrap can call it) -----------------


def _kappa(a: Any, b: Any, weights: str | None = None) -> float:
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    if len(a) == 0:
        return math.nan
    if len(set(a.tolist()) | set(b.tolist())) < 2:
        return math.nan  # one class only: chance agreement is 1 and kappa is undefined
    return float(cohen_kappa_score(a.astype(int), b.astype(int), weights=weights))


def _f1_met(judge: Any, human: Any) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(human).astype(int), np.asarray(judge).astype(int),
                          pos_label=1, zero_division=0.0))


def _accuracy(judge: Any, human: Any) -> float:
    return float(np.mean(np.asarray(judge) == np.asarray(human)))


def _spearman(judge: Any, human: Any) -> float:
    from scipy.stats import spearmanr

    judge, human = np.asarray(judge), np.asarray(human)
    if len(judge) < 2 or np.all(judge == judge[0]) or np.all(human == human[0]):
        return math.nan  # a constant side has no ranks to correlate
    return float(spearmanr(judge, human).statistic)


def _met(values: np.ndarray) -> np.ndarray:
    """Binary verdicts as 0/1: a jury's mean of 0.5 or more is met."""
    return (values >= 0.5).astype(float)


# -- juries --------------------------------------------------------------------------------


def jury_agreement(
    table: Mapping[str, Mapping[str, float]], level: str = "nominal"
) -> dict[str, Any]:
    """Agreement of several judges on the same units (unit: an item's criterion, an item's
    axis, a claim). `table[judge][unit] = value`; a NaN or absent value is missing.

    Returns {"alpha": Krippendorff's alpha (NaN when undefined: fewer than two judges, or
    every value the same), "kappa": {"a|b": Cohen's kappa on the units both rated (scales
    rounded and quadratic-weighted)}, "bias": {judge: mean of (its value - the mean of the
    other judges) over units it shares with them}, "n_units": units rated by two judges or
    more, "missing": {judge: units it left unrated}}.
    """
    import krippendorff

    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    judges = sorted(table)
    units = sorted({u for ratings in table.values() for u in ratings})
    data = np.array([[_value(table[j].get(u)) for u in units] for j in judges], dtype=float)
    rated = np.isfinite(data)
    shared = rated.sum(axis=0) >= 2
    out: dict[str, Any] = {
        "alpha": math.nan,
        "kappa": {},
        "bias": {},
        "n_units": int(shared.sum()),
        "missing": {j: int((~rated[i]).sum()) for i, j in enumerate(judges)},
    }
    values = data[rated]
    if len(judges) >= 2 and shared.any() and len(np.unique(values)) >= 2:
        out["alpha"] = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    elif len(judges) >= 2:
        log.info("jury agreement: alpha undefined (%d shared units, %d distinct values)",
                 int(shared.sum()), len(np.unique(values)))
    weights = "quadratic" if level == "interval" else None
    for (i, a), (k, b) in combinations(enumerate(judges), 2):
        both = rated[i] & rated[k]
        x, y = data[i, both], data[k, both]
        if level == "interval":
            x, y = np.rint(x), np.rint(y)
        out["kappa"][f"{a}|{b}"] = _kappa(x, y, weights)
    for i, j in enumerate(judges):
        others = np.delete(data, i, axis=0)
        has_others = np.isfinite(others).any(axis=0) & rated[i]
        if len(judges) < 2 or not has_others.any():
            out["bias"][j] = math.nan
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_others = np.nanmean(others[:, has_others], axis=0)
        out["bias"][j] = float(np.mean(data[i, has_others] - mean_others))
    return out


def _value(v: Any) -> float:
    return math.nan if v is None else float(v)


# -- meta-evaluation -----------------------------------------------------------------------


def meta_eval(
    judge_values: Sequence[float],
    human_values: Sequence[float],
    kind: str = "binary",
    seed: int = 0,
) -> dict[str, Any]:
    """A judge's agreement with human labels on the same units (same order).

    A NaN judge value is an unparsed verdict: counted in `n_missing` and left out of every
    statistic (never scored as met). Binary values are met when 0.5 or more (a jury's mean).
    Returns MetricResults (value with a 95% paired bootstrap interval over the units):
    binary: accuracy, kappa, f1_met (F1 of "met", the humans' verdict as the truth);
    scale: accuracy (exact, after rounding), kappa (quadratic-weighted on rounded scores),
    spearman. Plus n (units scored) and n_missing (unparsed judge verdicts).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    judge = np.asarray(judge_values, dtype=float)
    human = np.asarray(human_values, dtype=float)
    if judge.shape != human.shape or judge.ndim != 1:
        raise ValueError(f"{judge.size} judge values for {human.size} human values")
    if not np.isfinite(human).all():
        raise ValueError("a human value is missing (NaN); human labels must all be given")
    parsed = np.isfinite(judge)
    n_missing = int((~parsed).sum())
    j, h = judge[parsed], human[parsed]
    out: dict[str, Any] = {"n": int(parsed.sum()), "n_missing": n_missing}
    if not parsed.any():
        log.warning("meta-evaluation: every one of %d judge verdicts is missing", n_missing)
        return out
    if kind == "binary":
        j, h = _met(j), _met(h)
        out["accuracy"] = _result("accuracy", _accuracy(j, h), _accuracy, j, h, seed=seed,
                                  per_example=(j == h).astype(float))
        out["kappa"] = _result("kappa", _kappa(j, h), _kappa, j, h, seed=seed)
        out["f1_met"] = _result("f1_met", _f1_met(j, h), _f1_met, j, h, seed=seed)
    else:
        jr, hr = np.rint(j), np.rint(h)

        def qwk(a: Any, b: Any) -> float:
            return _kappa(a, b, "quadratic")

        out["accuracy"] = _result("accuracy", _accuracy(jr, hr), _accuracy, jr, hr, seed=seed,
                                  per_example=(jr == hr).astype(float))
        out["kappa"] = _result("kappa", qwk(jr, hr), qwk, jr, hr, seed=seed)
        out["spearman"] = _result("spearman", _spearman(j, h), _spearman, j, h, seed=seed)
    return out


# -- pairwise arena ------------------------------------------------------------------------


def combine_orders(picks: Iterable[tuple[str, str, str, str | None]]) -> list[Outcome]:
    """One outcome per (item, pair of arms) from a judge's picks in both orders.

    `picks`: (item, shown_first, shown_second, picked), picked an arm's name, or None / ""
    when the verdict was unparsed. The arm picked in both orders wins; orders that disagree
    (a judge that favours a position) make a tie. A pair seen in one order only, or with an
    unparsed pick, has no outcome and is logged.
    """
    seen: dict[tuple[str, str, str], dict[tuple[str, str], str | None]] = defaultdict(dict)
    for item, first, second, picked in picks:
        if picked and picked not in (first, second):
            raise ValueError(f"item {item}: picked {picked!r}, which is neither {first!r} nor {second!r}")
        a, b = sorted((first, second))
        seen[(item, a, b)][(first, second)] = picked or None
    out: list[Outcome] = []
    dropped = 0
    for (item, a, b), orders in seen.items():
        ab, ba = orders.get((a, b)), orders.get((b, a))
        if ab is None or ba is None:
            dropped += 1
            continue
        out.append((item, a, b, ab if ab == ba else TIE))
    if dropped:
        log.warning("pairwise: %d item pair(s) without a parsed verdict in both orders left out", dropped)
    return out


def pairwise(
    outcomes: Iterable[Outcome], seed: int = 0
) -> dict[str, Any]:
    """Win rates between arms and a Bradley–Terry ranking of all of them.

    `outcomes`: (item, arm_a, arm_b, winner) with winner arm_a, arm_b or "tie" (see
    `combine_orders`). A tie is half a win each way. Returns {"win_rate": {"a>b": MetricResult
    (share of items a won, ties halved; 95% bootstrap interval over items)}, "tie_rate":
    {"a|b": share of ties}, "strength": {arm: Bradley–Terry log-strength, mean 0},
    "ranking": arms best first, "n": {"a|b": items compared}}.
    """
    import choix

    per_pair: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for item, a, b, winner in outcomes:
        if winner not in (a, b, TIE):
            raise ValueError(f"item {item}: winner {winner!r} is neither {a!r}, {b!r} nor 'tie'")
        if a == b:
            raise ValueError(f"item {item}: an arm compared with itself ({a!r})")
        x, y = sorted((a, b))
        per_pair[(x, y)][item] = 0.5 if winner == TIE else float(winner == x)
    arms = sorted({arm for pair in per_pair for arm in pair})
    out: dict[str, Any] = {"win_rate": {}, "tie_rate": {}, "strength": {}, "ranking": [], "n": {}}
    if not arms:
        return out
    index = {arm: i for i, arm in enumerate(arms)}
    comparisons: list[tuple[int, int]] = []
    for (x, y), by_item in sorted(per_pair.items()):
        scores = np.array([by_item[i] for i in sorted(by_item)])
        for first, second, s in ((x, y, scores), (y, x, 1 - scores)):
            out["win_rate"][f"{first}>{second}"] = _result(
                f"{first}>{second}", float(s.mean()), np.mean, s, seed=seed, per_example=s)
        out["tie_rate"][f"{x}|{y}"] = float(np.mean(scores == 0.5))
        out["n"][f"{x}|{y}"] = len(scores)
        # a win is two comparisons won, a tie one each way: ties count half a win
        for s in scores.tolist():
            won = round(2 * s)
            comparisons += [(index[x], index[y])] * won + [(index[y], index[x])] * (2 - won)
    params = choix.ilsr_pairwise(len(arms), comparisons, alpha=BT_ALPHA)
    params = params - params.mean()
    out["strength"] = {arm: float(params[index[arm]]) for arm in arms}
    out["ranking"] = sorted(arms, key=lambda arm: (-out["strength"][arm], arm))
    return out
