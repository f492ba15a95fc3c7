"""The scoring function validators agree on (spec/model.md, "Scoring").

Every chunk's contribution (CE sum, mean SIGReg statistic, mean representation) depends only
on that chunk, so chunks of many items are stacked into large forward passes and regrouped
afterwards into each item's batches of 16: `score_many` gives `score_model`'s numbers.

The canonical score is float32 with matmul precision 'highest' and no autocast: validators
compare it within the genesis `audit_tolerance` (2e-5; docs/audits.md has the measured drift).
Scoring pins that precision for its duration (`canonical_precision`) whatever the process set
(`torch.set_float32_matmul_precision('medium')` runs float32 matmuls in bf16 on CPUs with
AVX512-BF16/AMX and TF32 on GPUs, which drifts by 1e-3, far beyond the tolerance).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple, Sequence

import arrgen
import numpy as np
import torch
import torch.nn.functional as F

from soma_ray.model.config import (
    CHUNKS_PER_BATCH,
    EOS_TOKEN,
    PAD_TOKEN,
    SIGREG_COEFFICIENT,
    SIGREG_SLICES,
)
from soma_ray.model.errors import EmptyDataError
from soma_ray.model.network import V1Model
from soma_ray.model.sigreg_stat import characteristic_error, unit_directions
from soma_ray.model.tokenizer import tokenize
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed

TOKENS_PER_PASS = CHUNKS_PER_BATCH * 1024  # bounds activation memory of one forward pass
# Tokens per characteristic-function block ([tokens, 256] complex rotations): memory-bound on
# CPU, where cache-sized blocks measured 2-3x faster; large blocks keep accelerators busy.
_SIGREG_BLOCK_TOKENS_CPU = 256
_SIGREG_BLOCK_TOKENS = 4096


class ModelScore(NamedTuple):
    loss: float
    embedding: np.ndarray  # float32 [D], not normalised


class ScoreResult(NamedTuple):
    winner: int  # index into the models, lowest loss (first on ties)
    loss: float
    embedding: np.ndarray
    distance: float  # cosine distance of the winner's embedding to the target
    losses: list[float]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 − a·b/(|a||b|) of two float32 vectors, in [0, 2]: exactly the chain's number.

    Computed by `soma_ray.protocol.targets.cosine_distance_fixed` (exact summation, 1e-9
    fixed point), so a miner's check agrees with the validators'. A zero vector raises
    ZeroEmbedding, a NaN NonFiniteEmbedding, a length mismatch EmbeddingDimensionMismatch.
    """
    return cosine_distance_fixed(a, b) / DISTANCE_SCALE


def score_model(model: V1Model, data: bytes, seed: int = 0,
                autocast: torch.dtype | None = None) -> ModelScore:
    """(loss, embedding) of one model on one piece of data; seed 0 is canonical."""
    return _score_items(model, [data], seed, autocast=autocast)[0]


def score_many(models: V1Model | Sequence[V1Model], items: Sequence[bytes], seed: int = 0,
               tokens_per_pass: int = TOKENS_PER_PASS, autocast: torch.dtype | None = None):
    """Score many data items in as few forward passes as `tokens_per_pass` allows.

    For one model: a list of ModelScore, one per item. For a sequence of models: one such
    list per model. Each result equals `score_model(model, item, seed)`.

    `autocast` (e.g. torch.bfloat16) runs the forward pass under torch.autocast on the model's
    device; the statistics stay float32/float64. That is faster on accelerators but not the
    canonical float32 number, and not within the audit tolerance either (bf16 drifts by about
    5e-3, the tolerance is 2e-5): it is for a miner's search only; what is revealed must be
    re-scored without it.
    """
    if isinstance(models, V1Model):
        return _score_items(models, items, seed, tokens_per_pass, autocast)
    return [_score_items(model, items, seed, tokens_per_pass, autocast) for model in models]


def score(models: Sequence[V1Model], data: bytes, target_embedding: np.ndarray,
          seed: int = 0) -> ScoreResult:
    """Score data under all of a target's models; the lowest loss wins (the first on ties)."""
    if not models:
        raise ValueError("score needs at least one model")
    return best_of([score_model(model, data, seed) for model in models], target_embedding)


def best_of(scores: Sequence[ModelScore], target_embedding: np.ndarray) -> ScoreResult:
    """The ScoreResult of per-model scores: the lowest loss wins, the first on ties."""
    losses = [s.loss for s in scores]
    # A NaN loss (a broken model) never wins: it ranks after every number.
    winner = min(range(len(losses)), key=lambda i: (math.isnan(losses[i]), losses[i]))
    return ScoreResult(winner, losses[winner], scores[winner].embedding,
                       cosine_distance(scores[winner].embedding, target_embedding), losses)


@contextlib.contextmanager
def canonical_precision():
    """float32 matmuls at precision 'highest' (no TF32, no bf16 passes) while the block runs,
    then the process's setting again."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@functools.lru_cache(maxsize=64)
def _directions(seed: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Unit SIGReg directions of one batch, from arrgen.normal_array(seed, [D, 256], 0, 1).

    Cached per device: every call scores batch 0 with the same noise, and drawing, moving and
    normalising it again per call is per-call overhead on an accelerator."""
    noise = torch.from_numpy(arrgen.normal_array(seed, [dim, SIGREG_SLICES], 0.0, 1.0))
    return unit_directions(noise.to(device, dtype))


