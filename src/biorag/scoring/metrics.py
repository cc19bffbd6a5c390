"""Answer extraction and metrics, as pure functions, with seeded bootstrap confidence intervals.

Every metric takes the parsed predictions and the gold answers (same order) and returns
`{key: MetricResult}`; a result keeps its per-example values, because paired tests between
arms need them. Corpus-level metrics (macro-F1, micro code-F1) resample examples and
recompute the metric for their intervals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from biorag.errors import BioragError
from biorag.tasks.extraction import (  # re-exported: scoring is where callers look for them
    LETTERS,
    Parsed,
    extract_codes,
    extract_label,
    extract_letter,
    normalise_code,
    normalise_text,
    parse_output,
    strip_punct,
)

__all__ = [
    "LETTERS",
    "N_RESAMPLES",
    "MetricInfo",
    "MetricResult",
    "MetricUnavailable",
    "Parsed",
    "accuracy",
    "aggregate",
    "bertscore",
    "bootstrap_ci",
    "code_f1",
    "code_f1_category",
    "compute_metrics",
    "exact_match",
    "extract_codes",
    "extract_label",
    "extract_letter",
    "macro_f1",
    "mcq_argmax",
    "metric_info",
    "normalise_code",
    "normalise_text",
    "parse_output",
    "rouge",
]

log = logging.getLogger(__name__)

N_RESAMPLES = 1000


class MetricUnavailable(BioragError):
    """A metric whose optional package is not installed; the reason says what to install."""


@dataclass(frozen=True)
class MetricResult:
    """An aggregate with its 95% bootstrap interval and the per-example values behind it."""

    name: str
    value: float
    lo: float
    hi: float
    n: int
    per_example: tuple[float, ...]  # for corpus-level metrics: each example's own score


@dataclass(frozen=True)
class MetricInfo:
    """What a report needs to know of a metric, kept on its registered scorer (as
    lm-evaluation-harness keeps `aggregation` and `higher_is_better` on its metrics)."""

    keys: tuple[str, ...]  # the keys the scorer returns
    corpus_level: bool = False  # computed over the corpus (micro/macro), not a mean of examples
    headline: int | None = None  # rank for heading a task's table (lower first); None: never
    raw: bool = False  # scores the raw outputs, not the parsed answers (CLUE's own rules)
    judged: bool = False  # given by the judging stage (biorag.judges), not computed from answers


# log-likelihood variants of an option metric (`biorag.scoring.evaluate`), in headline order:
# lm-evaluation-harness' acc_norm first, then acc, then the generated answer
LL_SUFFIXES = ("_ll_norm", "_ll", "")


def scorer(*keys: str, corpus_level: bool = False, headline: int | None = None, raw: bool = False,
           judged: bool = False) -> Callable:
    """Mark a metric function with its `MetricInfo`."""

    def mark(fn: Callable) -> Callable:
        fn.info = MetricInfo(tuple(keys), corpus_level, headline, raw, judged)  # type: ignore[attr-defined]
        return fn

    return mark


def metric_info(key: str) -> MetricInfo:
    """The `MetricInfo` of a logged metric key (`accuracy_ll_norm` is `accuracy`'s), from the
    registered scorers; a key no scorer returns gets the defaults (a mean, never headline)."""
    from biorag import registry

    base = _base_key(key)
    for name in registry.names("scorer"):
        info = getattr(registry.resolve("scorer", name), "info", None)
        if info is not None and base in info.keys:
            return info
    return MetricInfo((key,))


def _base_key(key: str) -> str:
    for suffix in LL_SUFFIXES[:2]:
        if key.endswith(suffix):
            return key.removesuffix(suffix)
    return key


def headline_rank(key: str) -> tuple[int, int, int] | None:
    """Sort key of a metric for heading a table, or None when it never heads one."""
    info = metric_info(key)
    if info.headline is None:
        return None
    base = _base_key(key)
    suffix = LL_SUFFIXES.index(key[len(base):])
    return info.headline, suffix, info.keys.index(base)


def mcq_argmax(logprobs: Sequence[float], n_chars: Sequence[int]) -> tuple[int, int]:
    """Indices of the best option by summed log-probability and by log-probability per
    character of the continuation (lm-evaluation-harness `acc` and `acc_norm`)."""
    lp = np.asarray(logprobs, dtype=float)
    chars = np.maximum(np.asarray(n_chars, dtype=float), 1.0)
    return int(np.argmax(lp)), int(np.argmax(lp / chars))


# -- bootstrap -----------------------------------------------------------------------------


def _resample_indices(n: int, seed: int, n_resamples: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def aggregate(
    per_example: Sequence[float],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean with a percentile bootstrap interval: (mean, lo, hi)."""
    x = np.asarray(per_example, dtype=float)
    if x.size == 0:
        raise ValueError("no examples to aggregate")
    means = x[_resample_indices(x.size, seed, n_resamples)].mean(axis=1)
    return (float(x.mean()), *_interval(means, confidence))


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Interval of a corpus-level statistic of resampled example indices."""
    if n == 0:
        raise ValueError("no examples to aggregate")
    stats = np.array([statistic(idx) for idx in _resample_indices(n, seed, n_resamples)])
    return _interval(stats, confidence)


def mean_result(name: str, values: Sequence[float], seed: int, n_resamples: int) -> MetricResult:
    mean, lo, hi = aggregate(values, seed, n_resamples)
    return MetricResult(name, mean, lo, hi, len(values), tuple(float(v) for v in values))


def _check(parsed: Sequence[Parsed], gold: Sequence) -> None:
    if len(parsed) != len(gold):
        raise ValueError(f"{len(parsed)} predictions for {len(gold)} gold answers")
    if not gold:
        raise ValueError("no examples to score")


# -- metrics (registered as scorers) -------------------------------------------------------


def _same(p: Parsed, g: str | tuple[str, ...]) -> bool:
    if p is None:
        return False
    if isinstance(g, tuple) or isinstance(p, tuple):
        as_set = lambda x: {normalise_code(c) for c in (x if isinstance(x, tuple) else (x,))}  # noqa: E731
        return as_set(p) == as_set(g)
    return normalise_text(p) == normalise_text(g)


@scorer("accuracy", headline=0)
def accuracy(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Share of examples whose parsed answer is the gold one; no answer counts as wrong."""
    _check(parsed, gold)
    return {
        "accuracy": mean_result(
            "accuracy",
            [float(_same(p, g)) for p, g in zip(parsed, gold, strict=True)],
            seed,
            n_resamples,
        )
    }


@scorer("exact_match")
def exact_match(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Equality after normalisation (case, whitespace, punctuation; code sets for codes)."""
    _check(parsed, gold)
    values = []
    for p, g in zip(parsed, gold, strict=True):
        if isinstance(p, str) and isinstance(g, str):
            values.append(float(strip_punct(normalise_text(p)) == strip_punct(normalise_text(g))))
        else:
            values.append(float(_same(p, g)))
    return {"exact_match": mean_result("exact_match", values, seed, n_resamples)}


def _macro_f1_of(yt: np.ndarray, yp: np.ndarray, n_labels: int) -> float:
    """Macro-F1 over the labels present in gold or predictions (as scikit-learn does)."""
    f1s = []
    for lab in range(n_labels):
        tp = np.sum((yt == lab) & (yp == lab))
        fp = np.sum((yt != lab) & (yp == lab))
        fn = np.sum((yt == lab) & (yp != lab))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


@scorer("macro_f1", corpus_level=True, headline=1)
def macro_f1(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Unweighted mean of per-label F1; the interval resamples examples and recomputes it.
    Per-example values are correctness (1/0): macro-F1 has no per-example form."""
    _check(parsed, gold)
    labels = sorted({str(g) for g in gold} | {str(p) for p in parsed if p is not None})
    index = {lab: i for i, lab in enumerate(labels)}
    yt = np.array([index[str(g)] for g in gold])
    yp = np.array([index[str(p)] if p is not None else -1 for p in parsed])
    value = _macro_f1_of(yt, yp, len(labels))
    lo, hi = bootstrap_ci(
        len(yt), lambda idx: _macro_f1_of(yt[idx], yp[idx], len(labels)), seed, n_resamples
    )
    per = tuple(float(a == b) for a, b in zip(yt, yp, strict=True))
    return {"macro_f1": MetricResult("macro_f1", value, lo, hi, len(yt), per)}


@scorer("rouge1", "rouge2", "rougeL", headline=3)
def rouge(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """ROUGE-1/2/L F-measure (rouge-score, Porter stemming), mean over examples; with
    several references (BioASQ's ideal answers) the best-matching one counts."""
    from rouge_score import rouge_scorer

    _check(parsed, gold)
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    values: dict[str, list[float]] = {k: [] for k in keys}
    for p, g in zip(parsed, gold, strict=True):
        refs = [str(r) for r in g] if isinstance(g, tuple | list) else [str(g)]
        s = scorer.score_multi(refs, str(p or ""))
        for k in keys:
            values[k].append(float(s[k].fmeasure))
    return {k: mean_result(k, v, seed, n_resamples) for k, v in values.items()}


@scorer("bertscore")
def bertscore(
    parsed: Sequence[Parsed],
    gold: Sequence,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    model_type: str | None = None,
) -> dict[str, MetricResult]:
    """BERTScore F1 (the `bert_score` package's default English model unless given)."""
    try:
        import bert_score
    except ImportError:
        raise MetricUnavailable(
            "bertscore needs the optional `bert_score` package (pip install bert-score); "
            "it is not installed, so BERTScore is not reported"
        ) from None
    _check(parsed, gold)
    _, _, f1 = bert_score.score(
        [str(p or "") for p in parsed],
        [str(g) for g in gold],
        lang="en",
        model_type=model_type,
        verbose=False,
    )
    return {"bertscore": mean_result("bertscore", f1.tolist(), seed, n_resamples)}


def _codes(x: Parsed, category: bool) -> set[str]:
    items = x if isinstance(x, tuple) else () if x is None else (x,)
    codes = {normalise_code(c) for c in items if c and c.strip()}
    return {c[:3] for c in codes} if category else codes


def _code_scores(
    parsed: Sequence[Parsed], gold: Sequence, category: bool, seed: int, n_resamples: int
) -> dict[str, MetricResult]:
    _check(parsed, gold)
    suffix = "_category" if category else ""
    counts = []
    for p, g in zip(parsed, gold, strict=True):
        ps, gs = _codes(p, category), _codes(g, category)
        counts.append((len(ps & gs), len(ps - gs), len(gs - ps)))
    c = np.array(counts, dtype=float).reshape(-1, 3)

    def micro(idx: np.ndarray) -> tuple[float, float, float]:
        tp, fp, fn = c[idx].sum(axis=0)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        return prec, rec, (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)

    every = np.arange(len(c))
    per_f1 = [2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0 for tp, fp, fn in c]
    per_p = [tp / (tp + fp) if tp + fp else 0.0 for tp, fp, _ in c]
    per_r = [tp / (tp + fn) if tp + fn else 0.0 for tp, _, fn in c]
    out = {}
    for i, (key, per) in enumerate((("precision", per_p), ("recall", per_r), ("f1", per_f1))):
        name = f"code_{key}{suffix}"
        lo, hi = bootstrap_ci(len(c), lambda idx, i=i: micro(idx)[i], seed, n_resamples)
        out[name] = MetricResult(
            name, float(micro(every)[i]), lo, hi, len(c), tuple(float(v) for v in per)
        )
    return out


@scorer("code_f1", "code_precision", "code_recall", corpus_level=True, headline=2)  # F1 heads
def code_f1(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Micro precision/recall/F1 over codes (J45.909 = J45909); per-example values are
    each example's own precision/recall/F1."""
    return _code_scores(parsed, gold, False, seed, n_resamples)


@scorer("code_precision_category", "code_recall_category", "code_f1_category", corpus_level=True)
def code_f1_category(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """As `code_f1`, on 3-character categories (J45.909 and J45.20 are both J45)."""
    return _code_scores(parsed, gold, True, seed, n_resamples)


def compute_metrics(
    names: Sequence[str],
    parsed: Sequence[Parsed],
    gold: Sequence,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    outputs: Sequence[str] | None = None,
) -> tuple[dict[str, MetricResult], dict[str, str]]:
    """Run registered scorers by name: (results by key, {metric: reason} for the ones whose
    optional package is missing, which are also logged as warnings). Scorers marked `raw`
    read the `outputs` instead of the parsed answers (and are left out without them)."""
    from biorag import registry

    results: dict[str, MetricResult] = {}
    skipped: dict[str, str] = {}
    for name in names:
        fn = registry.resolve("scorer", name)
        if getattr(getattr(fn, "info", None), "judged", False):
            continue  # the judging stage's, after prediction
        raw = getattr(getattr(fn, "info", None), "raw", False)
        if raw and outputs is None:
            continue
        try:
            results.update(fn(outputs if raw else parsed, gold, seed=seed, n_resamples=n_resamples))
        except MetricUnavailable as e:
            log.warning("metric %s skipped: %s", name, e)
            skipped[name] = str(e)
    return results, skipped
