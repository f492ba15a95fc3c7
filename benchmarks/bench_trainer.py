"""A trainer's epoch cost on this machine (docs/game.md, "Trainers"): the fine-tune (default 10
AdamW steps of 2 chunks, small V1) and the publish (the new weights' embedding on its niche
sample, encryption, upload, `commit_model`), and their share of a 60 s localnet epoch.

    .venv/bin/python benchmarks/bench_trainer.py [--epochs 3] [--trainers 1] [--steps 10] [--ray]

One trainer (or more) plays `--epochs` epochs on the in-process simulated network without
miners (`soma_ray.strategies.simulated.SimulatedGame`); the trainers' own clocks
(`Stats.train_s`, `Stats.publish_s`) split each fine-tune from its publish. Without `--ray`
each fine-tune runs in process (`soma simulate`); with `--ray` it is a Ray Train job on a local
Ray of 2 CPUs (`RayTrainTraining`, what a localnet crowd runs), its start-up included. The first
fine-tune of each trainer also downloads its start weights (counted in neither figure). Run it
under the heavy lock.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soma_ray.strategies import Mix, roster  # noqa: E402

EPOCH_S = 60.0  # a localnet epoch (docs/localnet.md)


async def play(game, epochs: int) -> None:
    await game.setup()
    for _ in range(epochs):
        await game.play_epoch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trainers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ray", action="store_true", help="each fine-tune a Ray Train job")
    args = parser.parse_args()

    from soma_ray.strategies.simulated import SimulatedGame

    training = None
    if args.ray:
        import ray

        from soma_ray.training.fine_tune import RayTrainTraining

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        training = RayTrainTraining("bench-trainer", storage=Path(tempfile.mkdtemp(prefix="bench-trainer-")))
    started, cpu = time.perf_counter(), time.process_time()
    game = SimulatedGame(roster(Mix(0, 0, 0), 0, args.trainers), 0, [], training=training, train_steps=args.steps)
    asyncio.run(play(game, args.epochs))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = game.by_role("trainer")
    fine_tune, publish = stats.train_s / stats.trainings, stats.publish_s / stats.trainings
    mode = "Ray Train job" if args.ray else "in process"
    print(f"{stats.trainings} fine-tunes ({mode}, {args.steps} steps of 2 chunks, small V1) in {wall:.1f} s of wall")
    print(f"per epoch and trainer: fine-tune {fine_tune:.2f} s, publish {publish:.2f} s, "
          f"total {fine_tune + publish:.2f} s = {(fine_tune + publish) / EPOCH_S:.1%} of a {EPOCH_S:.0f} s epoch")
    print(f"this process's CPU time: {cpu:.1f} s in all, {cpu / stats.trainings:.2f} s per fine-tune and publish "
          f"(the chain, start-up and the first weights' choice included; a Ray Train job's worker not counted)")


if __name__ == "__main__":
    main()
