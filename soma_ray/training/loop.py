"""One training step of a V1 model, free of Ray: the Ray Train job and the plain-torch
benchmark baseline run the same code.

Determinism: data rows are a function of (seed, step, micro-batch, rank) and the torch RNG
(dropout, SIGReg noise) is reseeded from (seed, step, rank) before every step, so a run
resumed from a checkpoint repeats an uninterrupted run's trajectory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from soma_ray.model import (PAD_TOKEN, SIGREG_COEFFICIENT, ModelError, V1Model, load_weights,
                            read_weights_header, seeded_model, sigreg, tokenize)
from soma_ray.model.config import SIGREG_SLICES
from soma_ray.training.config import TrainConfig
from soma_ray.training.corpus import ChunkTable, CorpusSplit, chunk_table, sample_indices
from soma_ray.training.errors import InitWeightsError
from soma_ray.training.schedule import learning_rate


def initial_model(config: TrainConfig) -> V1Model:
    """A fresh model (spec/model.md's init, seeded by `config.seed`) or the `init` weights."""
    if config.init is None:
        return seeded_model(config.model, config.seed)
    try:
        return load_weights(config.init, config.model)
    except (ModelError, OSError) as e:
        raise InitWeightsError(str(config.init), str(e)) from e


def check_init_weights(config: TrainConfig) -> None:
    """Raise InitWeightsError unless `config.init` fits `config.model`: the file's safetensors
    header (sizes, tensor names, shapes, dtypes, file length) is read, no tensor is."""
    try:
        read_weights_header(config.init, config.model)
    except (ModelError, OSError) as e:
        raise InitWeightsError(str(config.init), str(e)) from e


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm parameters keep theirs."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


class TrainingLoss(nn.Module):
    """Cross-entropy over non-PAD targets + 0.02 · SIGReg(R, noise): the module DDP wraps,
    since DDP needs the whole computation inside one forward."""

    def __init__(self, model: V1Model):
        super().__init__()
        self.model = model

    def forward(self, tokens, positions, targets, noise):
        representations = self.model.encode(tokens, positions)
        logits = self.model.predict(representations)
        ce = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(),
                             ignore_index=PAD_TOKEN)
        sig = sigreg(representations.float(), noise)
        return ce + SIGREG_COEFFICIENT * sig, ce.detach(), sig.detach()


def chunk_batch(split: CorpusSplit, table: ChunkTable, rows: np.ndarray, seq_len: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, positions and targets [len(rows), S] of the given chunk-table rows, exactly as
    the tokenizer cuts the whole document (positions are the document's byte offsets)."""
    parts = []
    for row in rows:
        data = split.train[table.document[row]].data
        offset = int(table.chunk[row]) * seq_len
        chunk = tokenize(data[offset:offset + seq_len], seq_len)
        parts.append((chunk.tokens, chunk.positions + offset, chunk.targets))
    return tuple(torch.from_numpy(np.concatenate(p)).to(device) for p in zip(*parts))


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


@dataclasses.dataclass
class StepRunner:
    """Runs optimizer steps of `loss_module` (a TrainingLoss, maybe DDP-wrapped) on one worker."""

    config: TrainConfig
    split: CorpusSplit
    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.table = chunk_table(self.split.train, self.config.model.max_seq_len)

    def run(self, step: int) -> dict:
        """Take optimizer step `step` (0-based); returns its metrics, averaged over workers."""
        cfg = self.config
        started = time.perf_counter()
        lr = learning_rate(step, peak=cfg.lr, warmup_steps=cfg.warmup_steps,
                           total_steps=cfg.steps, min_ratio=cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(cfg.seed, step, self.rank))
        totals = torch.zeros(3, device=self.device)
        for micro in range(cfg.grad_accum):
            tokens, positions, targets = chunk_batch(
                self.split, self.table, self._rows(step, micro), cfg.model.max_seq_len,
                self.device)
            noise = torch.randn(cfg.model.embedding_dim, SIGREG_SLICES, device=self.device)
            with self._sync_grads(micro == cfg.grad_accum - 1):
                with self._autocast():
                    loss, ce, sig = self.loss_module(tokens, positions, targets, noise)
                (loss / cfg.grad_accum).backward()
            totals += torch.stack([loss.detach(), ce, sig]) / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(self.loss_module.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:
            dist.all_reduce(totals)
            totals /= self.world_size
        loss, ce, sig = totals.tolist()
        seconds = time.perf_counter() - started
        return {"step": step + 1, "loss": loss, "ce": ce, "sigreg": sig, "lr": lr,
                "grad_norm": float(grad_norm), "tokens_per_s": cfg.tokens_per_step / seconds}

    def _rows(self, step: int, micro: int) -> np.ndarray:
        cfg = self.config
        first = ((step * cfg.grad_accum + micro) * self.world_size + self.rank) * cfg.micro_batch
        return sample_indices(cfg.seed, len(self.table), first, cfg.micro_batch)

    def _sync_grads(self, last_micro_batch: bool):
        """DDP averages gradients once per step, on the last micro-batch."""
        no_sync = getattr(self.loss_module, "no_sync", None)
        return contextlib.nullcontext() if last_micro_batch or no_sync is None else no_sync()

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
