"""Weights manifest and the three model commitments of spec/protocol.md (CommitModel).

Each commitment is the chain's `soma_ray.protocol.models.model_commitment` (BLAKE2b-256 of
DOMAIN_MODEL_COMMITMENT followed by the bytes), so what an owner commits with these helpers is
exactly what RevealModel checks:
  weights_commitment   = model_commitment(encrypted file bytes), computed streaming
  key_commitment       = model_commitment(the 32-byte key)
  embedding_commitment = model_commitment(little-endian float32 bytes)
The manifest's checksum is the plain BLAKE2b-256 of the encrypted bytes (what a downloader checks).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from soma_ray.model.encryption import CHUNK_BYTES, check_key
from soma_ray.protocol.encoding import DOMAIN_MODEL_COMMITMENT
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.targets import embedding_bytes
from soma_ray.protocol.types import WeightsManifest


def _file_hash(path: str | os.PathLike, prefix: bytes = b"") -> bytes:
    """BLAKE2b-256 of prefix + the file's bytes, read in chunks."""
    h = hashlib.blake2b(prefix, digest_size=32)
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
    return h.digest()


def weights_manifest(path: str | os.PathLike, url: str) -> WeightsManifest:
    """Manifest of an encrypted weights file: where it lives, its size and checksum."""
    return WeightsManifest(url=url, checksum=_file_hash(path), size=os.path.getsize(path))


def weights_commitment(path: str | os.PathLike) -> bytes:
    """Commitment to the encrypted weights file (equal to model_commitment of its bytes)."""
    return _file_hash(path, DOMAIN_MODEL_COMMITMENT)


def key_commitment(key: bytes) -> bytes:
    check_key(key)
    return model_commitment(bytes(key))


def embedding_commitment(embedding: np.ndarray) -> bytes:
    return model_commitment(embedding_bytes(embedding))
