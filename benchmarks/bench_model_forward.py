"""Forward throughput of V1Model against the reference package's torch model (same weights).

Prints tokens/s of both and the ratio ours/reference (> 1 means we are faster).
Run: .venv/bin/python benchmarks/bench_model_forward.py [--dim 256 --layers 4 --seq 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from soma_models.v1.torch import Model as ReferenceModel
from soma_models.v1.torch import ModelConfig as ReferenceConfig

from soma_ray.model import V1Config, V1Model, save_weights


def tokens_per_second(forward, tokens, positions, repeats: int) -> float:
    with torch.inference_mode():
        forward(tokens, positions)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            forward(tokens, positions)
        return repeats * tokens.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = V1Config(embedding_dim=args.dim, num_layers=args.layers, num_heads=args.heads,
                      pwff_hidden_dim=4 * args.dim, max_seq_len=args.seq)
    ours = V1Model(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        save_weights(ours, path)
        reference = ReferenceModel.load(path, ReferenceConfig(
            dropout_rate=0.0, embedding_dim=args.dim, pwff_hidden_dim=4 * args.dim,
            num_layers=args.layers, num_heads=args.heads)).eval()
    tokens = torch.randint(0, 258, (args.batch, args.seq))
    positions = torch.arange(args.batch * args.seq).view(args.batch, args.seq)
    with torch.inference_mode():
        gap = (ours(tokens, positions) - reference(tokens, positions)).abs().max().item()

    # Alternate the two so machine load affects both alike.
    ours_tps, ref_tps = [], []
    for _ in range(2):
        ref_tps.append(tokens_per_second(reference, tokens, positions, args.repeats))
        ours_tps.append(tokens_per_second(ours, tokens, positions, args.repeats))
    print(f"config D={args.dim} L={args.layers} H={args.heads} S={args.seq} batch={args.batch}, "
          f"torch threads={torch.get_num_threads()}, max |logit diff| = {gap:.2e}")
    print(f"reference: {max(ref_tps):,.0f} tokens/s")
    print(f"V1Model:   {max(ours_tps):,.0f} tokens/s")
    print(f"ratio V1Model/reference: {max(ours_tps) / max(ref_tps):.2f}x")


if __name__ == "__main__":
    main()
