"""Peak memory of load_weights against the size of the weights file.

Each measurement runs in a fresh process: imports and a warm-up load of a tiny file first,
then the peak-RSS counter is reset (/proc/self/clear_refs) and the file is loaded; the growth of peak RSS is divided by the
file size. The usual baseline (safetensors load_file then load_state_dict into
a model built normally) runs the same way for comparison.
Run: .venv/bin/python benchmarks/bench_model_load_memory.py [--dim 512 --layers 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import sys
import torch
from soma_ray.model import V1Config, V1Model, load_weights
from safetensors.torch import load_file

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

path, tiny, how, dim, layers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def load(path, config):
    if how == "load_weights":
        return load_weights(path)
    model = V1Model(config)
    model.load_state_dict(load_file(path))
    return model

# Warm-up on a tiny file: torch initialises ~70 MiB of lazily loaded state on first use.
load(tiny, V1Config(embedding_dim=16, num_layers=1, num_heads=8, pwff_hidden_dim=64))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS counter
before = rss("VmRSS:")
model = load(path, V1Config(embedding_dim=dim, num_layers=layers, num_heads=8,
                            pwff_hidden_dim=4 * dim))
# Touch every parameter so lazily mapped pages count too.
total = sum(float(p.double().sum()) for p in model.parameters())
print(rss("VmHWM:") - before)
"""


def peak_growth(path: Path, tiny: Path, how: str, dim: int, layers: int) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(tiny), how, str(dim),
                          str(layers)],
                         check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    from soma_ray.model import V1Config, V1Model, save_weights

    config = V1Config(embedding_dim=args.dim, num_layers=args.layers, num_heads=8,
                      pwff_hidden_dim=4 * args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        save_weights(V1Model(config), path)
        tiny = Path(tmp) / "tiny.safetensors"
        save_weights(V1Model(V1Config(embedding_dim=16, num_layers=1, num_heads=8,
                                      pwff_hidden_dim=64)), tiny)
        size = os.path.getsize(path)
        ours = peak_growth(path, tiny, "load_weights", args.dim, args.layers)
        naive = peak_growth(path, tiny, "naive", args.dim, args.layers)
    print(f"file {size / 2**20:.1f} MiB (D={args.dim}, L={args.layers})")
    print(f"load_weights peak growth: {ours / 2**20:.1f} MiB = {ours / size:.2f} x file size")
    print(f"naive (new model + load_file + load_state_dict): {naive / 2**20:.1f} MiB = "
          f"{naive / size:.2f} x file size")


if __name__ == "__main__":
    main()
