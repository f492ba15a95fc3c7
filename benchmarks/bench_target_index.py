"""The target index (soma_ray/node/target_index.py): pages of list_targets over 10,000 targets, and
the rebuild rate (re-executing checkpoints from genesis, as the actor does after a restart).

Pages: a genesis with `--targets` Open targets (then an epoch change, so as many again are open
and the first ones expired); p50 over every page of a status, against a baseline that filters
and sorts every target per page (what an index-less reader would do). Rebuild: a Simulator chain
of transfers, fills and epoch changes; a fresh index follows it with the certified effects (the
admitted entries' signatures not checked again) and without; both against the Simulator's own
time to build the same checkpoints.
Run: .venv/bin/python benchmarks/bench_target_index.py [--targets 10000 --checkpoints 120]
"""
from __future__ import annotations

import argparse
import statistics
import time

import msgspec

from soma_ray.node.target_index import TargetIndex, view_status
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import TARGET
from soma_ray.protocol.submissions import submission_commitment
from soma_ray.protocol.types import CommitSubmission, RevealSubmission, Target, Transfer

USERS = [preset_keypair("user", i) for i in range(4)]


def follow_all(index: TargetIndex, sim: Simulator, start: int, with_effects: bool = True) -> None:
    effects, position = sim.effects, 0
    for checkpoint in sim.checkpoints:
        count = len(checkpoint.transactions)
        if checkpoint.sequence >= start:
            index.follow(checkpoint, effects[position:position + count] if with_effects else None)
        position += count


def bench_pages(targets: int) -> None:
    config = localnet_config()
    config.parameters = msgspec.structs.replace(
        config.parameters, initial_targets_per_epoch=targets, target_hits_per_epoch=targets)
    started = time.perf_counter()
    sim = Simulator(config)
    index = TargetIndex.from_genesis(config)
    built = time.perf_counter() - started
    sim.advance_epoch()
    started = time.perf_counter()
    follow_all(index, sim, 0)
    changed = time.perf_counter() - started
    print(f"genesis with {targets} targets and its index: {built:.2f} s; the epoch change "
          f"(re-executed, {targets} more targets, {targets} open -> expired): {changed:.2f} s")
    for status in ("open", "expired"):
        times, token, pages = [], None, 0
        while True:
            t0 = time.perf_counter()
            page = index.list_targets(status=status, limit=50, page_token=token)
            times.append(time.perf_counter() - t0)
            pages += 1
            token = page.next_page_token
            if token is None:
                break
        baseline = []
        for _ in range(5):
            t0 = time.perf_counter()
            epoch = sim.state.system().epoch
            every = [t for t in sim.state.values(TARGET, Target) if view_status(t, epoch) == status]
            sorted(every, key=lambda t: (t.generation_epoch, t.id))[:50]
            baseline.append(time.perf_counter() - t0)
        p50, base = statistics.median(times), statistics.median(baseline)
        print(f"list_targets(status={status!r}, limit=50) over {index.status().targets} targets: "
              f"p50 {p50 * 1e3:.3f} ms/page ({pages} pages), p99 "
              f"{sorted(times)[int(0.99 * (len(times) - 1))] * 1e3:.3f} ms; "
              f"scan-and-sort baseline {base * 1e3:.1f} ms/page: {base / p50:.0f}x")
    model_id = index.active_models()[0].model_id
    t0 = time.perf_counter()
    page = index.list_targets(status="open", model_id=model_id, limit=50)
    print(f"one page filtered by status and model ({len(page.targets)} targets): "
          f"{(time.perf_counter() - t0) * 1e3:.3f} ms")
    query = index.get_target(page.targets[0].id).embedding
    t0 = time.perf_counter()
    index.nearest_open_targets(query, 10)
    first = time.perf_counter() - t0
    again = []
    for _ in range(21):
        t0 = time.perf_counter()
        index.nearest_open_targets(query, 10)
        again.append(time.perf_counter() - t0)
    print(f"nearest_open_targets(k=10) over {targets} open targets: {first * 1e3:.1f} ms "
          f"(matrix built), then p50 {statistics.median(again) * 1e3:.2f} ms")


def build_chain(checkpoints: int, transfers: int) -> tuple[Simulator, float]:
    """Checkpoints of `transfers` transfers, a commit and the reveal of the previous one's
    commit (a fill, with its replacement target); every 30th ends the epoch."""
    sim = Simulator(localnet_config())
    miner = USERS[2]
    started = time.perf_counter()
    committed = None  # (target, submission id) to reveal in the next checkpoint
    for n in range(checkpoints):
        for i in range(transfers):
            sim.submit_kind(USERS[i % 2], Transfer(USERS[3].address, 1_000))
        if committed is not None:
            target, submission_id = committed
            sim.submit_kind(miner, RevealSubmission(submission_id, blake2b256(b"d"), 1, "u",
                                                    target.model_ids[0], target.embedding, 1, b"n"))
        epoch = sim.state.system().epoch
        target = next((t for t in sim.state.values(TARGET, Target)
                       if t.status == "Open" and t.generation_epoch == epoch), None)
        ends_epoch = n % 30 == 29
        if target is not None and not ends_epoch:
            commitment = submission_commitment(blake2b256(b"d"), 1, target.model_ids[0], target.embedding, 1, b"n")
            sim.submit_kind(miner, CommitSubmission(target.id, commitment, 10_000))
        if ends_epoch:
            sim.advance_epoch()
            committed = None
        else:
            _, effects = sim.make_checkpoint()
            ok = target is not None and effects[-1].error is None
            committed = (target, effects[-1].created[0]) if ok else None
    return sim, time.perf_counter() - started


def bench_rebuild(checkpoints: int, transfers: int) -> None:
    sim, built = build_chain(checkpoints, transfers)
    entries = sum(len(c.transactions) for c in sim.checkpoints)
    for with_effects in (True, False):
        index = TargetIndex.from_genesis(localnet_config())
        t0 = time.perf_counter()
        follow_all(index, sim, 0, with_effects)
        took = time.perf_counter() - t0
        assert index.state.state_root() == sim.state.state_root()
        label = "with effects (signatures of admitted entries not re-checked)" if with_effects else "without effects"
        print(f"rebuild {len(sim.checkpoints)} checkpoints, {entries} entries, {label}: {len(sim.checkpoints) / took:.0f} checkpoints/s, {entries / took:.0f} entries/s; "
              f"{built / took:.2f}x the Simulator building them")
    board = index.leaderboard()
    print(f"index after rebuild: {index.status().targets} targets, {sum(m.hits for m in board.miners)} hits")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=120)
    parser.add_argument("--transfers", type=int, default=20, help="transfers per checkpoint")
    args = parser.parse_args()
    bench_pages(args.targets)
    bench_rebuild(args.checkpoints, args.transfers)


if __name__ == "__main__":
    main()
