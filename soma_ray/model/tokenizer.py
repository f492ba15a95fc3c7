"""Bytes → chunks of S positions (spec/model.md, "Tokenizer")."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from soma_ray.model.config import EOS_TOKEN, PAD_TOKEN
from soma_ray.model.errors import EmptyDataError


class Chunks(NamedTuple):
    """int64 arrays of shape [ceil(N/S), S]."""

    tokens: np.ndarray
    positions: np.ndarray
    targets: np.ndarray


def tokenize(data: bytes, max_seq_len: int) -> Chunks:
    """Cut data into chunks: bytes at global offsets, then EOS (only if the last chunk has
    room), then PAD; EOS and PAD sit at the position just after the chunk's last byte."""
    size = len(data)
    if size == 0:
        raise EmptyDataError()
    num_chunks = -(-size // max_seq_len)
    flat = np.full(num_chunks * max_seq_len, PAD_TOKEN, dtype=np.int64)
    flat[:size] = np.frombuffer(data, dtype=np.uint8)
    if size < flat.size:
        flat[size] = EOS_TOKEN
    tokens = flat.reshape(num_chunks, max_seq_len)
    # Offsets are global; positions past the data clamp to the offset after the last byte.
    positions = np.minimum(np.arange(flat.size, dtype=np.int64), size).reshape(tokens.shape)
    targets = np.empty_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    targets[:, -1] = PAD_TOKEN
    return Chunks(tokens, positions, targets)
