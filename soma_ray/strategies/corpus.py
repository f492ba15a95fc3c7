"""A miner's data: a real corpus (the interpreter's stdlib sources by default, or every file of a
directory; listed by `soma_ray.corpus`) read in bounded chunks, in an order drawn from a seed."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from soma_ray.corpus import corpus_files as listed_files
from soma_ray.corpus import stdlib_root
from soma_ray.heldout import without_held_out

# One scoring chunk of the V1 model (spec/model.md: S = 1024): an item costs one forward pass.
CHUNK_BYTES = 1024


def corpus_files(root: str | Path | None = None) -> list[Path]:
    """The corpus's files, sorted: the stdlib's `*.py` when `root` is None (less the network's
    held-out slice, soma_ray/heldout.py: no participant reads it), else every regular file under
    `root`. Raises FileNotFoundError for a root that is not a directory or holds none."""
    base = stdlib_root() if root is None else Path(root).expanduser()
    if root is not None and not base.is_dir():
        raise FileNotFoundError(f"corpus {base}: not a directory")
    found = listed_files(None if root is None else base)
    if root is None:
        found = without_held_out(found, base)
    if not found:
        raise FileNotFoundError(f"corpus {base}: no files")
    return found


class Corpus:
    """Chunks of at most `chunk_bytes` from `files`, file after file in a seeded order, for ever
    (the order is drawn again at each pass). A file that cannot be read is skipped."""

    def __init__(self, files: list[Path], seed: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._files = list(files)
        self._rng = random.Random(seed)
        self._chunk_bytes = chunk_bytes
        self._chunks = self._stream()

    def next_chunk(self) -> bytes:
        return next(self._chunks)

    def reseeded(self, seed: int) -> Corpus:
        """The same files read in the order another seed draws."""
        return Corpus(self._files, seed, self._chunk_bytes)

    def _stream(self) -> Iterator[bytes]:
        while True:
            order = self._files[:]
            self._rng.shuffle(order)
            readable = False
            for path in order:
                try:
                    with open(path, "rb") as file:
                        while chunk := file.read(self._chunk_bytes):
                            readable = True
                            yield chunk
                except OSError:
                    continue
            if not readable:
                raise FileNotFoundError("corpus: no file could be read")
