"""Metrics overhead: finalized transfers per second with the soma_* metrics recorded against
the same load with them switched off (issue 13 wants a ratio of at least 0.95).

    .venv/bin/python benchmarks/bench_metrics.py [--rounds 3] [--senders 4] [--per-sender 250]

One local Ray (2 CPUs) runs two 4-validator localnets at once, one whose actors get
SOMA_METRICS=0 in their runtime_env (soma_ray/metrics.py then records nothing) and one with
metrics on; the load (bench_localnet's pipelined transfers, through an in-cluster client)
goes to one network at a time, alternating ABBA so drift in the machine's load falls on both.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import ray

from soma_ray import metrics
from actors import network as net
from bench_localnet import in_cluster, transfers, wait_for_sequence

ACTOR_KINDS = ("validator", "clock", "target_state")


def start(name: str, metrics_on: bool) -> net.Network:
    env = {"env_vars": {"SOMA_METRICS": "1" if metrics_on else "0"}}
    config = net.NetworkConfig(data_dir=tempfile.mkdtemp(prefix=f"soma-bench-{name}-"), validators=4,
                               namespace="soma-bench", prefix=f"{name}-",
                               placement={kind: {"runtime_env": env} for kind in ACTOR_KINDS})
    network = net.start(config)
    wait_for_sequence(network, 0)
    return network


def rate(network: net.Network, senders: int, per_sender: int) -> float:
    tx_per_s, _ = asyncio.run(in_cluster(network, lambda client: transfers(client, senders, per_sender)))
    return tx_per_s


def recorded(network: net.Network) -> float:
    """Finalized transactions the network's validators exported (0 with metrics off)."""
    label = metrics.network_label(network.config.namespace, network.config.prefix)
    return metrics.total(metrics.scrape(), metrics.FINALIZED_TRANSACTIONS.exported, network=label)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="ABBA pairs")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-sender", type=int, default=250)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="soma-bench")
    networks = {True: start("metrics-on", True), False: start("metrics-off", False)}
    rate(networks[True], 1, 20)  # warm both paths (first calls, lazy metric objects)
    rate(networks[False], 1, 20)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for pair in range(args.rounds):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for metrics_on in order + order[::-1]:
            rates[metrics_on].append(rate(networks[metrics_on], args.senders, args.per_sender))
        time.sleep(0.5)
    on, off = sum(rates[True]) / len(rates[True]), sum(rates[False]) / len(rates[False])
    print(f"{args.senders * args.per_sender} pipelined transfers per run, {len(rates[True])} runs each")
    print(f"metrics off: {off:.1f} finalized tx/s  ({', '.join(f'{r:.0f}' for r in rates[False])})")
    print(f"metrics on:  {on:.1f} finalized tx/s  ({', '.join(f'{r:.0f}' for r in rates[True])})")
    print(f"ratio on/off: {on / off:.3f} of the means, "
          f"{statistics.median(rates[True]) / statistics.median(rates[False]):.3f} of the medians "
          "(issue 13: at least 0.95)")
    deadline = time.monotonic() + 60  # Ray exports ~10 s after recording
    while not recorded(networks[True]) and time.monotonic() < deadline:
        time.sleep(2)
    print(f"exported finalized transactions (all validators): on {recorded(networks[True]):.0f}, "
          f"off {recorded(networks[False]):.0f}")
    for network in networks.values():
        network.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
