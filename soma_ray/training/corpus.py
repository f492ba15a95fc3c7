"""Byte corpora for training: reading documents, the held-out split and the chunk order.

A corpus is a list of documents (name, bytes), read from the files `soma_ray.corpus` lists.
Whole documents go to the held-out split, chosen by a hash of their name, so held-out bytes are
never trained on and the split does not depend on the order files were listed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np

from soma_ray.corpus import CorpusNotFound, corpus_files, stdlib_root
from soma_ray.corpus import stdlib_sources as stdlib_source_files
from soma_ray.training.errors import CorpusReadError, CorpusTooSmallError, EmptyCorpusError

__all__ = ["ChunkTable", "CorpusSource", "CorpusSplit", "Document", "chunk_table", "epoch_order",
           "read_corpus", "sample_indices", "scoring_bytes", "split_corpus", "stdlib_root",
           "stdlib_source_files"]

CorpusSource = Union[None, str, os.PathLike, Iterable[Union[bytes, str, os.PathLike]]]


@dataclasses.dataclass(frozen=True)
class Document:
    name: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class CorpusSplit:
    train: tuple[Document, ...]
    held_out: tuple[Document, ...]


def read_corpus(source: CorpusSource = None) -> list[Document]:
    """Read a corpus: None (the standard library), a directory, a file, a JSONL or Parquet file
    or a dataset (`soma_ray.sources`: each item a document), or an iterable of file paths
    and/or bytes. Empty documents are skipped; no document at all is an error."""
    root = None
    from soma_ray.sources import is_item_source, iter_items, SourceError

    if is_item_source(source):  # a JSONL, Parquet or dataset source: its items are documents
        try:
            source = list(iter_items(source))
        except SourceError as error:
            raise CorpusReadError(str(source), str(error)) from None
    if source is None:
        root, label = stdlib_root(), "<python stdlib>"
        items: list = sorted(corpus_files(None), key=lambda path: _walk_order(path, root))
    elif isinstance(source, (str, os.PathLike)):
        root, label = Path(source), str(source)
        try:
            items = corpus_files(root)
        except CorpusNotFound:
            raise CorpusReadError(str(root), "no such file or directory") from None
    else:
        items = list(source)
        label = f"<{len(items)} items>"
    documents = [_read_item(i, item, root) for i, item in enumerate(items)]
    non_empty = [d for d in documents if d.data]
    if not non_empty:
        raise EmptyCorpusError(label, len(items))
    return non_empty


def _walk_order(path: Path, root: Path) -> tuple:
    """The order training has always read the standard library in (each directory's files, then
    its subdirectories, by name), so a run on the default corpus trains on the same chunks."""
    *directories, name = path.relative_to(root).parts
    return (*((1, d) for d in directories), (0, name))


def _read_item(index: int, item: bytes | str | os.PathLike, root: Path | None) -> Document:
    """A document named by its path relative to the corpus root, so the held-out split
    survives moving the corpus."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return Document(f"item-{index}", bytes(item))
    path = Path(item)
    name = path.relative_to(root).as_posix() if root is not None and root.is_dir() else str(item)
    try:
        return Document(name, path.read_bytes())
    except OSError as e:
        raise CorpusReadError(str(item), e.strerror or str(e)) from e


def split_corpus(documents: list[Document], held_out_fraction: float = 0.05) -> CorpusSplit:
    """Hold out the documents whose name hashes below `held_out_fraction` (at least one, never
    all). A single document is cut in two instead: its tail is held out."""
    total = sum(len(d.data) for d in documents)
    if len(documents) == 1:
        return _split_one(documents[0], held_out_fraction, total)
    ranked = sorted(documents, key=lambda d: _name_hash(d.name))
    cut = min(max(1, sum(_name_hash(d.name) < held_out_fraction for d in ranked)),
              len(ranked) - 1)
    held = {id(d) for d in ranked[:cut]}
    return CorpusSplit(
        train=tuple(d for d in documents if id(d) not in held),
        held_out=tuple(d for d in documents if id(d) in held))


def _split_one(document: Document, fraction: float, total: int) -> CorpusSplit:
    if total < 2:
        raise CorpusTooSmallError(1, total)
    tail = min(max(1, int(total * fraction)), total - 1)
    head, rest = document.data[:-tail], document.data[-tail:]
    return CorpusSplit(train=(Document(document.name + "[train]", head),),
                       held_out=(Document(document.name + "[held-out]", rest),))


def _name_hash(name: str) -> float:
    """A number in [0, 1) that depends only on the document's name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def scoring_bytes(documents: tuple[Document, ...], limit: int) -> bytes:
    """The held-out documents joined in order, cut to `limit` bytes: the data scored before and
    after training."""
    return b"".join(d.data for d in documents)[:limit]


@dataclasses.dataclass(frozen=True)
class ChunkTable:
    """Where each training chunk lives: document index and chunk index within the document."""

    document: np.ndarray
    chunk: np.ndarray

    def __len__(self) -> int:
        return len(self.document)


def chunk_table(documents: tuple[Document, ...], seq_len: int) -> ChunkTable:
    """One row per chunk of `seq_len` bytes (ceil(N/S) per document, as the tokenizer cuts)."""
    counts = np.array([-(-len(d.data) // seq_len) for d in documents], dtype=np.int64)
    document = np.repeat(np.arange(len(documents), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    chunk = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    return ChunkTable(document=document, chunk=chunk)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The chunk order of one epoch: a permutation that is a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def sample_indices(seed: int, n: int, first: int, count: int) -> np.ndarray:
    """Rows of the chunk table for global samples first..first+count-1 of the endless stream
    epoch 0, epoch 1, ...; a resumed run asks for the same samples and gets the same rows."""
    samples = np.arange(first, first + count, dtype=np.int64)
    epochs = samples // n
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):
        mask = epochs == epoch
        out[mask] = epoch_order(seed, int(epoch), n)[samples[mask] % n]
    return out
