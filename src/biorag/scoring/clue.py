"""CLUE's own scoring rules (TIO-IKIM/CLUE, `eval/`), as registered scorers beside biorag's.

- `clue_accuracy` reads the raw output as CLUE does: for MedNLI, correct when the gold label
  occurs exactly once in the upper-cased output ("ENTAILMENT, not CONTRADICTION" is right
  for both labels, "ENTAILMENT ... ENTAILMENT" for neither); for LongHealth, the letter of the
  first "The correct answer is X:".
- `clue_icd`: codes found by CLUE's ICD-10 regex in the raw output, dots removed; per note
  precision/recall/F1 on exact codes and on 3-character categories, averaged over notes, and
  the share of found codes that are valid ICD-10-CM codes (simple-icd-10-cm; CLUE uses the
  `icd10` package).
- `umls_f1`: entities of prediction and reference linked to UMLS concepts by scispaCy's linker
  (`en_core_sci_sm` + `scispacy_linker`, as CLUE's `compute_UMLS_F1`), precision/recall/F1 of
  the two sets of concept names per item, averaged. Without scispaCy, its model or the UMLS
  knowledge base, the metric is skipped with the reason (never a silent zero); `set_linker`
  puts in another linker (the tests use a tiny knowledge base).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from biorag.scoring.metrics import N_RESAMPLES, MetricResult, MetricUnavailable, mean_result, scorer

ICD_PATTERN = re.compile(r"\b[A-TV-Z][0-9]{2}(?:\.?[0-9A-Z]{1,4})?\b")  # eval/utils.py parse_icd_codes
ANSWER_PATTERN = re.compile(r"The correct answer is (\w):")  # eval_LongHealth.py parse_model_choice
UMLS_MODEL = "en_core_sci_sm"


def _nli_correct(output: str, label: str) -> bool:
    return len(re.findall(re.escape(label.upper()), output.upper())) == 1


def _choice(output: str) -> str:
    found = ANSWER_PATTERN.findall(output)
    return found[0] if found else ""


@scorer("clue_accuracy", raw=True)
def clue_accuracy(outputs: Sequence[str], gold: Sequence, *, seed: int = 0,
                  n_resamples: int = N_RESAMPLES) -> dict[str, MetricResult]:
    """CLUE's accuracy: LongHealth's answer phrase for letter answers, MedNLI's
    exactly-once rule for labels."""
    values = [float(_choice(o) == g) if len(str(g)) == 1 else float(_nli_correct(o, str(g)))
              for o, g in zip(outputs, gold, strict=True)]
    return {"clue_accuracy": mean_result("clue_accuracy", values, seed, n_resamples)}


def _prf(preds: Sequence[str], gold: Sequence[str]) -> tuple[float, float, float]:
    """eval/utils.py compute_icd_f1: a list of predictions (repeats count), gold as given."""
    p = sum(x in gold for x in preds) / len(preds) if preds else 0.0
    r = sum(g in preds for g in gold) / len(gold) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@functools.lru_cache(maxsize=65536)
def _valid(code: str) -> bool:
    import simple_icd_10_cm as cm

    return bool(cm.is_valid_item(code))


@scorer("clue_icd_f1", "clue_icd_f1_category", "clue_valid_codes", raw=True)
def clue_icd(outputs: Sequence[str], gold: Sequence, *, seed: int = 0,
             n_resamples: int = N_RESAMPLES) -> dict[str, MetricResult]:
    """CLUE's MeDiSumCode scores: exact and 3-character F1 per note, and valid-code share."""
    em, cat, valid = [], [], []
    for out, g in zip(outputs, gold, strict=True):
        preds = [c.replace(".", "") for c in ICD_PATTERN.findall(out)]
        truth = [str(c).replace(".", "").upper() for c in (g if isinstance(g, tuple | list) else [g])]
        em.append(_prf(preds, truth)[2])
        cat.append(_prf(list({c[:3] for c in preds}), list({c[:3] for c in truth}))[2])
        valid.append(sum(_valid(c) for c in preds) / len(preds) if preds else 0.0)
    return {k: mean_result(k, v, seed, n_resamples)
            for k, v in (("clue_icd_f1", em), ("clue_icd_f1_category", cat), ("clue_valid_codes", valid))}


# -- UMLS-F1 ----------------------------------------------------------------------------------


@dataclass
class UMLSLinker:
    """A spaCy pipeline whose entities carry `._.kb_ents` (scispaCy's linker sets them) and the
    knowledge base that names their concepts (`kb.cui_to_entity[cui].canonical_name`)."""

    nlp: Any
    kb: Any

    def concepts(self, text: str) -> set[str]:
        """The canonical names of the best-linked concept of each entity (CLUE's rule)."""
        doc = self.nlp(text)
        return {self.kb.cui_to_entity[e._.kb_ents[0][0]].canonical_name
                for e in doc.ents if e._.kb_ents}


_LINKER: list[UMLSLinker | Callable[[], UMLSLinker] | None] = [None]


def set_linker(linker: UMLSLinker | Callable[[], UMLSLinker] | None) -> None:
    """Use another linker for `umls_f1` (None: back to scispaCy's)."""
    _LINKER[0] = linker
    _scispacy_linker.cache_clear()


@functools.lru_cache(maxsize=1)
def _scispacy_linker(model: str) -> UMLSLinker:
    try:
        import spacy
        from scispacy.linking import EntityLinker  # noqa: F401  (registers "scispacy_linker")
    except ImportError:
        raise MetricUnavailable(
            "umls_f1 needs scispaCy (pip install scispacy) and its model en_core_sci_sm "
            "(pip install https://s3-us-west-2.amazonaws.com/ai2-s2-scispacy/releases/v0.5.4/"
            "en_core_sci_sm-0.5.4.tar.gz); not installed, so UMLS-F1 is not reported") from None
    try:
        nlp = spacy.load(model)
        nlp.add_pipe("scispacy_linker", config={"resolve_abbreviations": True, "linker_name": "umls"})
    except Exception as e:  # model not installed, or the UMLS knowledge base not downloadable
        raise MetricUnavailable(f"umls_f1: scispaCy's UMLS linker could not be loaded ({model}: "
                                f"{type(e).__name__}: {e}); UMLS-F1 is not reported") from None
    return UMLSLinker(nlp, nlp.get_pipe("scispacy_linker").kb)


def _linker() -> UMLSLinker:
    chosen = _LINKER[0]
    if chosen is None:
        return _scispacy_linker(os.environ.get("BIORAG_UMLS_MODEL", UMLS_MODEL))
    return chosen if isinstance(chosen, UMLSLinker) else chosen()


@scorer("umls_precision", "umls_recall", "umls_f1")
def umls_f1(parsed: Sequence, gold: Sequence, *, seed: int = 0,
            n_resamples: int = N_RESAMPLES) -> dict[str, MetricResult]:
    """UMLS concept precision/recall/F1 per item (eval/utils.py compute_UMLS_F1), averaged;
    with several references, the first."""
    linker = _linker()
    values: dict[str, list[float]] = {"umls_precision": [], "umls_recall": [], "umls_f1": []}
    for p, g in zip(parsed, gold, strict=True):
        ref = str(g[0]) if isinstance(g, tuple | list) else str(g)
        pred, truth = linker.concepts(str(p or "")), linker.concepts(ref)
        prec = len(pred & truth) / len(pred) if pred else 0.0
        rec = len(truth & pred) / len(truth) if truth else 0.0
        for k, v in zip(values, (prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0),
                        strict=True):
            values[k].append(v)
    return {k: mean_result(k, v, seed, n_resamples) for k, v in values.items()}
