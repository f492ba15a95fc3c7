"""Localnet figures on this machine: start to first checkpoint, finalized transfers per second,
submit-to-finality latency (p50/p99), and the recovery time of a killed validator.

    .venv/bin/python benchmarks/bench_localnet.py [--validators 4] [--senders 4] [--per-sender 100]

Runs its own local Ray (2 CPUs, actors with num_cpus=0) and a localnet in a temporary data dir.
The loaded phase awaits one `SomaClient.submit` per transaction; the client sends what is
submitted in one event-loop turn as `submit_batch` calls (see docs/localnet.md for figures).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time

import ray

from actors import network as net
from soma_ray.client import SomaClient
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.types import Transaction, Transfer


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_for_sequence(network: net.Network, at_least: int, indices=None) -> dict:
    chosen = indices if indices is not None else range(len(network.validators))
    while True:
        found = ray.get([network.validators[i].status.remote() for i in chosen])
        if all(s.sequence is not None and s.sequence >= at_least for s in found):
            return found
        time.sleep(0.02)


async def in_cluster_client(network: net.Network) -> SomaClient:
    return await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)


async def sequential_latencies(client: SomaClient, count: int) -> list[float]:
    """One transfer at a time: submit-to-finality latency without queueing."""
    sender, recipient = preset_keypair("user", 3), preset_keypair("bench-recipient", 0).address
    latencies = []
    for _ in range(count):
        sent = time.perf_counter()
        await client.transfer(sender, recipient, 1)
        latencies.append(time.perf_counter() - sent)
    return latencies


async def transfers(client: SomaClient, senders: int, per_sender: int) -> tuple[float, list[float]]:
    """Every sender pipelines `per_sender` transfers (consecutive nonces, all in flight at once)."""
    system = await client.get_system_state()
    base_fee, chain_id = system.parameters.base_fee, system.chain_id
    recipient = preset_keypair("bench-recipient", 0).address
    signed = []
    for s in range(senders):
        key = preset_keypair("user", s)
        nonce = (await client.get_account(key.address)).nonce
        signed += [encode(sign_transaction(key, Transaction(key.address, nonce + i,
                                                             Transfer(recipient, 1), base_fee), chain_id))
                   for i in range(per_sender)]
    latencies: list[float] = []

    async def one(data: bytes) -> None:
        sent = time.perf_counter()
        await client.submit(data)
        latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    await asyncio.gather(*(one(data) for data in signed))
    return len(signed) / (time.perf_counter() - start), latencies


async def in_cluster(network: net.Network, measure):
    return await measure(await in_cluster_client(network))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-sender", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="soma-bench")
    config = net.NetworkConfig(data_dir=tempfile.mkdtemp(prefix="soma-bench-"),
                               validators=args.validators, namespace="soma-bench")

    started = time.perf_counter()
    network = net.start(config)
    launched = time.perf_counter()
    wait_for_sequence(network, 0)
    first = time.perf_counter()
    print(f"start: actors ready {launched - started:.2f} s, first checkpoint after {first - started:.2f} s")

    alone = asyncio.run(in_cluster(network, lambda client: sequential_latencies(client, 30)))
    print(f"one transfer at a time (incl. reading the nonce): p50 {percentile(alone, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(alone, 0.99) * 1000:.0f} ms")
    rate, latencies = asyncio.run(in_cluster(
        network, lambda client: transfers(client, args.senders, args.per_sender)))
    print(f"{len(latencies)} transfers in flight at once: {rate:.1f} finalized tx/s, latency "
          f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
          f"mean {statistics.mean(latencies) * 1000:.0f} ms")

    victim = 1
    others = [i for i in range(args.validators) if i != victim]
    status = ray.get(network.validators[victim].status.remote())
    os.kill(status.pid, signal.SIGKILL)
    killed = time.perf_counter()
    target = max(s.sequence for s in ray.get([network.validators[i].status.remote() for i in others]))
    wait_for_sequence(network, target + 1, others)
    progressed = time.perf_counter()
    wait_for_sequence(network, target + 1, [victim])
    recovered = time.perf_counter()
    print(f"kill validator {victim}: others commit the next checkpoint after {progressed - killed:.2f} s; "
          f"it restarts, recovers from LMDB and is caught up after {recovered - killed:.2f} s")
    network.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
