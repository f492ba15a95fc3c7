"""Byte corpora on disk: which files a corpus is, and bounded samples of them. The one reader of
model training (`soma_ray.training.corpus` reads whole documents), the scripted miners
(`soma_ray.strategies.corpus` streams chunks) and a model's default embedding (`soma model
commit`, docs/model_owner.md: `sample_windows`).

A corpus is a file, or every regular file under a directory, or by default the running
interpreter's standard-library sources (real code on every machine); its files are sorted by
path. Pure: the standard library and numpy only.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

# Directories of the interpreter's library that hold installed packages or caches, not sources.
NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})
# The sample a model's own embedding is computed over: this many windows of this many bytes,
# evenly spaced over the corpus (docs/model_owner.md, "The embedding").
EMBEDDING_WINDOWS = 8
EMBEDDING_WINDOW_BYTES = 1_024


class CorpusNotFound(FileNotFoundError):
    """A corpus path that is neither a file nor a directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        super().__init__(f"corpus {path}: no such file or directory")


class EmptyCorpus(ValueError):
    """A corpus whose files hold no bytes at all."""

    def __init__(self, files: int):
        self.files = files
        super().__init__(f"the corpus holds no bytes ({files} files)")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(top_level: bool = False) -> list[Path]:
    """The `.py` files of the running interpreter's standard library, sorted by path (installed
    packages left out); with `top_level`, only its top-level modules."""
    root = stdlib_root()
    found = root.glob("*.py") if top_level else root.rglob("*.py")
    return sorted(p for p in found
                  if p.is_file() and not NOT_STDLIB.intersection(p.relative_to(root).parts))


def corpus_files(source: str | os.PathLike | None = None) -> list[Path]:
    """A corpus's files: None, the standard library's sources (`stdlib_sources`); a directory,
    every regular file under it sorted by path; a file, itself. CorpusNotFound otherwise."""
    if source is None:
        return stdlib_sources()
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.exists():
        return [path]
    raise CorpusNotFound(source)


def sample_windows(files: list[Path], count: int = EMBEDDING_WINDOWS,
                   size: int = EMBEDDING_WINDOW_BYTES) -> list[bytes]:
    """`count` windows of at most `size` bytes at evenly spaced offsets of the files' bytes taken
    in order (a window ends with its file): a bounded read of any corpus (EmptyCorpus when the
    files hold no bytes)."""
    sizes = [path.stat().st_size for path in files]
    total = sum(sizes)
    if total == 0:
        raise EmptyCorpus(len(files))
    starts = np.cumsum([0] + sizes)
    windows = []
    for offset in sorted({i * total // count for i in range(count)}):
        index = int(np.searchsorted(starts, offset, side="right")) - 1  # skips empty files
        with open(files[index], "rb") as file:
            file.seek(offset - int(starts[index]))
            windows.append(file.read(size))
    return windows
