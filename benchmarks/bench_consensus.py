"""Pure CPU cost of the consensus core: decisions per second of a whole simulated network.

Every node of an n-node network runs in this process, so one decision costs n times the work of
one validator (signing, verifying every vote, encoding and decoding every message). Prints
decisions/s and deliveries per decision for n = 4, 7, 10 and the ratio to n = 4; also the cost
of one ed25519 verification, to show which share of a decision is signature checking. Then the
same networks with checkpoint-sized values (`--value-kib`, default 200: about 1,000 transfers),
against the small values: the extra cost is the work done on the value itself (hashing, encoding).
Run: .venv/bin/python benchmarks/bench_consensus.py [--heights 60] [--value-kib 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit" / "consensus"))

from consensus_sim import FIRST_HEIGHT, Simulation, ValueApp, equal_powers, make_keypairs  # noqa: E402

from soma_ray.protocol.crypto import verify_signature  # noqa: E402


def padded_app(size: int) -> type[ValueApp]:
    """ValueApp whose values are padded to `size` bytes (still valid for their height)."""

    class PaddedApp(ValueApp):
        def propose(self, height: int) -> bytes:
            return super().propose(height).ljust(size, b".")

    return PaddedApp


def decisions_per_second(n: int, heights: int, app_type: type[ValueApp] = ValueApp) -> tuple[float, float]:
    sim = Simulation(equal_powers(n), seed=n, delay_ms=(1, 5), app_type=app_type)
    start = time.process_time()
    assert sim.run_until_height(FIRST_HEIGHT + heights - 1, limit_ms=10_000_000)
    elapsed = time.process_time() - start
    sim.assert_agreement()
    return heights / elapsed, sim.delivered / heights


def verifications_per_second(count: int = 2000) -> float:
    key = make_keypairs(1, "bench")[0]
    signature = key.sign(b"soma/vote/v1", b"x" * 80)
    start = time.process_time()
    for _ in range(count):
        verify_signature(key.public_key, b"soma/vote/v1", b"x" * 80, signature)
    return count / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heights", type=int, default=60)
    parser.add_argument("--value-kib", type=int, default=200)
    args = parser.parse_args()
    verify_rate = verifications_per_second()
    print(f"ed25519 verify: {verify_rate:,.0f}/s")
    small_rates = {}
    for n in (4, 7, 10):
        rate, deliveries = decisions_per_second(n, args.heights)
        small_rates[n] = rate
        verify_share = deliveries / verify_rate * rate
        print(
            f"n={n:2d}: {rate:7.1f} decisions/s (whole network, one CPU; {rate * n:6.0f}/s per validator)  "
            f"{deliveries:5.1f} deliveries/decision  ~{verify_share:.0%} of time in verification  "
            f"ratio vs n=4: {rate / small_rates[4]:.2f}"
        )
    large = padded_app(args.value_kib * 1024)
    for n in (4, 10):
        rate, _ = decisions_per_second(n, args.heights, large)
        print(f"n={n:2d}, {args.value_kib} KiB values: {rate:7.1f} decisions/s  "
              f"ratio vs small values: {rate / small_rates[n]:.2f}")


if __name__ == "__main__":
    main()
