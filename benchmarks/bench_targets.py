"""Stake-weighted model selection: exact-with-prefilter against brute-force exact ranking.

For each embedding dim: N models × T targets through `ModelIndex.select_many` (float64
pre-filter, exact fixed-point re-rank of the candidates), against ranking every model exactly
(`ModelIndex.rank_exactly` over all rows) on a few targets, extrapolated per target. Checks that
both give the same models and prints the speed-up (brute force time / prefiltered time).
Run: .venv/bin/python benchmarks/bench_targets.py [--models 10000 --targets 100 --dims 2048 64]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from soma_ray.protocol.targets import ModelIndex, target_embedding, target_seed


def exact_norm(vector: np.ndarray) -> float:
    return math.fsum((vector.astype(np.float64) ** 2).tolist())


def bench(models: int, targets: int, dim: int, brute_targets: int, k: int) -> None:
    rng = np.random.default_rng(dim)
    embeddings = rng.standard_normal((models, dim)).astype(np.float32)
    stakes = rng.integers(10**9, 10**13, models).tolist()
    ids = [i.to_bytes(32, "big") for i in range(models)]
    queries = [target_embedding(target_seed(b"bench" * 6 + b"00", i), dim) for i in range(targets)]

    start = time.perf_counter()
    index = ModelIndex(ids, embeddings, stakes)
    built = time.perf_counter()
    selected = index.select_many(queries, k)
    done = time.perf_counter()

    brute_start = time.perf_counter()
    brute = [index.rank_exactly(q, exact_norm(q), range(models), k) for q in queries[:brute_targets]]
    brute_per_target = (time.perf_counter() - brute_start) / brute_targets
    assert brute == selected[:brute_targets], "prefilter changed the ranking"

    per_target = (done - built) / targets
    print(
        f"dim {dim:5d}: {models} models x {targets} targets: index {built - start:.3f} s + "
        f"select {done - built:.3f} s = {done - start:.3f} s; per target {per_target * 1e3:.2f} ms "
        f"vs brute-force exact {brute_per_target * 1e3:.1f} ms -> {brute_per_target / per_target:.0f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 64])
    parser.add_argument("--brute-targets", type=int, default=2)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    for dim in args.dims:
        bench(args.models, args.targets, dim, args.brute_targets, args.k)


if __name__ == "__main__":
    main()
