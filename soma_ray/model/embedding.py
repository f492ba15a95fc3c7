"""A model's own embedding: where it sits in the embedding space (docs/model_owner.md, "The
embedding"). `soma model commit` computes it when no embedding file is given, and the trainers of
the game (soma_ray/strategies/trainer.py) compute it for every version they publish.

    embedding = model_embedding(weights, sample_windows(files))   # canonical float32 bytes
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from soma_ray.protocol.targets import embedding_bytes


class ZeroMeanEmbedding(ValueError):
    """The model's mean embedding over the sample is zero or not finite (no direction to use)."""

    def __init__(self) -> None:
        super().__init__("the model's mean embedding over the corpus sample is zero or not finite")


def model_embedding(weights: bytes, sample: Sequence[bytes]) -> bytes:
    """The model's own embedding: the mean of its scoring embeddings of the sample's windows,
    scaled to unit length, as canonical float32 bytes (ZeroMeanEmbedding when there is none)."""
    from soma_ray.model import load_weights, score_many  # torch: only when an embedding is made

    scores = score_many(load_weights(weights), list(sample))
    mean = np.mean([s.embedding for s in scores], axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm == 0.0:
        raise ZeroMeanEmbedding()
    return embedding_bytes((mean / norm).astype(np.float32))
