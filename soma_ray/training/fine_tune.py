"""One epoch of a trainer's fine-tuning (docs/game.md, "Trainers"): its current weights trained
for a few steps on the epoch's documents (the data of the hits its model won and chunks of its
niche corpus), the new weights returned as a weights file's bytes.

- `fine_tune_in_process`: the step loop of `soma_ray.training.loop` in this process (no Ray):
  `soma simulate`;
- `fine_tune_job`: the same settings as a Ray Train job (`soma_ray.training.job.train`), the
  initial weights given as `init`: the trainers of a localnet's crowd.

Both start a fresh AdamW and learning-rate schedule (warmup, cosine) each epoch; the data order
and noise come from `seed`. The trainer's settings (`trainer_config`) are not the guide's: a
small model learns the bytes' statistics in a few steps at a high rate.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from soma_ray.training.config import TrainConfig
from soma_ray.training.corpus import CorpusSplit, Document

TRAINER_STEPS = 10  # optimizer steps per epoch
TRAINER_MICRO_BATCH = 2  # chunks (1 KiB each) per step
TRAINER_LR = 3e-3
TRAINER_WARMUP = 1
EVAL_BYTES = 1_024  # the job scores this much before and after (its held-out document)
# A trainer's Ray Train worker reserves a hundredth of a CPU: enough for Ray Train to place it
# (it refuses a worker reserving nothing), too little to wait on a cluster the network fills.
TRAINER_WORKER_CPUS = 0.01
# A fine-tune job not done by then is given up (its thread and job run on, their weights unused):
# a stalled job must not hold its crowd actor's round.
FINE_TUNE_TIMEOUT_S = 240.0


def trainer_config(steps: int = TRAINER_STEPS, seed: int = 0, **fields) -> TrainConfig:
    """The trainers' settings: small V1, `steps` steps of TRAINER_MICRO_BATCH chunks, lr 3e-3,
    no dropout, one worker."""
    from soma_ray.model import V1Config

    settings = dict(model=V1Config.small(), steps=steps, micro_batch=TRAINER_MICRO_BATCH, grad_accum=1,
                    lr=TRAINER_LR, warmup_steps=TRAINER_WARMUP, seed=seed, eval_bytes=EVAL_BYTES,
                    checkpoint_every=steps)
    return TrainConfig(**{**settings, **fields})


def documents_split(documents: Sequence[bytes]) -> CorpusSplit:
    """The epoch's documents, all trained on; the job's before/after score reads the first."""
    docs = tuple(Document(f"item-{i}", bytes(d)) for i, d in enumerate(documents) if d)
    if not docs:
        raise ValueError("nothing to train on")
    return CorpusSplit(train=docs, held_out=docs[:1])


def fine_tune_in_process(weights: bytes, documents: Sequence[bytes], steps: int = TRAINER_STEPS,
                         seed: int = 0) -> bytes:
    """`weights` trained for `steps` steps on `documents`, in this process; the new weights."""
    import torch

    from soma_ray.model import load_weights, weights_bytes
    from soma_ray.training.loop import StepRunner, TrainingLoss, make_optimizer

    config = trainer_config(steps, seed)
    model = load_weights(weights, config.model).train()
    runner = StepRunner(config, documents_split(documents), TrainingLoss(model), make_optimizer(model, config),
                        torch.device("cpu"))
    for step in range(steps):
        runner.run(step)
    return weights_bytes(model.eval())


def fine_tune_job(weights: bytes, documents: Sequence[bytes], steps: int = TRAINER_STEPS, seed: int = 0,
                  storage: Path | None = None, name: str = "trainer",
                  cpus_per_worker: float = TRAINER_WORKER_CPUS) -> bytes:
    """The same as a Ray Train job (needs a Ray connection): one worker reserving
    `cpus_per_worker` CPUs, its run kept under `storage` only while it runs."""
    from soma_ray.training.job import train

    directory = Path(tempfile.mkdtemp(prefix="soma-trainer-", dir=storage))
    try:
        init = directory / "init.safetensors"
        init.write_bytes(weights)
        config = dataclasses.replace(trainer_config(steps, seed), init=init, cpus_per_worker=cpus_per_worker)
        result = train(config, documents_split(documents), out=directory / "out.safetensors", name=name,
                       storage_path=directory / "runs")
        return Path(result.weights).read_bytes()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class InProcessTraining:
    """A trainer's `Training` in this process, on the caller's thread (`soma simulate`: the
    game stays deterministic)."""

    async def fine_tune(self, weights: bytes, documents: list[bytes], steps: int, seed: int) -> bytes:
        return fine_tune_in_process(weights, documents, steps, seed)

    async def embedding(self, weights: bytes, sample: list[bytes]) -> bytes:
        from soma_ray.model.embedding import model_embedding

        return model_embedding(weights, sample)


class RayTrainTraining:
    """A trainer's `Training` on a Ray cluster: each fine-tune a Ray Train job (`fine_tune_job`),
    run from a thread so that the caller's event loop (a crowd actor's) goes on, given up after
    `timeout_s`; the embedding in a thread too."""

    def __init__(self, name: str, storage: Path | None = None, cpus_per_worker: float = TRAINER_WORKER_CPUS,
                 timeout_s: float = FINE_TUNE_TIMEOUT_S) -> None:
        self.name = name
        self.storage = storage
        self.cpus_per_worker = cpus_per_worker
        self.timeout_s = timeout_s
        self.jobs = 0

    async def fine_tune(self, weights: bytes, documents: list[bytes], steps: int, seed: int) -> bytes:
        import asyncio

        import ray.train

        from soma_ray.strategies.trainer import FineTuneFailed

        self.jobs += 1
        job = asyncio.to_thread(fine_tune_job, weights, documents, steps, seed, self.storage,
                                f"{self.name}-{self.jobs}", self.cpus_per_worker)
        try:
            return await asyncio.wait_for(job, self.timeout_s)
        except TimeoutError as error:
            raise FineTuneFailed(f"{self.name}-{self.jobs} ran past {self.timeout_s:.0f} s") from error
        except ray.train.TrainingFailedError as error:
            raise FineTuneFailed(f"{self.name}-{self.jobs}: {error}") from error

    async def embedding(self, weights: bytes, sample: list[bytes]) -> bytes:
        import asyncio

        from soma_ray.model.embedding import model_embedding

        return await asyncio.to_thread(model_embedding, weights, sample)
