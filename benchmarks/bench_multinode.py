"""A testnet's validators on separate Ray nodes against all on one node, on this machine:
finalized transfers per second and submit-to-finality p50, printed with their ratios.

    .venv/bin/python benchmarks/bench_multinode.py [--senders 4] [--per-sender 100] [--rounds 2]

One `ray.cluster_utils.Cluster` (a head and one node per validator, raylets of this process
only) hosts both layouts in turn, each a fresh 4-validator testnet (actors/testnet.py) in its
own namespace, without services; the load is bench_localnet's (pipelined transfers from funded
senders, then one transfer at a time). Rounds alternate the layouts so drift hits both.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile

import ray
from ray.cluster_utils import Cluster

from actors.testnet import HEAD_RESOURCE, TestnetSettings, start_testnet
from bench_localnet import (
    in_cluster, percentile, sequential_latencies, transfers, wait_for_sequence,
)
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA

VALIDATORS = 4
SENDERS = 4  # bench_localnet's senders and its one-at-a-time sender are preset users 0..3
LAYOUTS = {
    "one node": {"validator": {"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}}},
    "separate nodes": {},  # the testnet default: validator<i> on its own node
}


def measure(layout: str, round_: int, senders: int, per_sender: int) -> dict:
    settings = TestnetSettings(
        data_dir=tempfile.mkdtemp(prefix="soma-bench-multinode-"), validators=VALIDATORS,
        namespace=f"bench-{round_}-{layout.replace(' ', '-')}", services=False,
        placement=LAYOUTS[layout],
        balances=tuple((preset_keypair("user", s).address, 1_000_000 * SHANNONS_PER_SOMA)
                       for s in range(SENDERS)))
    network = start_testnet(settings, detached=False, timeout_s=300)
    try:
        wait_for_sequence(network, 1)
        rate, loaded = asyncio.run(in_cluster(network, lambda c: transfers(c, senders, per_sender)))
        alone = asyncio.run(in_cluster(network, lambda c: sequential_latencies(c, 20)))
    finally:
        network.stop()
    return {"tx/s": rate, "loaded p50 ms": percentile(loaded, 0.5) * 1000,
            "alone p50 ms": percentile(alone, 0.5) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=SENDERS, choices=range(1, SENDERS + 1))
    parser.add_argument("--per-sender", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        for i in range(VALIDATORS):
            cluster.add_node(num_cpus=0, resources={f"validator{i}": 1})
        ray.init(address=cluster.address, log_to_driver=False)
        found: dict[str, list[dict]] = {layout: [] for layout in LAYOUTS}
        for round_ in range(args.rounds):
            order = list(LAYOUTS) if round_ % 2 == 0 else list(reversed(LAYOUTS))
            for layout in order:
                found[layout].append(measure(layout, round_, args.senders, args.per_sender))
                print(f"round {round_} {layout}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in found[layout][-1].items()), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    medians = {layout: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for layout, runs in found.items()}
    one, separate = medians["one node"], medians["separate nodes"]
    for key in one:
        print(f"{key}: one node {one[key]:.1f}, separate nodes {separate[key]:.1f}, "
              f"ratio separate/one {separate[key] / one[key]:.2f}")


if __name__ == "__main__":
    main()
