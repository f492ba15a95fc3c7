"""score_many on many small items against a loop of score_model (same model, same items).

Prints both wall times and the speed-up; also checks the results agree. The two alternate
over several rounds and the best round of each counts, so load from other processes on a
shared machine affects both alike. It also times the forward pass alone over the same number
of S-token chunks at batch 1 and at batch 16: when that ratio is near 1 the forward is
compute-bound per token, and stacking items has no per-call overhead left to save.
Run: .venv/bin/python benchmarks/bench_model_score_many.py [--items 64 --max-bytes 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from soma_ray.model import V1Config, V1Model, score_many, score_model


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def forward_batching_gain(model: V1Model, chunks: int, rounds: int) -> float:
    """Best time of single-chunk forward passes / best time of 16-chunk passes, over about
    `chunks` chunks (rounded to a multiple of 16)."""
    seq = model.config.max_seq_len
    tokens = torch.randint(0, 256, (16, seq))
    positions = torch.arange(seq).expand(16, seq)
    passes = max(1, chunks // 16)  # both sides run passes · 16 chunks
    single_s = stacked_s = float("inf")
    with torch.inference_mode():
        model.encode(tokens, positions)  # warm-up
        for _ in range(rounds):
            seconds, _ = timed(lambda: [model.encode(tokens[:1], positions[:1])
                                        for _ in range(passes * 16)])
            single_s = min(single_s, seconds)
            seconds, _ = timed(lambda: [model.encode(tokens, positions) for _ in range(passes)])
            stacked_s = min(stacked_s, seconds)
    return single_s / stacked_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = V1Config.small()
    model = V1Model(config).eval()
    rng = np.random.default_rng(0)
    items = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8))
             for n in rng.integers(1, args.max_bytes + 1, args.items)]
    score_model(model, items[0])  # warm-up (kernels, noise cache)

    loop_s = many_s = float("inf")
    for _ in range(args.rounds):
        seconds, singles = timed(lambda: [score_model(model, item) for item in items])
        loop_s = min(loop_s, seconds)
        seconds, batched = timed(lambda: score_many(model, items))
        many_s = min(many_s, seconds)
    worst = max(abs(a.loss - b.loss) for a, b in zip(singles, batched))
    print(f"config {config}, {args.items} items of 1..{args.max_bytes} bytes, "
          f"torch threads={torch.get_num_threads()}")
    print(f"best of {args.rounds} rounds: loop of score_model: {loop_s:.3f} s;  "
          f"score_many: {many_s:.3f} s;  "
          f"max |loss diff| = {worst:.1e}")
    print(f"speed-up score_many/loop: {loop_s / many_s:.2f}x")
    gain = forward_batching_gain(model, args.items, args.rounds)
    print(f"forward alone, single chunks / stacks of 16: {gain:.2f}x")


if __name__ == "__main__":
    main()
