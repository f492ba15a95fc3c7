"""Settings of one training run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from soma_ray.model import V1Config
from soma_ray.training.errors import TrainConfigError

# The guide's recommended dropout, `soma model train`'s default (V1Config's own is 0).
GUIDE_DROPOUT = 0.1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's trajectory; a resumed run must get the same values.

    One optimizer step consumes `micro_batch * grad_accum * num_workers` chunks of
    `model.max_seq_len` bytes.
    """

    model: V1Config = dataclasses.field(default_factory=V1Config.small)
    steps: int = 100
    # The participants' guide's recommended settings: lr 1e-4, micro-batch 2, grad-accum 64
    # (an effective batch of 128 chunks per worker), dropout 0.1 (GUIDE_DROPOUT, set on the
    # model config by `soma model train`).
    micro_batch: int = 2  # chunks per worker per forward pass
    grad_accum: int = 64
    lr: float = 1e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    init: Path | None = None  # fine-tune from this weights file instead of a fresh init
    held_out_fraction: float = 0.05
    eval_bytes: int = 64 * 1024  # held-out bytes scored before and after training
    checkpoint_every: int = 50
    num_workers: int = 1
    use_gpu: bool = False
    # CPUs each worker reserves (> 0 without a GPU: Ray Train refuses a worker that reserves
    # nothing). A fraction runs it beside whatever holds the cluster's CPUs: the game's trainers,
    # whose few steps must not wait for the scoring replicas to give one back.
    cpus_per_worker: float = 1

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch", "grad_accum", "checkpoint_every", "num_workers",
                     "eval_bytes"):
            if getattr(self, name) < 1:
                raise TrainConfigError(name, getattr(self, name), ">= 1")
        for name in ("warmup_steps", "weight_decay", "grad_clip", "seed", "cpus_per_worker"):
            if getattr(self, name) < 0:
                raise TrainConfigError(name, getattr(self, name), ">= 0")
        if not self.use_gpu and not self.cpus_per_worker > 0:
            raise TrainConfigError("cpus_per_worker", self.cpus_per_worker, "> 0 without a GPU")
        if not self.lr > 0:
            raise TrainConfigError("lr", self.lr, "> 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainConfigError("min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        if not 0 <= self.held_out_fraction < 1:
            raise TrainConfigError("held_out_fraction", self.held_out_fraction, "in [0, 1)")

    @property
    def chunks_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.num_workers

    @property
    def tokens_per_step(self) -> int:
        """Positions processed per optimizer step over all workers (PAD included)."""
        return self.chunks_per_step * self.model.max_seq_len
