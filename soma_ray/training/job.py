"""The Ray Train job: `train(config, corpus)` runs a TorchTrainer over `config.num_workers`
workers and returns the trained weights with the held-out score before and after.

Resuming: Ray Train restarts failed workers from the latest checkpoint (`max_failures`), and a
run started again with the same `name` and `storage_path` continues from that run's latest
checkpoint rather than from step 0.
"""

from __future__ import annotations

import dataclasses
import os
import queue as queue_module
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue

from soma_ray.model import V1Model, save_weights, score_model
from soma_ray.training.config import TrainConfig
from soma_ray.training.corpus import (CorpusSource, CorpusSplit, read_corpus, scoring_bytes,
                                      split_corpus)
from soma_ray.training.loop import (StepRunner, TrainingLoss, check_init_weights, initial_model,
                                  make_optimizer)

STATE_FILE = "state.pt"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_STORAGE = Path.home() / ".soma" / "training"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run produced. `history` holds one metrics dict per step of the whole run
    (steps before a resume included); losses are `score_model` losses on held-out bytes."""

    weights: Path
    steps: int
    loss_before: float
    loss_after: float
    history: list[dict]
    checkpoint: Path


def prepare_corpus(corpus: CorpusSource = None, held_out_fraction: float = 0.05) -> CorpusSplit:
    """Read and split a corpus: the checks `train` does first, for callers that want the
    corpus errors before Ray starts."""
    return split_corpus(read_corpus(corpus), held_out_fraction)


def train(config: TrainConfig, corpus: CorpusSource | CorpusSplit = None, *,
          out: str | os.PathLike | None = None, name: str = "soma-train",
          storage_path: str | os.PathLike | None = None, max_failures: int = 0,
          on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on `corpus` (see `read_corpus`, or a `prepare_corpus` split) with Ray Train;
    copy the weights to `out` if given.

    Needs a Ray connection (`ray.init`); corpus and `config.init` errors are raised before any
    worker starts. `on_step` is called in this thread with each step's metrics, plus the `pid`
    of the rank-0 worker process that reported them.
    """
    split = corpus if isinstance(corpus, CorpusSplit) else prepare_corpus(
        corpus, config.held_out_fraction)
    if config.init is not None:
        check_init_weights(config)  # a wrong init file fails here, not inside every worker
    progress = Queue(actor_options={"num_cpus": 0}) if on_step else None
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": config, "split": ray.put(split), "progress": progress},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=RunConfig(
            name=name, storage_path=str(storage_path or DEFAULT_STORAGE),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures)))
    try:
        result = _fit(trainer, progress, on_step)
    finally:
        if progress is not None:
            progress.shutdown()
    return _finished(result.checkpoint, out)


def _fit(trainer: TorchTrainer, progress: Queue | None, on_step):
    """Run `trainer.fit()` while handing the workers' per-step metrics to `on_step`."""
    if progress is None:
        return trainer.fit()
    outcome: dict = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    while thread.is_alive() or not progress.empty():
        try:
            on_step(progress.get(timeout=0.2))
        except queue_module.Empty:
            pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _finished(checkpoint: Checkpoint, out: str | os.PathLike | None) -> TrainResult:
    directory = Path(checkpoint.path)
    state = torch.load(directory / STATE_FILE, weights_only=True)
    weights = directory / WEIGHTS_FILE
    if out is not None:
        shutil.copyfile(weights, out)
        weights = Path(out)
    return TrainResult(weights=weights, steps=state["step"], loss_before=state["loss_before"],
                       loss_after=state["loss_after"], history=state["history"],
                       checkpoint=directory)


def _train_worker(loop_config: dict) -> None:
    """Per-worker loop: restore, step, report metrics every step and a checkpoint every
    `checkpoint_every` steps and at the end (rank 0 writes it)."""
    config: TrainConfig = loop_config["config"]
    split: CorpusSplit = ray.get(loop_config["split"])
    progress: Queue | None = loop_config["progress"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    model, optimizer, state = _start_or_resume(config, ray.train.get_checkpoint(), device)
    held_out = scoring_bytes(split.held_out, config.eval_bytes)
    if state["loss_before"] is None:
        state["loss_before"] = _held_out_loss(model, held_out)

    runner = StepRunner(config, split, ray.train.torch.prepare_model(TrainingLoss(model)),
                        optimizer, device, rank, world)
    for step in range(state["step"], config.steps):
        metrics = runner.run(step)
        state["step"] = step + 1
        state["history"].append(metrics)
        last = step + 1 == config.steps
        if last:
            state["loss_after"] = _held_out_loss(model, held_out)
            metrics = {**metrics, "loss_before": state["loss_before"],
                       "loss_after": state["loss_after"]}
        if rank == 0 and progress is not None:
            progress.put_nowait({**metrics, "pid": os.getpid()})
        if last or (step + 1) % config.checkpoint_every == 0:
            _report_with_checkpoint(metrics, state, model, optimizer, rank, last)
        else:
            ray.train.report(metrics)


def _start_or_resume(config: TrainConfig, checkpoint: Checkpoint | None, device: torch.device):
    """The model (in train mode), optimizer and run state to go on from: the run's checkpoint
    if it has one, the initial model at step 0 otherwise. A resume never reads `config.init`:
    the checkpoint overwrites every weight, and the file may be large."""
    if checkpoint is None:
        model = initial_model(config).to(device).train()
        state = {"step": 0, "loss_before": None, "loss_after": None, "history": []}
        return model, make_optimizer(model, config), state
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location=device, weights_only=True)
    with torch.device("meta"):  # no init work: the parameters become the saved tensors
        model = V1Model(config.model)
    model.load_state_dict(state.pop("model"), assign=True)
    optimizer = make_optimizer(model.train(), config)
    optimizer.load_state_dict(state.pop("optimizer"))
    return model, optimizer, state


def _held_out_loss(model: V1Model, data: bytes) -> float:
    """The network's scoring loss (spec/model.md, seed 0) on the held-out bytes (scoring puts
    the model in eval mode and back)."""
    return float(score_model(model, data, seed=0).loss)


def _report_with_checkpoint(metrics: dict, state: dict, model: V1Model, optimizer, rank: int,
                            final: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            torch.save({**state, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict()}, Path(directory) / STATE_FILE)
            if final:
                save_weights(model, Path(directory) / WEIGHTS_FILE)
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
