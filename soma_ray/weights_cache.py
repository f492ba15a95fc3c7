"""A bounded disk cache of downloaded (encrypted) weights, content-addressed by their checksum:
`DIR/<BLAKE2b-256 hex>`. A standalone scoring service (`soma start scoring --data-dir DIR`) keeps
what it downloaded across restarts. A file read back is checked (size and checksum) before it is
used, and dropped when it does not match; past the bound the least recently used go first."""
from __future__ import annotations

import os
from pathlib import Path

from soma_ray.files import write_atomic
from soma_ray.protocol.encoding import blake2b256


class WeightsCache:
    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def path(self, checksum: bytes) -> Path:
        return self.directory / bytes(checksum).hex()

    def get(self, checksum: bytes, size: int) -> bytes | None:
        path = self.path(checksum)
        try:
            if path.stat().st_size != size:
                path.unlink(missing_ok=True)
                return None
            data = path.read_bytes()
        except OSError:
            return None
        if blake2b256(data) != bytes(checksum):
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used
        return data

    def put(self, checksum: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes or blake2b256(data) != bytes(checksum):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(checksum), data)
        self.evict()

    def evict(self) -> None:
        """Remove the least recently used files until the cache is within its bound."""
        entries = []
        for path in self.directory.iterdir():
            if path.is_file() and len(path.name) == 64:
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
