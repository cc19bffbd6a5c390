"""Score a task's model outputs: parse them by answer type, run the task's metrics, and keep
per-example scores on each `Prediction` (paired tests between arms need them).

Metric keys: generated answers give the scorer's keys (`accuracy`, `macro_f1`, `rouge1`,
`code_f1`, ...); log-likelihood multiple choice adds `<key>_ll` (argmax of summed
log-probabilities) and `<key>_ll_norm` (argmax per character, lm-eval's `acc_norm`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from biorag.models.base import LoglikelihoodResult
from biorag.scoring.metrics import (
    LETTERS,
    N_RESAMPLES,
    MetricResult,
    compute_metrics,
    mcq_argmax,
    mean_result,
    metric_info,
    parse_output,
)
from biorag.tasks.config import TaskConfig
from biorag.types import Example, Prediction

# metrics that compare one chosen option with gold, so they apply to log-likelihood choices
OPTION_METRICS = ("accuracy", "macro_f1", "exact_match")
# how generation went, not how good the answers are: outputs with no (or an ambiguous)
# answer, and outputs that ran into max_new_tokens before giving one (the runner's)
UNPARSED = "unparsed_rate"
TRUNCATED = "truncated_outputs"
PARSE_KEYS = (UNPARSED, TRUNCATED)


def majority_output(cfg: TaskConfig, outputs: Sequence[str], options: Sequence[str]) -> str:
    """Self-consistency: the first of the sampled outputs whose answer is the most common
    one (ties: the answer sampled first); outputs with no answer do not vote, and when none
    has one the first output stands (and counts as unparsed)."""
    parsed = [parse_output(cfg.answer_type, o, options, cfg.answer_format) for o in outputs]
    votes = Counter(repr(p) for p in parsed if not unparsed(p))
    if not votes:
        return outputs[0]
    winner = votes.most_common(1)[0][0]
    return next(o for o, p in zip(outputs, parsed, strict=True) if repr(p) == winner)


def decoding(cfg: TaskConfig, seed: int) -> str:
    """How a cell's outputs were decoded, for its `decoding` tag."""
    if cfg.temperature == 0:
        return "greedy (temperature 0)"
    return (f"sampled at temperature {cfg.temperature}, {cfg.samples} sample(s) with seeds "
            f"{seed}..{seed + cfg.samples - 1}" + (", majority vote" if cfg.samples > 1 else ""))


def double_count_first(result: MetricResult, seed: int, n_resamples: int) -> MetricResult:
    """CLUE's mean with its first item counted twice (`update_results` starts each list with
    the first value and then appends it again), kept under `clue_compat` to match CLUE's
    published MedNLI and MeDiSumCode numbers. Corpus-level metrics are left as they are; the
    per-example values stay one per item."""
    if metric_info(result.name).corpus_level or not result.per_example:
        return result
    again = mean_result(result.name, (result.per_example[0], *result.per_example), seed, n_resamples)
    return MetricResult(result.name, again.value, again.lo, again.hi, result.n, result.per_example)


def unparsed(parsed: object) -> bool:
    """No answer could be read: none, or an empty one (no codes, no names)."""
    return parsed is None or parsed == "" or parsed == ()


@dataclass
class TaskScores:
    """Aggregates with 95% intervals, metrics that were skipped (and why), predictions."""

    metrics: dict[str, MetricResult]
    skipped: dict[str, str]
    predictions: list[Prediction] = field(default_factory=list)


def _choice(cfg: TaskConfig, example: Example, index: int) -> str:
    return LETTERS[index] if cfg.answer_type == "letter" else example.options[index]


def score_task(
    cfg: TaskConfig,
    examples: Sequence[Example],
    outputs: Sequence[str] | None = None,
    loglikelihoods: Sequence[Sequence[LoglikelihoodResult]] | None = None,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> TaskScores:
    """Score generated `outputs` and/or per-option `loglikelihoods` (one list per example,
    in option order). The runner fills `retrieved` and `prompt_hash` on the predictions."""
    if outputs is None and loglikelihoods is None:
        raise ValueError("nothing to score: give outputs, loglikelihoods or both")
    for name, got in (("outputs", outputs), ("loglikelihoods", loglikelihoods)):
        if got is not None and len(got) != len(examples):
            raise ValueError(f"{len(got)} {name} for {len(examples)} examples")
    gold = [ex.gold for ex in examples]
    metrics: dict[str, MetricResult] = {}
    skipped: dict[str, str] = {}
    preds = [Prediction(example_id=ex.id, output="", parsed=None, gold=ex.gold) for ex in examples]

    if outputs is not None:
        parsed = [
            parse_output(cfg.answer_type, out, ex.options, cfg.answer_format)
            for ex, out in zip(examples, outputs, strict=True)
        ]
        m, skipped = compute_metrics(cfg.metrics, parsed, gold, seed=seed, n_resamples=n_resamples,
                                     outputs=outputs)
        if cfg.clue_compat and cfg.double_count_first:
            m = {k: double_count_first(r, seed, n_resamples) for k, r in m.items()}
        metrics.update(m)
        if cfg.answer_type != "text":  # free text always parses
            metrics[UNPARSED] = mean_result(UNPARSED, [float(unparsed(p)) for p in parsed], seed, n_resamples)
        for p, out, par in zip(preds, outputs, parsed, strict=True):
            p.output, p.parsed = out, par

    if loglikelihoods is not None:
        plain, norm = [], []
        for ex, results in zip(examples, loglikelihoods, strict=True):
            if len(results) != len(ex.options):
                raise ValueError(
                    f"example {ex.id}: {len(results)} scores for {len(ex.options)} options"
                )
            i, j = mcq_argmax([r.logprob for r in results], [r.n_chars for r in results])
            plain.append(_choice(cfg, ex, i))
            norm.append(_choice(cfg, ex, j))
        names = [m for m in cfg.metrics if m in OPTION_METRICS]
        for suffix, choices in (("_ll", plain), ("_ll_norm", norm)):
            m, _ = compute_metrics(names, choices, gold, seed=seed, n_resamples=n_resamples)
            metrics.update(
                {
                    k + suffix: MetricResult(
                        r.name + suffix, r.value, r.lo, r.hi, r.n, r.per_example
                    )
                    for k, r in m.items()
                }
            )
        for p, results, choice in zip(preds, loglikelihoods, plain, strict=True):
            p.option_logprobs = tuple(r.logprob for r in results)
            if outputs is None:
                p.parsed = choice

    for i, p in enumerate(preds):
        p.scores = {k: r.per_example[i] for k, r in metrics.items()}
    return TaskScores(metrics, skipped, preds)
