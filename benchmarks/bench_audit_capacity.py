"""Audit capacity (issue 20): how many filled targets per second the committee can audit, against
the reference network's difficulty target of one fill per second; scoring's share of an audit;
and the sampling audits' latency (fill → verdict) p50/p99 while a crowd mines.

    .venv/bin/python benchmarks/bench_audit_capacity.py [--miners 16] [--rounds 4] [--concurrency 4]

Runs its own local Ray (2 CPUs) with a 4-validator localnet (the small V1 genesis models), its
services and audit workers, in a temporary data dir:

1. **While the crowd mines**: `--miners` scripted miners (honest and lazy, a tenth fraudulent,
   no challengers) play `--rounds` rounds in 2 crowd actors; the audit workers sample every fill
   as they come. Reported: fills, the workers' coverage and latency p50/p99 (their ledgers) and
   the fills per second the crowd made.
2. **Capacity**: every filled target is then audited again from this process, as the committee
   does it (`SomaClient.verify` on the Ray path), once one at a time and once `--concurrency` at
   once (one per validator, each fill audited once), timed: fills per second, the time inside the
   scoring requests over the time of the audits (scoring's share) and per audit.

On one machine the four validators share one scoring service (here: one CPU replica); on a real
network each validator scores on its own hardware, so the committee's capacity is about the
per-validator figure times the committee size (printed too).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import ray

from actors import network as net
from actors.audit import sampling_coverage
from actors.crowd import crowd_stats, launch_crowd, stop_crowd
from bench_gateway import free_port
from bench_localnet import percentile
from soma_ray.client import SomaClient
from soma_ray.protocol.state import CHALLENGE
from soma_ray.strategies import Stats, crowd_mix, roster
from soma_ray.strategies.decide import LAZY_RATE
from soma_ray.strategies.roster import MINER_ROLES

REFERENCE_FILLS_PER_S = 1.0  # the reference network's difficulty target: one fill a second
DRAIN_DEADLINE_S = 600.0


def rounds(crowd, mine: bool) -> None:
    ray.get([h.step.remote(mine) for h in crowd])


def settled(network) -> bool:
    found = ray.get([w.sampling.remote() for w in network.audit_workers], timeout=60)
    return all(s["pending"] == 0 and not s["open"] for s in found)


async def mine(network, crowd, rounds_: int) -> float:
    """The crowd's mining rounds, then quiet rounds until every fill is sampled and no challenge
    is open; returns the mining wall time."""
    client = await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)
    started = time.monotonic()
    for _ in range(rounds_):
        rounds(crowd, mine=True)
    mined_s = time.monotonic() - started
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    while time.monotonic() < deadline and not (settled(network) and not await client.get_object_ids(CHALLENGE)):
        rounds(crowd, mine=False)
        await asyncio.sleep(0.5)
    return mined_s


class TimedScoring:
    """Wraps the client's scoring requests (what `verify` calls) to sum the time spent in them."""

    def __init__(self, client: SomaClient) -> None:
        self.inner, self.seconds, self.calls = client._score_request, 0.0, 0
        client._score_request = self

    async def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


async def capacity(network, concurrency: int) -> dict:
    """Every filled target audited once, `concurrency` at a time, timed."""
    client = await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)
    timed = TimedScoring(client)
    targets = [t.id for t in await client.get_targets("filled")] + [t.id for t in await client.get_targets("claimable")]
    limit = asyncio.Semaphore(concurrency)
    durations: list[float] = []

    async def one(target_id: bytes) -> None:
        async with limit:
            started = time.perf_counter()
            await client.verify(target_id)
            durations.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(one(t) for t in targets))
    wall = time.monotonic() - started
    return {"fills": len(targets), "wall_s": wall, "fills_per_s": len(targets) / wall if wall else float("nan"),
            "audit_s_p50": percentile(durations, 0.5) if durations else float("nan"),
            "scoring_share": timed.seconds / sum(durations) if durations else float("nan"),
            "scoring_calls": timed.calls}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--miners", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4, help="audits at once (one per validator)")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="soma-bench")
    config = net.NetworkConfig(data_dir=tempfile.mkdtemp(prefix="soma-bench-audit-"), validators=4,
                               namespace="soma-bench", http_port=free_port(), epoch_duration_ms=3_600_000,
                               genesis_weights=True)
    network = net.start(config)
    network.start_services(scoring_device="cpu")
    try:
        crowd = launch_crowd(network.config, roster(crowd_mix(args.miners, 0.1, LAZY_RATE), 0), args.actors, seed=0)
        try:
            mined_s = asyncio.run(mine(network, crowd, args.rounds))
            stats = crowd_stats(crowd)
        finally:
            stop_crowd(network.config.namespace, network.config.prefix)
        miners = Stats()
        for role in MINER_ROLES:
            miners.add(stats.get(role, Stats()))
        found = sampling_coverage(network.audit_workers)
        print(f"while the crowd mines ({args.miners} miners, {args.rounds} rounds, {mined_s:.1f} s): "
              f"{miners.submissions} fills ({miners.submissions / mined_s:.2f}/s), sampled "
              f"{found.audited}/{found.assigned - found.moot} within their window, {found.frauds} frauds found; "
              f"latency fill→verdict p50 {found.latency_p50_s:.1f} s, p99 {found.latency_p99_s:.1f} s", flush=True)
        serial = asyncio.run(capacity(network, 1))
        print(f"one audit at a time: {serial['fills']} fills in {serial['wall_s']:.1f} s = {serial['fills_per_s']:.2f} "
              f"fills/s, audit p50 {serial['audit_s_p50']:.2f} s, scoring {serial['scoring_share']:.0%} of it", flush=True)
        measured = asyncio.run(capacity(network, args.concurrency))
        rate = measured["fills_per_s"]
        print(f"capacity: {measured['fills']} fills audited in {measured['wall_s']:.1f} s, {args.concurrency} at once: "
              f"{rate:.2f} fills/s on this machine (one shared scoring replica) = "
              f"x{rate / REFERENCE_FILLS_PER_S:.2f} the reference's 1 fill/s; audit p50 "
              f"{measured['audit_s_p50']:.2f} s, scoring {measured['scoring_share']:.0%} of the audit time "
              f"({measured['scoring_calls']} scoring calls)")
        print(f"a committee of {config.validators}, each scoring on a machine like this one (each fill is audited "
              f"by one of them): about {rate * config.validators:.2f} fills/s "
              f"(x{rate * config.validators / REFERENCE_FILLS_PER_S:.2f} the reference)")
    finally:
        network.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
