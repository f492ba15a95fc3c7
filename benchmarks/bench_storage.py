"""Checkpoints committed per second by ValidatorStore, 100 state changes each.

Prints rates for durable (fsync on commit) and non-durable stores, with the same writes through
bare py-lmdb (one put per key, sync on) as the in-process baseline, and durable safety-state
writes per second.
Usage: .venv/bin/python benchmarks/bench_storage.py [--checkpoints N] [--changes K]
"""

import argparse
import struct
import tempfile
import time

import lmdb

from soma_ray.storage import ValidatorStore


def changes_for(seq: int, k: int) -> list[tuple[bytes, bytes]]:
    return [(b"acct/%06d" % ((seq * k + j) % 5000), b"%032d" % seq) for j in range(k)]


def bench_store(n: int, k: int, durable: bool) -> float:
    with tempfile.TemporaryDirectory() as d, ValidatorStore(d, durable=durable) as store:
        store.write_genesis(b"g" * 32, [])
        batches = [changes_for(seq, k) for seq in range(n)]
        start = time.perf_counter()
        for seq, changes in enumerate(batches):
            store.commit_checkpoint(seq, b"c" * 512, b"s" * 2200, changes)
        return n / (time.perf_counter() - start)


def bench_safety_state(n: int) -> float:
    """Durable safety-state writes per second: the bound on votes a validator can send."""
    with tempfile.TemporaryDirectory() as d, ValidatorStore(d) as store:
        start = time.perf_counter()
        for i in range(n):
            store.put_safety_state(b"%064d" % i)
        return n / (time.perf_counter() - start)


def bench_bare_lmdb(n: int, k: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        env = lmdb.open(d, map_size=64 << 20, max_dbs=2)
        db = env.open_db(b"state")
        batches = [changes_for(seq, k) for seq in range(n)]
        start = time.perf_counter()
        for seq, changes in enumerate(batches):
            with env.begin(write=True, db=db) as txn:
                for key, value in changes:
                    txn.put(key, value)
                txn.put(b"cp/" + struct.pack(">Q", seq), b"c" * 512 + b"s" * 2200)
        rate = n / (time.perf_counter() - start)
        env.close()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=300)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    n, k = args.checkpoints, args.changes
    bare = bench_bare_lmdb(n, k)
    durable = bench_store(n, k, durable=True)
    fast = bench_store(n, k, durable=False)
    print(f"{n} checkpoints x {k} state changes")
    print(f"bare lmdb, sync on      : {bare:9.0f} checkpoints/s (baseline)")
    print(f"ValidatorStore durable  : {durable:9.0f} checkpoints/s  ratio {durable / bare:.2f}")
    print(f"ValidatorStore sync off : {fast:9.0f} checkpoints/s  ratio {fast / bare:.2f}")
    print(f"sync off / durable      : {fast / durable:.1f}x")
    votes = bench_safety_state(n)
    print(f"durable put_safety_state: {votes:9.0f} writes/s")


if __name__ == "__main__":
    main()
