"""Metrics a judge gives (biorag.judges), declared as scorers so a task can list them in its
`metrics` and the report can headline them. They are computed by the judging stage after
prediction, never from the parsed answers: `compute_metrics` passes over them, and a cell
whose task lists one without a judge set logs nothing under it.
"""

from __future__ import annotations

from collections.abc import Sequence

from biorag.errors import BioragError
from biorag.scoring.metrics import MetricResult, scorer


def _judged(name: str) -> BioragError:
    return BioragError(f"{name} is given by a judge after prediction: set judges=[NAME] (experiments/judge/) "
                       "or the task's judge:, not a scorer call")


@scorer("rubric_score", headline=0, judged=True)
def rubric_score(parsed: Sequence, gold: Sequence, **_: object) -> dict[str, MetricResult]:
    """HealthBench's rubric score: points of the criteria met over the positive points, clipped."""
    raise _judged("rubric_score")


@scorer("scale_accuracy", "scale_completeness", "scale_clarity", headline=4, judged=True)
def scale(parsed: Sequence, gold: Sequence, **_: object) -> dict[str, MetricResult]:
    """MedHELM-style 1-5 ratings against the reference answer."""
    raise _judged("scale")


@scorer("answer_supported", "claims_supported", judged=True)
def support(parsed: Sequence, gold: Sequence, **_: object) -> dict[str, MetricResult]:
    """Whether an answer's claims are supported by the passages in its prompt."""
    raise _judged("support")