class _ChunkStats(NamedTuple):
    ce_sum: np.ndarray  # [N] summed −log p(target) over non-PAD targets
    sigreg_mean: np.ndarray  # [N] mean per-token SIGReg statistic
    representation_mean: np.ndarray  # [N, D]


def _score_items(model: V1Model, items: Sequence[bytes], seed: int,
                 tokens_per_pass: int = TOKENS_PER_PASS,
                 autocast: torch.dtype | None = None) -> list[ModelScore]:
    config = model.config
    if config.vocab_size <= EOS_TOKEN:
        raise ValueError(f"scoring needs PAD and EOS in the vocabulary, got {config.vocab_size}")
    if not items:
        return []
    chunks = []
    for index, item in enumerate(items):
        if len(item) == 0:
            raise EmptyDataError(index)
        chunks.append(tokenize(item, config.max_seq_len))
    counts = [c.tokens.shape[0] for c in chunks]
    batch_index = np.concatenate([np.arange(n) // CHUNKS_PER_BATCH for n in counts])
    stats = _chunk_stats(model, np.concatenate([c.tokens for c in chunks]),
                         np.concatenate([c.positions for c in chunks]),
                         np.concatenate([c.targets for c in chunks]),
                         batch_index, seed, tokens_per_pass, autocast)
    starts = np.cumsum([0] + counts)
    return [_item_score(stats, starts[i], starts[i + 1], config.max_seq_len)
            for i in range(len(chunks))]


def _chunk_stats(model: V1Model, tokens: np.ndarray, positions: np.ndarray,
                 targets: np.ndarray, batch_index: np.ndarray, seed: int,
                 tokens_per_pass: int, autocast: torch.dtype | None) -> _ChunkStats:
    num_chunks, seq = tokens.shape
    dim = model.config.embedding_dim
    ce_sum = np.empty(num_chunks)
    sigreg_mean = np.empty(num_chunks)
    representation_mean = np.empty((num_chunks, dim))
    per_pass = max(1, tokens_per_pass // seq)
    device = model.device
    was_training = model.training
    model.eval()
    pinned = canonical_precision() if autocast is None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), pinned:
            for start in range(0, num_chunks, per_pass):
                rows = slice(start, start + per_pass)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    r = model.encode(torch.from_numpy(tokens[rows]).to(device),
                                     torch.from_numpy(positions[rows]).to(device))
                    logits = model.predict(r)
                # Statistics in at least float32, whatever autocast the caller has open.
                with torch.autocast(device.type, enabled=False):
                    r = r.to(torch.promote_types(r.dtype, torch.float32))
                    ce = F.cross_entropy(
                        logits.to(r.dtype).flatten(0, 1),
                        torch.from_numpy(targets[rows]).to(device).flatten(),
                        ignore_index=PAD_TOKEN, reduction="none")
                    ce_sum[rows] = ce.view(-1, seq).sum(dim=1).double().cpu().numpy()
                    representation_mean[rows] = r.mean(dim=1).double().cpu().numpy()
                    sigreg_mean[rows] = _sigreg_means(r, batch_index[rows], seed)
    finally:
        model.train(was_training)
    return _ChunkStats(ce_sum, sigreg_mean, representation_mean)


def _sigreg_means(r: torch.Tensor, batch_index: np.ndarray, seed: int) -> np.ndarray:
    """Mean SIGReg statistic of each chunk of r [n, S, D], with batch k's noise (seed + k)."""
    out = np.empty(r.shape[0])
    block = _SIGREG_BLOCK_TOKENS_CPU if r.device.type == "cpu" else _SIGREG_BLOCK_TOKENS
    for k in np.unique(batch_index):
        directions = _directions(seed + int(k), r.shape[-1], r.device, r.dtype)
        (ids,) = np.nonzero(batch_index == k)
        projections = r[torch.from_numpy(ids).to(r.device)].flatten(0, 1) @ directions
        # float64 rotations: the canonical statistic, closer to exact than float32.
        stat = torch.cat([characteristic_error(projections[i:i + block].double()).to(r.dtype)
                          for i in range(0, projections.shape[0], block)])
        out[ids] = stat.view(len(ids), -1).mean(dim=1).double().cpu().numpy()
    return out


def _item_score(stats: _ChunkStats, first: int, end: int, seq: int) -> ModelScore:
    """Regroup an item's chunks into batches of 16; running means over batches."""
    losses, embeddings = [], []
    for start in range(first, end, CHUNKS_PER_BATCH):
        rows = slice(start, min(start + CHUNKS_PER_BATCH, end))
        size = rows.stop - rows.start
        cross_entropy = stats.ce_sum[rows].sum() / (size * seq)  # PAD targets counted
        losses.append(cross_entropy + SIGREG_COEFFICIENT * stats.sigreg_mean[rows].mean())
        embeddings.append(stats.representation_mean[rows].mean(axis=0))
    return ModelScore(float(np.mean(losses)), np.mean(embeddings, axis=0).astype(np.float32))
