"""`soma model ...`: train V1 weights on a byte corpus with Ray Train."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

# torch and Ray Train are imported inside the command: every other `soma` command (and
# `--help`) would otherwise pay seconds of import time for them.

app = typer.Typer(help="Train V1 model weights.", no_args_is_help=True)

MODEL_SIZES = ("small", "v1")


@app.callback()
def model() -> None:
    """Train V1 model weights (a group, so `train` stays a subcommand)."""


@app.command()
def train(
    out: Path = typer.Option(..., help="Where to write the trained weights (safetensors)."),
    config: str = typer.Option("small", help=f"Model size: {', '.join(MODEL_SIZES)}."),
    corpus: Optional[Path] = typer.Option(
        None, help="Directory or file of training bytes [default: Python's standard library]."),
    steps: int = typer.Option(100, help="Optimizer steps."),
    workers: int = typer.Option(1, help="Ray Train workers (data parallel)."),
    init: Optional[Path] = typer.Option(None, help="Fine-tune from this weights file."),
    micro_batch: int = typer.Option(8, help="Chunks per worker per forward pass."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (warmup, then cosine decay)."),
    warmup: int = typer.Option(10, help="Warmup steps."),
    dropout: Optional[float] = typer.Option(None, help="Dropout rate [default: the config's]."),
    seed: int = typer.Option(0, help="Seed of the init, data order and noise."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    gpu: bool = typer.Option(False, help="One GPU per worker, bf16 autocast."),
    name: str = typer.Option("soma-train", help="Run name: rerun with the same name to resume."),
    storage: Optional[Path] = typer.Option(None, help="Checkpoint directory [~/.soma/training]."),
    address: Optional[str] = typer.Option(
        None, help="Ray address host:port [default: $RAY_ADDRESS, else the cluster `soma start` "
        "recorded, else a local Ray for this command]."),
) -> None:
    """Train V1 weights; print progress, then held-out loss before/after and the weights path."""
    import ray

    from soma_ray.training import TrainingError, prepare_corpus
    from soma_ray.training.loop import check_init_weights

    try:
        settings = _settings(config, dropout, steps=steps, num_workers=workers, init=init,
                             micro_batch=micro_batch, grad_accum=grad_accum, lr=lr,
                             warmup_steps=warmup, seed=seed, checkpoint_every=checkpoint_every,
                             use_gpu=gpu)
        split = prepare_corpus(corpus, settings.held_out_fraction)
        if init is not None:
            check_init_weights(settings)  # a wrong-size file fails before Ray starts
    except TrainingError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    connected = _start_ray(address)
    try:
        result = _train_with_progress(settings, split, out, name, storage)
    finally:
        if connected:
            ray.shutdown()
    tokens_per_s = sum(m["tokens_per_s"] for m in result.history) / len(result.history)
    typer.echo(f"trained {result.steps} steps, {tokens_per_s:,.0f} tokens/s per step on average")
    typer.echo(f"held-out loss {result.loss_before:.4f} -> {result.loss_after:.4f}")
    typer.echo(f"weights: {result.weights}")


def _settings(size: str, dropout: float | None, **fields):
    from soma_ray.model import V1Config
    from soma_ray.training import TrainConfig, TrainConfigError

    if size not in MODEL_SIZES:
        raise TrainConfigError("model", size, f"one of {', '.join(MODEL_SIZES)}")
    model = V1Config.small() if size == "small" else V1Config()
    if dropout is not None:
        model = dataclasses.replace(model, dropout_rate=dropout)
    return TrainConfig(model=model, **fields)


def _start_ray(address: str | None) -> bool:
    """Join the network's cluster as every `soma` command finds it (`soma_ray.cluster.connect`:
    --address, else $RAY_ADDRESS, else the cluster `soma start` recorded), else start a local
    Ray for this command; never whatever `address="auto"` finds. A dead or unreachable cluster
    is a one-line error within seconds (exit code 1). A process already connected (the command
    called from Python) keeps its connection: returns whether this command connected, and so
    must disconnect."""
    from soma_ray import cluster

    try:
        return cluster.connect(address, local_fallback=True,
                               local_options={"include_dashboard": False}).connected_here
    except ConnectionError as e:  # cluster.ClusterError, or ray.init's own
        typer.echo(f"error: {(str(e).strip().splitlines() or ['no Ray cluster'])[0]}", err=True)
        raise typer.Exit(1) from None


def _train_with_progress(settings, split, out: Path, name: str, storage: Path | None):
    from soma_ray.training import train as run_training

    with typer.progressbar(length=settings.steps, label="training", show_eta=True,
                           show_pos=True, item_show_func=_describe) as bar:
        done = 0

        def on_step(metrics: dict) -> None:
            nonlocal done
            bar.current_item = metrics
            bar.update(metrics["step"] - done)
            done = metrics["step"]

        return run_training(settings, split, out=out, name=name, storage_path=storage,
                            on_step=on_step)


def _describe(metrics: dict | None) -> str:
    if metrics is None:
        return ""
    return (f"loss {metrics['loss']:.3f}  {metrics['tokens_per_s']:,.0f} tok/s  "
            f"lr {metrics['lr']:.2e}")
