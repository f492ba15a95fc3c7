"""The gateway against the in-cluster path: finalized transfers per second with the SDK's
batched HTTP submits (`POST /tx/batch`) against the same load through Ray calls, and the
single-transfer p50 of each.

    .venv/bin/python benchmarks/bench_gateway.py [--senders 4] [--per-sender 100]

Runs its own local Ray (2 CPUs) with a 4-validator localnet and its services (Network.start_services)
in a temporary data dir; prints the figures and the ratios HTTP / in-cluster (target >= 0.7).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile

import ray

from actors import network as net
from bench_localnet import in_cluster_client, percentile, sequential_latencies, transfers, wait_for_sequence
from soma_ray.client import SomaClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def measure(connect, senders: int, per_sender: int) -> tuple[float, float, float]:
    """(finalized tx/s, p50 under load, p50 one at a time) of the client `connect()` gives."""
    client = await connect()
    alone = await sequential_latencies(client, 30)
    rate, latencies = await transfers(client, senders, per_sender)
    await client.close()
    return rate, percentile(latencies, 0.5), percentile(alone, 0.5)


async def http_client(url: str) -> SomaClient:
    return await SomaClient(rpc_url=url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-sender", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="soma-bench")
    config = net.NetworkConfig(data_dir=tempfile.mkdtemp(prefix="soma-bench-"), validators=4,
                               namespace="soma-bench", http_port=free_port())
    network = net.start(config)
    wait_for_sequence(network, 0)
    url = network.start_services(scoring_device="cpu")
    for round_ in range(args.rounds):  # alternate, so neither path gets the quieter machine
        ray_rate, ray_p50, ray_alone = asyncio.run(
            measure(lambda: in_cluster_client(network), args.senders, args.per_sender))
        http_rate, http_p50, http_alone = asyncio.run(
            measure(lambda: http_client(url), args.senders, args.per_sender))
        print(f"round {round_}: {args.senders * args.per_sender} in flight | in-cluster {ray_rate:.0f} tx/s "
              f"p50 {ray_p50 * 1000:.0f} ms, alone p50 {ray_alone * 1000:.0f} ms | HTTP {http_rate:.0f} tx/s "
              f"p50 {http_p50 * 1000:.0f} ms, alone p50 {http_alone * 1000:.0f} ms | "
              f"HTTP/in-cluster tx/s {http_rate / ray_rate:.2f}")
    network.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
