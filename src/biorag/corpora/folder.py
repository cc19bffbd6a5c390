"""A folder of text, Markdown, HTML and PDF files, read with llama-index file readers.

One document per file: id = the path relative to the folder (POSIX separators), title = the
file name without its extension. Files are listed, sorted and read one at a time, so a large
folder streams. Plain text and Markdown are read as they are; PDFs with llama-index's
`PDFReader` (pypdf), pages joined; HTML with BeautifulSoup, scripts and styles dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biorag.corpora.base import CorpusConfig, CorpusReader
from biorag.corpora.tabular import fingerprint_files, resolve_files
from biorag.errors import InputError
from biorag.types import Document

log = logging.getLogger(__name__)


def _html_reader_class() -> type:
    """A llama-index reader for whole HTML pages (llama-index's own reads one tag type)."""
    from llama_index.core import Document as LIDocument
    from llama_index.core.readers.base import BaseReader

    class HTMLTextReader(BaseReader):
        """The visible text of an HTML page: no scripts, styles or markup."""

        def load_data(self, file: Path, extra_info: dict | None = None) -> list[LIDocument]:
            from bs4 import BeautifulSoup

            soup = BeautifulSoup(Path(file).read_bytes(), "html.parser")
            for tag in soup(["script", "style", "noscript", "template"]):
                tag.decompose()
            root = soup.body or soup
            lines = (ln.strip() for ln in root.get_text(separator="\n").splitlines())
            text = "\n".join(ln for ln in lines if ln)
            return [LIDocument(text=text, metadata=dict(extra_info or {}))]

    return HTMLTextReader


class FolderReader(CorpusReader):
    """Files under `path` whose extension is in `extensions` (.txt, .md, .html, .pdf)."""

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        self.suffixes = tuple((e if e.startswith(".") else f".{e}").lower() for e in cfg.extensions)
        if not self.suffixes:
            raise InputError("the folder corpus needs at least one extension", field="extensions")

    def _files(self) -> tuple[Path, list[Path]]:
        """The folder ids are relative to, and the files to read."""
        files = resolve_files(self.cfg.path, self.suffixes, "folder")
        path = Path(os.path.expanduser(self.cfg.path or ""))
        if path.is_dir():
            root = path
        elif path.is_file():
            root = path.parent
        else:  # a glob: ids relative to the deepest folder all matches share
            root = Path(os.path.commonpath([f.parent for f in files]))
        # resolve_files matches suffixes only when searching a folder; a glob or file may not.
        kept = [f for f in files if f.name.lower().endswith(self.suffixes)]
        if not kept:
            raise InputError(
                f"no files with the extensions {', '.join(self.suffixes)}",
                file=self.cfg.path,
                field="path",
            )
        return root, kept

    def _records(self) -> Iterator[Document]:
        root, files = self._files()
        return self._read_all(root, files)

    def _read_all(self, root: Path, files: list[Path]) -> Iterator[Document | InputError]:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.readers.file import PDFReader

        html = _html_reader_class()()
        extractors: dict[str, Any] = {
            ".pdf": PDFReader(return_full_document=True),
            ".html": html,
            ".htm": html,
        }
        for path in files:
            rel = path.relative_to(root).as_posix()
            try:
                # One file per call keeps memory flat and lets a bad file fail alone.
                parts = SimpleDirectoryReader.load_file(
                    input_file=path,
                    file_metadata=None,  # type: ignore[arg-type]  # None is accepted: no metadata
                    file_extractor=extractors,
                    encoding=self.cfg.encoding,
                    errors="strict",  # the default, "ignore", silently drops undecodable bytes
                    raise_on_error=True,
                )
            except Exception as e:  # any reader failure is this file's problem, named as such
                cause = e.__cause__ or e
                yield InputError(f"cannot read: {type(cause).__name__}: {cause}", file=str(path))
                continue
            text = "\n\n".join(p.text for p in parts if p.text)
            yield Document(
                id=rel,
                text=text,
                title=path.name[: -len(path.suffix)] if path.suffix else path.name,
                metadata={"path": rel, "file_type": path.suffix.lower()},
                source=str(path),
            )

    def source_fingerprint(self) -> str:
        root, files = self._files()
        # ids are relative paths, so names are part of the data.
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
        names = h.hexdigest()
        return fingerprint_files(
            files, {"loader": "folder", "names": names, "encoding": self.cfg.encoding}
        )
