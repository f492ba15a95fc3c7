"""Tokens/s of the Ray Train job (1 worker) against a plain torch loop over the same model,
data and batch size, measured in one process; prints the ratio (target: >= 0.9 on CPU).

Both sides run the same `StepRunner.run` with the same number of torch threads; the Ray side
pays for the worker, `ray.train.report` every step and checkpoints. Throughput is taken over
steps after the first `--skip` (start-up), from step-completion times.

    .venv/bin/python benchmarks/bench_training.py [--steps 30] [--threads 2]
    .venv/bin/python benchmarks/bench_training.py --gpu   # full V1 size, micro-batch 2, bf16

With `--gpu` both sides run on one GPU and the plain loop's peak GPU memory is printed too.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import torch  # noqa: E402

from soma_ray.model import V1Config  # noqa: E402
from soma_ray.training import TrainConfig, prepare_corpus, train  # noqa: E402
from soma_ray.training.loop import (StepRunner, TrainingLoss, initial_model,  # noqa: E402
                                    make_optimizer)


def plain_torch_tokens_per_s(config: TrainConfig, split, skip: int) -> float:
    device = torch.device("cuda" if config.use_gpu else "cpu")
    model = initial_model(config).to(device).train()
    runner = StepRunner(config, split, TrainingLoss(model), make_optimizer(model, config),
                        device)
    times = []
    for step in range(config.steps):
        runner.run(step)
        if config.use_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return _rate(times, skip, config.tokens_per_step)


def ray_train_tokens_per_s(config: TrainConfig, split, skip: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as storage:
        train(config, split, storage_path=storage, name="bench",
              on_step=lambda m: times.append(time.perf_counter()))
    return _rate(times, skip, config.tokens_per_step)


def _rate(times: list[float], skip: int, tokens_per_step: int) -> float:
    return (len(times) - 1 - skip) * tokens_per_step / (times[-1] - times[skip])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=None, help="[4; 2 with --gpu]")
    parser.add_argument("--gpu", action="store_true", help="full V1 size on one GPU, bf16")
    args = parser.parse_args()

    config = TrainConfig(model=V1Config() if args.gpu else V1Config.small(), steps=args.steps,
                         micro_batch=args.micro_batch or (2 if args.gpu else 4),
                         checkpoint_every=args.steps if args.gpu else 10,
                         cpus_per_worker=args.threads,
                         use_gpu=args.gpu, eval_bytes=4096)
    split = prepare_corpus(None, config.held_out_fraction)  # the default corpus: Python's stdlib
    torch.set_num_threads(args.threads)
    ray.init(address="local", num_cpus=args.threads, num_gpus=int(args.gpu),
             include_dashboard=False, log_to_driver=False)
    try:
        before = plain_torch_tokens_per_s(config, split, args.skip)
        if args.gpu:
            torch.cuda.empty_cache()  # give the Ray worker the memory the driver cached
        with_ray = ray_train_tokens_per_s(config, split, args.skip)
        after = plain_torch_tokens_per_s(config, split, args.skip)
    finally:
        ray.shutdown()
    baseline = (before + after) / 2
    print(f"model D={config.model.embedding_dim} L={config.model.num_layers} "
          f"S={config.model.max_seq_len}, micro-batch {config.micro_batch}, "
          f"{config.steps} steps ({args.skip} skipped), {args.threads} torch threads")
    print(f"plain torch loop: {before:,.0f} / {after:,.0f} tokens/s (before / after)")
    print(f"Ray Train, 1 worker: {with_ray:,.0f} tokens/s")
    print(f"ratio Ray Train / plain torch: {with_ray / baseline:.3f}")
    if args.gpu:
        print(f"plain loop peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
