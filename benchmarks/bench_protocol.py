"""Protocol state machine throughput and epoch-change cost (single process, no consensus).

1. Transactions per second through the single-process driver (admission + execution +
   checkpointing) for a mixed workload — transfers, model commits, submission commits and
   reveals, claims — against a transfers-only run and bare Ed25519 verification (the floor any
   signed transaction pays), measured in this process; and `build_checkpoint` alone on
   transfers whose signatures the executor already verified (a validator re-executing what it
   admitted): the execution path without Ed25519, as a multiple of bare verification.
2. One `change_epoch` with 10,000 Active models and 100 targets per epoch (testnet parameters,
   2048-dim embeddings), against the same with 1,000 models.
3. The replacement target of one fill with 10,000 models: the model index rebuilt every time
   (as before it was cached) against reused from the state's cache (`State.derived`).

Run: .venv/bin/python benchmarks/bench_protocol.py [--quick]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import verify_signature
from soma_ray.protocol.encoding import DOMAIN_TX, encode
from soma_ray.protocol.genesis import GenesisModel, genesis, localnet_config, preset_config, preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA, testnet
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import TARGET
from soma_ray.protocol.submissions import submission_commitment
from soma_ray.protocol.targets import build_model_index, generate_target, target_seed
from soma_ray.protocol.types import (
    ChangeEpoch, ClaimRewards, CommitModel, CommitSubmission, CreateModel, RevealSubmission,
    Target, Transaction, Transfer, WeightsManifest,
)

SOMA = SHANNONS_PER_SOMA
USERS = [preset_keypair("user", i) for i in range(4)]


def run_transfers(n: int) -> float:
    sim = Simulator(localnet_config())
    start = time.perf_counter()
    for i in range(n):
        key = USERS[i % 4]
        sim.submit_kind(key, Transfer(USERS[(i + 1) % 4].address, 1))
        if i % 100 == 99:
            sim.make_checkpoint()
    sim.make_checkpoint()
    return n / (time.perf_counter() - start)


def replay_rate(n: int) -> float:
    """Transfers per second through `build_checkpoint` with every signature already verified."""
    sim = Simulator(localnet_config())
    for i in range(n):
        sim.submit_kind(USERS[i % 4], Transfer(USERS[(i + 1) % 4].address, 1))
    entries = sim.mempool
    start = time.perf_counter()
    _, effects = build_checkpoint(sim.state, None, entries, sim.timestamp_ms + 1_000, verified=set(entries))
    elapsed = time.perf_counter() - start
    assert all(e.error is None for e in effects)
    return n / elapsed


def mixed_round(sim: Simulator, models: list[bytes]) -> int:
    """One checkpoint pair: transfers, a model commit, submission commits; then their reveals
    and claims of settled-able targets. Returns the number of transactions executed."""
    count = 0
    epoch = sim.state.system().epoch
    for i in range(20):
        sim.submit_kind(USERS[i % 4], Transfer(USERS[(i + 1) % 4].address, 1))
        count += 1
    if models:
        manifest = WeightsManifest("http://w", b"c" * 32, 1)
        sim.submit_kind(USERS[3], CommitModel(models.pop(), manifest, b"w" * 32, b"e" * 32, b"k" * 32))
        count += 1
    open_targets = [t for t in sim.state.values(TARGET, Target) if t.status == "Open" and t.generation_epoch == epoch]
    commits = []
    for target in open_targets[:5]:
        commitment = submission_commitment(b"h" * 32, 100, target.model_ids[0], target.embedding, 1, b"n")
        sim.submit_kind(USERS[2], CommitSubmission(target.id, commitment, 100_000))
        commits.append(target.id)
        count += 1
    sim.make_checkpoint()
    for target_id in commits:
        target = sim.state.get(TARGET, target_id, Target)
        sim.submit_kind(USERS[2], RevealSubmission(
            target.submission_id, b"h" * 32, 100, "http://d", target.model_ids[0], target.embedding, 1, b"n"))
        count += 1
    for target in sim.state.values(TARGET, Target):
        if target.status == "Filled" and epoch >= target.fill_epoch + 2:
            sim.submit_kind(USERS[1], ClaimRewards(target.id))
            count += 1
    sim.make_checkpoint()
    return count


def run_mixed(rounds: int) -> float:
    sim = Simulator(localnet_config())
    for _ in range(rounds):
        sim.submit_kind(USERS[3], CreateModel(stake=SOMA, commission_bps=0, architecture_version=1))
    _, effects = sim.make_checkpoint()
    models = [e.created[0] for e in effects]
    count = 0
    start = time.perf_counter()
    for i in range(rounds):
        count += mixed_round(sim, models)
        if i % 5 == 4:
            sim.advance_epoch()
            count += 1
    return count / (time.perf_counter() - start)


def verify_rate(n: int) -> float:
    key = USERS[0]
    message = encode(Transaction(key.address, 0, Transfer(USERS[1].address, 1), 1000))
    signature = key.sign(DOMAIN_TX, message)
    start = time.perf_counter()
    for _ in range(n):
        verify_signature(key.public_key, DOMAIN_TX, message, signature)
    return n / (time.perf_counter() - start)


def testnet_with_models(models: int):
    params = testnet()
    config = preset_config(params, validators=4, models=0, users=1)
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((models, params.embedding_dim)).astype("<f4")
    config.models = [
        GenesisModel(owner=preset_keypair("model-owner", i).address, stake=(1 + i % 7) * SOMA, embedding=row.tobytes())
        for i, row in enumerate(matrix)
    ]
    return genesis(config)


def epoch_change_seconds(models: int) -> float:
    params = testnet()
    state = testnet_with_models(models)
    change = encode(ChangeEpoch(epoch=1, timestamp_ms=params.epoch_duration_ms))
    start = time.perf_counter()
    _, effects = build_checkpoint(state, None, [change], params.epoch_duration_ms)
    elapsed = time.perf_counter() - start
    assert effects[0].error is None, effects[0].error
    return elapsed


def fill_target_seconds(models: int, fills: int = 10) -> tuple[float, float]:
    """Seconds per replacement target: (index rebuilt each fill, index reused from the cache)."""
    state = testnet_with_models(models)
    system = state.system()
    ctx = ExecutionContext(system.parameters, 0, 1_000, b"\x01" * 32)
    start = time.perf_counter()
    for _ in range(fills):
        build_model_index(state).select(np.ones(system.parameters.embedding_dim, np.float32), 3)
    rebuilt = (time.perf_counter() - start) / fills
    generate_target(state, target_seed(b"\x02" * 32, 0), ctx)  # builds the cache once
    start = time.perf_counter()
    for i in range(fills):
        assert generate_target(state, target_seed(b"\x03" * 32, i), ctx) is not None
    return rebuilt, (time.perf_counter() - start) / fills


def main() -> None:
    quick = "--quick" in sys.argv
    verify = verify_rate(2_000)
    transfers = run_transfers(500 if quick else 3_000)
    mixed = run_mixed(5 if quick else 20)
    replay = replay_rate(1_000 if quick else 5_000)
    print(f"ed25519 verify baseline: {verify:,.0f}/s")
    print(f"transfers-only:          {transfers:,.0f} tx/s  ({transfers / verify:.3f} x verify)")
    print(f"mixed workload:          {mixed:,.0f} tx/s  ({mixed / transfers:.3f} x transfers-only)")
    print(f"build_checkpoint, verified transfers: {replay:,.0f} tx/s  ({replay / verify:.3f} x verify)")
    small, large = (100, 1_000) if quick else (1_000, 10_000)
    base = epoch_change_seconds(small)
    cost = epoch_change_seconds(large)
    print(f"change_epoch, {small:,} models, 100 targets: {base:.3f} s")
    print(f"change_epoch, {large:,} models, 100 targets: {cost:.3f} s  ({cost / base:.2f} x the {small:,}-model run)")
    rebuilt, cached = fill_target_seconds(large)
    print(f"fill's replacement target, {large:,} models: index rebuilt {rebuilt:.3f} s, cached {cached:.4f} s "
          f"({rebuilt / cached:.0f}x)")


if __name__ == "__main__":
    main()
