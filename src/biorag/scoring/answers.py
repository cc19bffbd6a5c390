"""Short-answer measures of BioASQ Task B (factoid and list questions), as its official
evaluation defines them, on answers parsed by `extraction.extract_answers`.

Gold is a tuple of entities, each a tuple of synonyms; an answer names an entity when it
equals one of its synonyms after normalisation (NFKC, case, punctuation, whitespace).
Every measure is a mean over questions, so each keeps its per-question values.
"""

from __future__ import annotations

from collections.abc import Sequence

from biorag.scoring.metrics import N_RESAMPLES, MetricResult, Parsed, _check, mean_result, scorer
from biorag.tasks.extraction import normalise_text, strip_punct

FACTOID_ANSWERS = 5  # BioASQ scores the first five answers of a factoid question
LIST_ANSWERS = 100  # and at most 100 entries of a list question


def _norm(name: str) -> str:
    return strip_punct(normalise_text(str(name)))


def _entities(gold) -> list[set[str]]:
    """Gold as sets of normalised synonyms; a bare string, or a flat tuple of strings, is
    one name per entity."""
    items = (gold,) if isinstance(gold, str) else tuple(gold or ())
    return [{_norm(n) for n in ((e,) if isinstance(e, str) else e)} - {""} for e in items]


def _answers(parsed: Parsed, limit: int) -> list[str]:
    items = () if parsed is None else (parsed,) if isinstance(parsed, str) else parsed
    return [a for a in (_norm(x) for x in items) if a][:limit]


@scorer("factoid_mrr", "factoid_strict_acc", "factoid_lenient_acc", headline=2)
def factoid(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Strict accuracy (the first answer is right), lenient accuracy (one of the first
    five is) and MRR (1 / rank of the first right one among five; 0 if none)."""
    _check(parsed, gold)
    rr = []
    for p, g in zip(parsed, gold, strict=True):
        names = set().union(*_entities(g))
        rank = next((i for i, a in enumerate(_answers(p, FACTOID_ANSWERS), 1) if a in names), 0)
        rr.append(1.0 / rank if rank else 0.0)
    return {
        "factoid_mrr": mean_result("factoid_mrr", rr, seed, n_resamples),
        "factoid_strict_acc": mean_result("factoid_strict_acc", [float(r == 1.0) for r in rr], seed, n_resamples),
        "factoid_lenient_acc": mean_result("factoid_lenient_acc", [float(r > 0) for r in rr], seed, n_resamples),
    }


def list_counts(answers: Sequence[str], entities: Sequence[set[str]]) -> tuple[int, int, int]:
    """(right answers, answers, gold entities): an entity counts once, so a second synonym
    of an entity already named is a wrong answer."""
    named: set[int] = set()
    right = 0
    for a in answers:
        hit = next((i for i, e in enumerate(entities) if a in e and i not in named), None)
        if hit is not None:
            named.add(hit)
            right += 1
    return right, len(answers), len(entities)


@scorer("list_f1", "list_precision", "list_recall", headline=2)
def list_f1(
    parsed: Sequence[Parsed], gold: Sequence, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, MetricResult]:
    """Mean over questions of precision (right answers / answers given), recall (entities
    named / gold entities) and their F1; no answer scores 0 on all three."""
    _check(parsed, gold)
    prec, rec, f1 = [], [], []
    for p, g in zip(parsed, gold, strict=True):
        right, given, wanted = list_counts(_answers(p, LIST_ANSWERS), _entities(g))
        pr = right / given if given else 0.0
        re_ = right / wanted if wanted else 0.0
        prec.append(pr)
        rec.append(re_)
        f1.append(2 * pr * re_ / (pr + re_) if pr + re_ else 0.0)
    return {
        "list_f1": mean_result("list_f1", f1, seed, n_resamples),
        "list_precision": mean_result("list_precision", prec, seed, n_resamples),
        "list_recall": mean_result("list_recall", rec, seed, n_resamples),
    }
