"""The game at scale: hits per epoch and audits per minute against the number of logical miners
(16, 64, 256 by default), the challenge-to-resolution latency p50, and where the participants'
time goes (scoring's share of their steps); ratios against the first (smallest) crowd.

    .venv/bin/python benchmarks/bench_game.py [--sizes 16 64 256] [--epochs 2] [--rounds 2]

Runs its own local Ray (2 CPUs) with a 4-validator localnet, its services and audits, in a
temporary data dir. Each size is a fresh crowd (its own seed, so its own keys) in `--actors`
crowd actors on the same network: a tenth of the miners cheat, a fifth are lazy, one
challenger per 16 miners. Every epoch plays `--rounds` rounds, then quiet rounds until no
challenge is open, then the epoch is advanced by hand.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import ray

from actors import network as net
from actors.crowd import crowd_stats, launch_crowd, stop_crowd
from bench_gateway import free_port
from bench_localnet import percentile
from soma_ray.client import SomaClient
from soma_ray.protocol.state import CHALLENGE
from soma_ray.strategies import Stats, crowd_mix, roster
from soma_ray.strategies.decide import LAZY_RATE
from soma_ray.strategies.roster import MINER_ROLES

DRAIN_DEADLINE_S = 600.0


def rounds(crowd, mine: bool) -> None:
    ray.get([h.step.remote(mine) for h in crowd])


async def play(network, crowd, epochs: int, rounds_per_epoch: int) -> float:
    """Play the epochs; returns the wall time they took."""
    client = await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)
    started = time.monotonic()
    for _ in range(epochs):
        for _ in range(rounds_per_epoch):
            rounds(crowd, mine=True)
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while await client.get_object_ids(CHALLENGE) and time.monotonic() < deadline:
            rounds(crowd, mine=False)
        await client.advance_epoch()
    rounds(crowd, mine=False)
    return time.monotonic() - started


def measure(network, miners: int, actors: int, epochs: int, rounds_per_epoch: int, seed: int) -> dict:
    specs = roster(crowd_mix(miners, 0.1, LAZY_RATE), max(1, miners // 16))
    crowd = launch_crowd(network.config, specs, actors, seed=seed)
    try:
        wall_s = asyncio.run(play(network, crowd, epochs, rounds_per_epoch))
        stats = crowd_stats(crowd)
    finally:
        stop_crowd(network.config.namespace, network.config.prefix)
    everyone, miners_total = Stats(), Stats()
    for role, found in stats.items():
        if role == "rounds":
            continue
        everyone.add(found)
        if role in MINER_ROLES:
            miners_total.add(found)
    challengers = stats.get("challenger", Stats())
    resolved = challengers.challenges_won + challengers.challenges_lost
    return {
        "hits/epoch": miners_total.submissions / epochs,
        "audits/min": resolved / (wall_s / 60),
        "resolution p50 s": percentile(challengers.resolution_s, 0.5) if challengers.resolution_s else float("nan"),
        "scoring share": everyone.score_s / everyone.step_s if everyone.step_s else float("nan"),
        "wall s": wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="soma-bench")
    config = net.NetworkConfig(data_dir=tempfile.mkdtemp(prefix="soma-bench-game-"), validators=4,
                               namespace="soma-bench", http_port=free_port(), epoch_duration_ms=3_600_000,
                               genesis_weights=True)
    network = net.start(config)
    network.start_services(scoring_device="cpu")
    try:
        results = {}
        for seed, size in enumerate(args.sizes):
            results[size] = measure(network, size, args.actors, args.epochs, args.rounds, seed)
            print(f"{size:4d} miners: " + ", ".join(f"{k} {v:.3g}" for k, v in results[size].items()), flush=True)
        base = results[args.sizes[0]]
        for size, found in results.items():
            ratios = ", ".join(f"{k} x{found[k] / base[k]:.2f}" for k in ("hits/epoch", "audits/min", "resolution p50 s")
                               if base[k] and base[k] == base[k])
            print(f"{size:4d} / {args.sizes[0]} miners: {ratios}")
    finally:
        network.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
