"""A miner's submission on a localnet: `submit_data` (commit, wait for finality, reveal) and
`soma submit FILE` end to end for a 1 KiB file (a fresh process: import, score through the
scoring service, upload, commit, reveal), each against a baseline measured in the same run:
one plain transfer's finality through the SDK, and `soma transfer` as a fresh process.

    .venv/bin/python benchmarks/bench_submit.py [--rounds 5]

Runs its own local Ray (2 CPUs) with a 4-validator localnet, real genesis weights and its
services in a temporary data dir; rounds alternate the measurements so none gets the quieter
machine. Prints the p50 of each and the ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from actors import network as net
from bench_gateway import free_port
from bench_localnet import percentile, wait_for_sequence
from soma_ray.client import SomaClient
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.wallet import Wallet

SOMA = 10**9
SOMA_COMMAND = str(Path(sys.executable).with_name("soma"))
FILE_BYTES = 1024


async def hitting_file(client: SomaClient) -> tuple[bytes, str, float, bytes]:
    """A 1 KiB file that hits some open target: (data, winning model id, loss, embedding)."""
    target = (await client.get_targets("open"))[0]
    manifests = await client.get_model_manifests(target)
    for i in range(32):
        data = (b"a miner's find, try %d; " % i * 64)[:FILE_BYTES]
        scored = await client.score(None, manifests, target.embedding, data=data)
        if await hit_target(client, scored.embedding):
            return data, manifests[scored.winner].model_id, scored.loss_score, scored.embedding
    raise SystemExit("no 1 KiB candidate hits an open target")


async def hit_target(client: SomaClient, embedding: bytes):
    """An open target `embedding` hits, and its chain distance; None if none."""
    for target in await client.get_targets("open"):
        distance = cosine_distance_fixed(embedding, target.embedding)
        if distance <= target.threshold_fixed:
            return target, distance
    return None


async def transfer_s(client: SomaClient, sender, recipient: bytes) -> float:
    start = time.perf_counter()
    await client.transfer(sender, recipient, 1)
    return time.perf_counter() - start


async def submit_data_s(client: SomaClient, miner, data: bytes, model_id: bytes, loss: float,
                        embedding: bytes) -> float:
    """commit + reveal of `data` to an open target it hits (the upload is not counted)."""
    target, distance = await hit_target(client, embedding)
    url = await client.upload(data, signer=miner)
    start = time.perf_counter()
    await client.submit_data(miner, target.id, data, url, model_id, embedding, distance / 1e9, loss)
    return time.perf_counter() - start


def command_s(env: dict, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([SOMA_COMMAND, *args], env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


async def with_client(url: str, action):
    client = await SomaClient(rpc_url=url)
    try:
        return await action(client)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="soma-bench")
    work = Path(tempfile.mkdtemp(prefix="soma-bench-submit-"))
    config = net.NetworkConfig(data_dir=str(work / "net"), validators=4, epoch_duration_ms=3_600_000,
                               namespace="soma-bench", http_port=free_port(), genesis_weights=True)
    network = net.start(config)
    wait_for_sequence(network, 0)
    url = network.start_services(scoring_device="cpu")
    sender, miner, recipient = (preset_keypair(f"bench-{n}", 0) for n in ("sender", "miner", "recipient"))
    _, cli_miner = Wallet.load(work / "wallet.json").new_key("miner", True)
    env = {**os.environ, "SOMA_RPC_URL": url, "SOMA_WALLET": str(work / "wallet.json"),
           "SOMA_HOME": str(work / "home")}

    async def prepare(client):
        for key in (sender, miner, cli_miner):
            await client.request_faucet(key.address, 100 * SOMA)
        return await hitting_file(client)

    data, model_id, loss, embedding = asyncio.run(with_client(url, prepare))
    (work / "find.bin").write_bytes(data)
    figures = {name: [] for name in ("transfer", "submit_data", "soma transfer", "soma submit")}
    for _ in range(args.rounds):
        figures["transfer"].append(asyncio.run(with_client(
            url, lambda client: transfer_s(client, sender, recipient.address))))
        figures["submit_data"].append(asyncio.run(with_client(
            url, lambda client: submit_data_s(client, miner, data, model_id, loss, embedding))))
        figures["soma transfer"].append(command_s(env, "transfer", show_address(recipient.address), "0.000000001"))
        figures["soma submit"].append(command_s(env, "submit", str(work / "find.bin")))
    p50 = {name: percentile(values, 0.5) for name, values in figures.items()}
    print(" | ".join(f"{name} p50 {seconds * 1000:.0f} ms" for name, seconds in p50.items()))
    print(f"submit_data / transfer {p50['submit_data'] / p50['transfer']:.2f} | "
          f"soma submit / transfer {p50['soma submit'] / p50['transfer']:.2f} | "
          f"soma submit / soma transfer {p50['soma submit'] / p50['soma transfer']:.2f}")
    network.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
