"""Local files, the two ways every module writes and reads them: a whole-or-nothing replace
(`replacing`, `write_atomic`) and a bounded read (`read_bounded`, `read_at_most`).

A replaced file is written to a scratch file beside it and renamed over it, so a reader (or a
crash) sees the old file or the new one, never half of either. The blob store (serve/blobs.py)
keeps its own fsync'd store: a blob is a content file and a sidecar, renamed in under one lock.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


class FileTooLarge(ValueError):
    """A file longer than the most its reader takes (it was read no further than that)."""

    def __init__(self, path: str | os.PathLike, limit: int, size: int):
        self.path, self.limit, self.size = Path(path), limit, size
        super().__init__(f"{path} is over {limit} bytes")


def read_at_most(file: BinaryIO, limit: int, path: str | os.PathLike) -> bytes:
    """The bytes of the open `file`, reading at most one byte over `limit`: FileTooLarge (with
    the file's size, as far as it is known) when it holds more than `limit`."""
    data = file.read(limit + 1)
    if len(data) > limit:
        try:
            size = max(len(data), os.fstat(file.fileno()).st_size)
        except (OSError, ValueError):  # not a file on disk (a pipe, a buffer)
            size = len(data)
        raise FileTooLarge(path, limit, size)
    return data


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of `path`, at most `limit` of them (FileTooLarge beyond; OSError as open and
    read raise it, for the caller to word)."""
    with open(path, "rb") as file:
        return read_at_most(file, limit, path)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a scratch path beside `path`; when the block ends without error the scratch
    replaces `path` (one rename), and on error it is removed, leaving `path` as it was.

    The scratch is created empty by mkstemp (mode 0600, O_EXCL: never somebody else's file)
    before anything is written to it. With `durable` its bytes are synced before the rename and
    the directory after it, so the new file survives a crash of the machine too."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    scratch = Path(name)
    try:
        yield scratch
        if durable:
            _fsync(scratch)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Replace `path` by `data` whole or not at all (`replacing`); the file is the owner's
    only (0600)."""
    with replacing(path, durable=durable) as scratch:
        scratch.write_bytes(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
