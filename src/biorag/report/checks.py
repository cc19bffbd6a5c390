"""Checks of a study's design against its arms' configs: a closed-book or baseline arm that
ran with an adapter does not measure what its name says.

An arm's adapter is an override away (`arm.adapter=...` on the command line, or a study that
sets one for every arm), so a study can log `base` with a fine-tuned model. Its deltas then
compare a fine-tune with a fine-tune, and the RAG x fine-tune 2x2 is not one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from biorag.errors import ConfigError
from biorag.report.study import Cell

log = logging.getLogger(__name__)


def configured_adapter(arm: str) -> tuple[bool, str | None]:
    """(whether the arm has a config here, the adapter that config names)."""
    from biorag.config import load_option
    from biorag.experiment.arms import ArmConfig

    try:
        return True, load_option("arm", arm, ArmConfig).adapter
    except ConfigError:
        return False, None


def adapter_warnings(cells: Sequence[Cell], baseline: str) -> list[str]:
    """A warning per cell whose arm's config has `adapter: null` but which ran with an
    adapter, and per baseline-arm cell that ran with one."""
    out = []
    configs: dict[str, tuple[bool, str | None]] = {}
    for c in cells:
        if c.adapter is None:
            continue
        found, configured = configs.setdefault(c.arm, configured_adapter(c.arm))
        if found and configured is None:
            out.append(f"arm {c.arm} ran with adapter {c.adapter}: its comparison with the fine-tuned arms is "
                       f"not the 2x2 it claims (cell {c.name}, run {c.run_id}; the arm's config has "
                       "adapter: null)")
        elif c.arm == baseline:
            out.append(f"baseline arm {c.arm} ran with adapter {c.adapter}: the deltas against it compare "
                       f"with a fine-tuned model, not the model as released (cell {c.name}, run {c.run_id})")
    return out
