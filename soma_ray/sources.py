"""Corpus sources: where miners, trainers and `soma submit --corpus` take their items from.

    iter_items("data/")                 every regular file under a directory (sorted by path)
    iter_items("code.jsonl")            each line's text field ("text", "content" or "code")
    iter_items("code.parquet")          each row's text column (pyarrow, which Ray brings)
    iter_items("hf:bigcode/the-stack-v2-dedup")   a Hugging Face dataset, streamed (`datasets`;
                                        hf:NAME:SPLIT picks the split, default train)
    iter_items("saved-dataset/")        a dataset saved with `datasets`' save_to_disk

Items are bytes (text as UTF-8); empty ones and ones over `max_bytes` are skipped (the
quickstart drops items over 5,000 bytes; the network takes at most `max_submission_bytes`).
`datasets` is imported only for a dataset source. Nothing is read before it is asked for: a
streamed dataset is never downloaded whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from soma_ray.corpus import CorpusNotFound, corpus_files

TEXT_FIELDS = ("text", "content", "code")
HF_PREFIX = "hf:"
_SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


class SourceError(ValueError):
    """A source that cannot be read (one line)."""


def kind_of(source: str | os.PathLike) -> str:
    """"hf", "saved", "jsonl", "parquet", "directory" or "file"."""
    text = str(source)
    if text.startswith(HF_PREFIX):
        return "hf"
    path = Path(text).expanduser()
    if path.is_dir():
        return "saved" if any((path / name).exists() for name in _SAVED_DATASET_FILES) else "directory"
    if path.suffix in (".jsonl", ".ndjson") or path.name.endswith(".jsonl.gz"):
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    if path.exists():
        return "file"
    raise SourceError(f"corpus {text}: no such file or directory (or hf:DATASET)")


def is_item_source(source) -> bool:
    """Whether `source` names items rather than files: a JSONL, Parquet or dataset source."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    try:
        return kind_of(source) in ("hf", "saved", "jsonl", "parquet")
    except SourceError:
        return False


def text_of(row: dict, fields: tuple[str, ...] = TEXT_FIELDS) -> bytes | None:
    for name in fields:
        value = row.get(name)
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
    return None


def iter_items(source: str | os.PathLike, max_bytes: int | None = None,
               fields: tuple[str, ...] = TEXT_FIELDS) -> Iterator[bytes]:
    """The source's items, in its order (module docstring); SourceError when it cannot be read."""
    kind = kind_of(source)
    reader = {"hf": _hf, "saved": _saved, "jsonl": _jsonl, "parquet": _parquet,
              "directory": _files, "file": _files}[kind]
    for item in reader(str(source), fields):
        if item and (max_bytes is None or len(item) <= max_bytes):
            yield item


def _files(source: str, fields) -> Iterator[bytes]:
    try:
        paths = corpus_files(Path(source).expanduser())
    except CorpusNotFound as error:
        raise SourceError(str(error)) from None
    for path in paths:
        try:
            yield path.read_bytes()
        except OSError:
            continue


def _jsonl(source: str, fields) -> Iterator[bytes]:
    import gzip

    path = Path(source).expanduser()
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise SourceError(f"{path}:{number} is not JSON") from None
                item = text_of(row, fields) if isinstance(row, dict) else (row.encode() if isinstance(row, str) else None)
                if item is not None:
                    yield item
    except OSError as error:
        raise SourceError(f"{path}: {error.strerror or error}") from None


def _parquet(source: str, fields) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(Path(source).expanduser())
    except (OSError, ValueError) as error:
        raise SourceError(f"{source}: not a Parquet file ({error})") from None
    names = set(table.schema_arrow.names)
    column = next((name for name in fields if name in names), None)
    if column is None:
        raise SourceError(f"{source}: no column named {' or '.join(fields)}")
    for batch in table.iter_batches(columns=[column], batch_size=256):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield value.encode()
            elif isinstance(value, (bytes, bytearray)):
                yield bytes(value)


def _rows(dataset, fields) -> Iterator[bytes]:
    for row in dataset:
        item = text_of(row, fields)
        if item is not None:
            yield item


def _hf(source: str, fields) -> Iterator[bytes]:
    """A Hugging Face dataset, streamed (HF_TOKEN is read by `datasets` for gated ones)."""
    import datasets

    name, _, split = source[len(HF_PREFIX):].partition(":")
    try:
        dataset = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as error:  # noqa: BLE001 - the hub's errors are many: one line
        raise SourceError(f"dataset {name}: {error}"[:300]) from None
    yield from _rows(dataset, fields)


def _saved(source: str, fields) -> Iterator[bytes]:
    """A dataset saved with save_to_disk (a DatasetDict: its train split, else its first)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(Path(source).expanduser()))
    except Exception as error:  # noqa: BLE001
        raise SourceError(f"dataset {source}: {error}"[:300]) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    yield from _rows(loaded.to_iterable_dataset(), fields)
