"""A Hugging Face `datasets` corpus: a hub dataset, local data files, or a saved dataset folder.

`dataset` is what `datasets.load_dataset` takes: a hub id (`MedRAG/textbooks`), a packaged
builder (`json`, `csv`, `parquet`) with `path` as its data files, or a folder written by
`Dataset.save_to_disk`. Fields are mapped as for JSONL. Rows are numbered from 0 in errors
(what `dataset[i]` indexes with).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biorag.corpora.base import CorpusConfig, CorpusReader
from biorag.corpora.tabular import (
    fingerprint_files,
    record_to_document,
    resolve_files,
)
from biorag.errors import InputError
from biorag.types import Document

log = logging.getLogger(__name__)

_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".gz")


class HFDatasetReader(CorpusReader):
    """Rows of one split of a Hugging Face dataset, streamed or memory-mapped."""

    batch_size = 1000

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        if not cfg.dataset:
            raise InputError(
                "the hf corpus needs a dataset (a hub id, json/csv/parquet with path, or a "
                "save_to_disk folder)",
                field="dataset",
            )
        self._dataset: Any = None

    @property
    def where(self) -> str:
        return f"{self.cfg.dataset}[{self.cfg.split}]"

    def _saved_folder(self) -> Path | None:
        p = Path(os.path.expanduser(self.cfg.dataset or ""))
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return p
        return None

    def load(self) -> Any:
        """The `datasets.Dataset` (or `IterableDataset` when streaming), loaded once."""
        if self._dataset is not None:
            return self._dataset
        import datasets

        cfg = self.cfg
        try:
            saved = self._saved_folder()
            if saved is not None:
                ds = datasets.load_from_disk(str(saved))
                if isinstance(ds, datasets.DatasetDict):
                    if cfg.split not in ds:
                        raise InputError(
                            f"no split {cfg.split!r} (splits: {', '.join(ds)})",
                            file=str(saved),
                            field="split",
                        )
                    ds = ds[cfg.split]
            else:
                data_files = os.path.expanduser(cfg.path) if cfg.path else None
                ds = datasets.load_dataset(
                    cfg.dataset,
                    cfg.subset,
                    split=cfg.split,
                    revision=cfg.revision,
                    streaming=cfg.streaming,
                    data_files=data_files,
                )
        except InputError:
            raise
        except Exception as e:  # hub, network and builder errors all mean "cannot load this"
            raise InputError(
                f"cannot load the dataset: {type(e).__name__}: {e}", file=self.where
            ) from e
        self._dataset = ds
        return ds

    def _records(self) -> Iterator[Document]:
        ds = self.load()  # outside the generator: a load failure raises even under on_error=skip
        columns = ds.column_names  # None for some streamed datasets: then checked per row
        if columns is not None:
            for name in (self.cfg.id_field, self.cfg.text_field):
                if name not in columns:
                    raise InputError(
                        f"no such column (columns: {', '.join(columns)})",
                        file=self.where,
                        field=name,
                    )
            wanted = [self.cfg.id_field, self.cfg.text_field]
            if self.cfg.title_field in columns and self.cfg.title_field not in wanted:
                wanted.append(self.cfg.title_field)
            elif self.cfg.title_field and self.cfg.title_field not in columns:
                log.warning(
                    "%s has no column %r: documents get no title (set title_field: null)",
                    self.where,
                    self.cfg.title_field,
                )
            ds = ds.select_columns(wanted)
        return self._rows(ds)

    def _rows(self, ds: Any) -> Iterator[Document | InputError]:
        import datasets

        if isinstance(ds, datasets.Dataset):
            rows: Any = (
                dict(zip(batch, values, strict=True))
                for batch in ds.iter(batch_size=self.batch_size)
                for values in zip(*batch.values(), strict=True)
            )
        else:
            rows = iter(ds)
        for i, row in enumerate(rows):
            try:
                yield record_to_document(
                    row, self.cfg, file=self.where, line=i, source=f"{self.where}:{i}"
                )
            except InputError as e:
                yield e

    def source_fingerprint(self) -> str:
        """The dataset's own fingerprint; for a stream, its id, revision and local files."""
        mapping = {
            "id_field": self.cfg.id_field,
            "title_field": self.cfg.title_field,
            "text_field": self.cfg.text_field,
        }
        if not self.cfg.streaming or self._saved_folder() is not None:
            fp = self.load()._fingerprint
            return hashlib.sha256(
                json.dumps({"hf": fp, **mapping}, sort_keys=True).encode()
            ).hexdigest()
        ident = {
            "dataset": self.cfg.dataset,
            "subset": self.cfg.subset,
            "split": self.cfg.split,
            "revision": self.cfg.revision,
            **mapping,
        }
        if self.cfg.path:
            return fingerprint_files(resolve_files(self.cfg.path, _DATA_SUFFIXES, "hf"), ident)
        if self.cfg.revision is None:
            log.warning(
                "streaming %s without a revision: the fingerprint cannot see changes to the "
                "hub dataset; pin corpus.revision for a reproducible index",
                self.cfg.dataset,
            )
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
