"""Scoring on an accelerator: float32 against TF32 matmuls and bf16/fp16 autocast.

For each precision prints sequences/s of `score_many` (S-byte items, so one chunk each) and how
far its losses and embeddings land from the float32 ones, against the audit tolerance (relative
1e-2, absolute 1e-2); then `score_many` against a loop of `score_model` on 64 small items.
Full V1 size by default (about 4.9 GB of float32 weights, initialised on the device).
Run on a GPU: .venv/bin/python benchmarks/bench_model_gpu.py [--size full --seqs 64]
Smoke run anywhere: .venv/bin/python benchmarks/bench_model_gpu.py --device cpu --size small
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from soma_ray.model import V1Config, V1Model, cosine_distance, score_many, score_model

AUDIT_RTOL = AUDIT_ATOL = 1e-2  # spec/protocol.md §5, the audit's tolerance
PRECISIONS = {  # name: (TF32 matmuls, autocast dtype)
    "f32": (False, None),
    "tf32": (True, None),
    "bf16-autocast": (False, torch.bfloat16),
    "fp16-autocast": (False, torch.float16),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


@contextlib.contextmanager
def tf32_matmuls(enabled: bool):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def random_items(count: int, low: int, high: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(rng.integers(0, 256, int(n), dtype=np.uint8))
            for n in rng.integers(low, high + 1, count)]


def within_audit(got: float, want: float) -> bool:
    return abs(got - want) <= AUDIT_ATOL + AUDIT_RTOL * abs(want)


def compare_precisions(model: V1Model, items: list[bytes], device: torch.device,
                       rounds: int) -> None:
    reference = reference_s = None
    for name, (tf32, autocast) in PRECISIONS.items():
        with tf32_matmuls(tf32):
            def run():
                return score_many(model, items, autocast=autocast)
            run()  # warm-up (kernels, noise cache)
            seconds = min(timed(device, run)[0] for _ in range(rounds))
            scores = run()
        if reference is None:
            reference, reference_s = scores, seconds
        loss_diff = max(abs(a.loss - b.loss) for a, b in zip(scores, reference))
        distance = max(cosine_distance(a.embedding, b.embedding)
                       for a, b in zip(scores, reference))
        ok = all(within_audit(a.loss, b.loss)
                 and np.allclose(a.embedding, b.embedding, rtol=AUDIT_RTOL, atol=AUDIT_ATOL)
                 for a, b in zip(scores, reference))
        print(f"{name:>14}: {len(items) / seconds:9.1f} seq/s ({reference_s / seconds:.2f}x f32);"
              f"  max |loss diff| {loss_diff:.2e};  max cosine distance to the f32 embedding "
              f"{distance:.2e};  losses and embeddings within audit tolerance: "
              f"{'yes' if ok else 'NO'}")


def compare_batching(model: V1Model, device: torch.device, rounds: int) -> None:
    items = random_items(64, 1, 1024, seed=1)
    score_model(model, items[0])  # warm-up
    loop_s = many_s = float("inf")
    for _ in range(rounds):
        loop_s = min(loop_s, timed(device, lambda: [score_model(model, x) for x in items])[0])
        many_s = min(many_s, timed(device, lambda: score_many(model, items))[0])
    print(f"64 items of 1..1024 bytes: loop of score_model {loop_s:.3f} s;  score_many "
          f"{many_s:.3f} s;  speed-up {loop_s / many_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--seqs", type=int, default=64, help="S-byte items per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    config = V1Config() if args.size == "full" else V1Config.small()
    torch.manual_seed(0)
    with torch.device(device):
        model = V1Model(config).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {config}")
    items = random_items(args.seqs, config.max_seq_len, config.max_seq_len, seed=0)
    compare_precisions(model, items, device, args.rounds)
    compare_batching(model, device, args.rounds)
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
