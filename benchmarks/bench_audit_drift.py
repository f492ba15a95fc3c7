"""Honest score drift: how far two honest machines' scores of the same data differ.

An audit (spec/protocol.md §5, soma_ray/node/audit.py) re-scores a claim and requires the
claimed loss and embedding to match the recomputation within `audit_tolerance`
(|claimed − recomputed| ≤ AUDIT_ATOL + AUDIT_RTOL·|recomputed|) and the recomputed distance to
be within the target's threshold. This script measures how far an HONEST recomputation drifts
when what two honest machines may differ by changes, each source against one reference
computed in the same process: 1 torch thread, each item scored alone, one 1024-token chunk per
forward pass, default torch modes, float32, CPU.

Sources: torch thread counts; forward-pass sizes (how chunks are stacked: passes that cut
through the 16-chunk scoring batches, large accelerator-style passes); batch neighbours (an item
scored inside `score_many` with other items of other lengths); torch deterministic algorithms;
float32 matmul precision 'high'/'medium'; oneDNN off; the SDPA math kernel instead of the fused
one; older CPU instruction sets (ATEN_CPU_CAPABILITY / MKL_ENABLE_INSTRUCTIONS / ONEDNN_MAX_CPU_ISA
in a child process, as on a machine without AVX-512); several of these combined. Rows marked
"informative" (bf16 autocast; precision 'medium', which runs float32 matmuls in bf16 on
AMX/AVX512-BF16 CPUs; GPU TF32) are not the spec's float32 scoring and do not count toward the
proposal. Chunk boundaries themselves are fixed by the tokenizer (global 1024-byte offsets), so
they cannot differ between honest machines; the sample puts items on both sides of them.

Model: the localnet's genesis models (`genesis_model_weights(i)`, V1Config.small()). Data: windows
of the Python standard library's source, random bytes and constant bytes, from 1 byte up to
`--long-bytes` (max_submission_bytes, 1 MiB, with --full). Distances: the chain's fixed-point
cosine distance (`cosine_distance_fixed`) to `--targets` target embeddings per item.

For each source it prints the worst absolute and relative drift of the loss, of the embedding
(max element difference; relative to the largest element; cosine distance between the two
embeddings) and of the distance, and the margin of the configured tolerance: the factor by which
the drift could grow before an honest claim fails `within_tolerance`. Then a proposed tolerance
(a stated margin over the worst drift) and what a cheater can gain inside a tolerance.

GPU: `--device cuda` adds the same comparisons on a GPU (float32, neighbours, deterministic;
TF32 and bf16 as informative rows) against the CPU reference, when torch sees one; otherwise it
says that none is available. `--config medium` runs a bigger seeded model (D=256, L=8) to see how
the drift grows with size (use it with a small `--long-bytes`, e.g. 8000).
Run: .venv/bin/python benchmarks/bench_audit_drift.py [--full] [--device cuda] [--margin 10]
(about 2.5 min on 2 cores by default; --full, with a 1 MiB item, about 15 min)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import pickle
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from soma_ray.model import (
    GENESIS_WEIGHTS_SEED, V1Config, genesis_model_weights, load_weights, score_many, seeded_model,
)
from soma_ray.model.config import CHUNKS_PER_BATCH
from soma_ray.node.audit import AUDIT_ATOL, AUDIT_RTOL
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed, target_embedding, target_seed

SEQ = V1Config.small().max_seq_len
# Sizes of the text and random items: tiny, around the chunk boundary (1024) and the 16-chunk
# scoring-batch boundary (16 KiB), a few chunks, a few batches.
SIZES = (1, 2, 7, 64, 700, SEQ - 1, SEQ, SEQ + 1, 3_000, CHUNKS_PER_BATCH * SEQ,
         CHUNKS_PER_BATCH * SEQ + 1, 40_000)
CONSTANT_SIZES = (100, 5_000)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way an honest machine may compute the scores."""

    name: str
    threads: int = 1
    chunks_per_pass: int = 1  # forward-pass size in chunks (tokens_per_pass = this × S)
    grouping: str = "alone"  # alone | together (all items, shuffled) | groups (random groups of 4)
    deterministic: bool = False
    matmul_precision: str = "highest"
    mkldnn: bool = True
    sdpa_math: bool = False
    autocast: str | None = None  # "bfloat16": not canonical
    env: tuple = ()  # (name, value) pairs: run in a child process with this environment
    device: str = "cpu"
    informative: bool = False  # not canonical float32 scoring: excluded from the proposal


AVX2_ENV = (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
            ("ONEDNN_MAX_CPU_ISA", "AVX2"))
BASELINE_ENV = (("ATEN_CPU_CAPABILITY", "default"), ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
                ("ONEDNN_MAX_CPU_ISA", "SSE41"))

REFERENCE = Variant("reference: 1 thread, alone, 1-chunk passes")


def cpu_variants(full: bool) -> list[Variant]:
    rows = [
        Variant("torch threads 2", threads=2),
        Variant("torch threads 4 (2 cores: oversubscribed)", threads=4),
        Variant("passes of 16 chunks (score_model)", chunks_per_pass=16),
        Variant("passes of 5 chunks (cut 16-chunk batches)", chunks_per_pass=5),
        Variant("passes of 64 chunks", chunks_per_pass=64),
        Variant("neighbours: all items in one score_many", chunks_per_pass=16, grouping="together"),
        Variant("neighbours: random groups of 4 items", chunks_per_pass=16, grouping="groups"),
        Variant("use_deterministic_algorithms(True)", deterministic=True),
        Variant("float32 matmul precision 'high'", matmul_precision="high"),
        # 'medium' lets oneDNN run float32 matmuls in bfloat16 (AMX/AVX512-BF16 CPUs): not
        # the spec's float32 scoring, like autocast.
        Variant("float32 matmul precision 'medium' (informative)", matmul_precision="medium",
                informative=True),
        Variant("oneDNN (mkldnn) disabled", mkldnn=False),
        Variant("SDPA math kernel (not the fused one)", sdpa_math=True),
        Variant("CPU ISA AVX2 (child process)", env=AVX2_ENV),
        Variant("CPU ISA without SIMD (child process)", env=BASELINE_ENV),
        Variant("combined: AVX2, 2 threads, neighbours, 64/pass", threads=2, chunks_per_pass=64,
                grouping="together", env=AVX2_ENV),
        Variant("autocast bfloat16 (informative)", chunks_per_pass=16, autocast="bfloat16",
                informative=True),
    ]
    if full:
        rows.insert(2, Variant("torch threads 8 (oversubscribed)", threads=8))
    return rows


def cuda_variants() -> list[Variant]:
    return [
        Variant("GPU float32, alone, 16-chunk passes", chunks_per_pass=16, device="cuda"),
        Variant("GPU float32, all items, 64-chunk passes", chunks_per_pass=64, grouping="together",
                device="cuda"),
        Variant("GPU float32, deterministic", chunks_per_pass=16, deterministic=True, device="cuda"),
        Variant("GPU TF32 matmul (precision 'high', informative)", chunks_per_pass=16,
                matmul_precision="high", device="cuda", informative=True),
        Variant("GPU autocast bfloat16 (informative)", chunks_per_pass=16, autocast="bfloat16",
                device="cuda", informative=True),
    ]


# ------------------------------------------------------------------------------ the sample


def stdlib_corpus(limit: int) -> bytes:
    """The first `limit` bytes of the standard library's top-level .py files, in name order."""
    out, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        data = path.read_bytes()
        out.append(data)
        size += len(data)
        if size >= limit:
            break
    return b"".join(out)[:limit]


def make_sample(long_bytes: int, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    corpus = stdlib_corpus(max(4 * long_bytes, 2 << 20))

    def window(n: int) -> bytes:
        start = int(rng.integers(0, len(corpus) - n + 1))
        return corpus[start:start + n]

    items = []
    for n in (n for n in SIZES if n < long_bytes):
        items.append((f"text {n}", window(n)))
        items.append((f"random {n}", rng.bytes(n)))
    for n in (n for n in CONSTANT_SIZES if n < long_bytes):
        items.append((f"constant {n}", bytes([int(rng.integers(0, 256))]) * n))
    items.append((f"text {long_bytes}", window(long_bytes)))
    return items


# ------------------------------------------------------------------------------ scoring


@contextlib.contextmanager
def settings(variant: Variant):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    precision = torch.get_float32_matmul_precision()
    torch.set_num_threads(variant.threads)
    torch.use_deterministic_algorithms(variant.deterministic)
    torch.set_float32_matmul_precision(variant.matmul_precision)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.backends.mkldnn.flags(enabled=variant.mkldnn))
            if variant.sdpa_math:
                from torch.nn.attention import SDPBackend, sdpa_kernel
                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_float32_matmul_precision(precision)


def score_variant(variant: Variant, models: list, items: list[bytes], seed: int = 0):
    """[model][item] → (loss, float32 embedding) under the variant (in this process)."""
    autocast = getattr(torch, variant.autocast) if variant.autocast else None
    tokens_per_pass = variant.chunks_per_pass * SEQ
    order = np.random.default_rng(len(variant.name)).permutation(len(items))
    if variant.grouping == "alone":
        groups = [[i] for i in range(len(items))]
    elif variant.grouping == "together":
        groups = [list(order)]
    else:
        groups = [list(order[i:i + 4]) for i in range(0, len(items), 4)]
    results = []
    with settings(variant):
        for model in models:
            per_item = [None] * len(items)
            for group in groups:
                scores = score_many(model, [items[i] for i in group], seed,
                                    tokens_per_pass=tokens_per_pass, autocast=autocast)
                for i, s in zip(group, scores):
                    per_item[i] = (s.loss, np.asarray(s.embedding, dtype=np.float32))
            results.append(per_item)
    return results


# `--config medium`: a wider, deeper model (fresh seeded weights, not genesis ones) to see how
# the drift grows with size; the production model is D=2048, L=24.
CONFIGS = {
    "small": V1Config.small(),
    "medium": V1Config(embedding_dim=256, num_layers=8, num_heads=8, pwff_hidden_dim=1024),
}


def load_models(indices: list[int], config_name: str = "small", device: str = "cpu") -> list:
    if config_name == "small":
        config = V1Config.small()
        return [load_weights(genesis_model_weights(i), config, device=device) for i in indices]
    return [seeded_model(CONFIGS[config_name], GENESIS_WEIGHTS_SEED + i).to(device).eval()
            for i in indices]


def score_in_child(variant: Variant, config_name: str, model_indices: list[int], items: list[bytes]):
    """Score in a fresh interpreter whose environment selects another CPU code path."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.pkl"
        out = Path(tmp) / "out.pkl"
        spec.write_bytes(pickle.dumps((dataclasses.replace(variant, env=()), config_name, model_indices,
                                       items)))
        env = {**os.environ, **dict(variant.env)}
        subprocess.run([sys.executable, __file__, "--worker", str(spec), str(out)], env=env, check=True)
        capability, results = pickle.loads(out.read_bytes())
    return capability, results


def worker(spec: str, out: str) -> None:
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    variant, config_name, model_indices, items = pickle.loads(Path(spec).read_bytes())
    results = score_variant(variant, load_models(model_indices, config_name), items)
    capability = torch.backends.cpu.get_cpu_capability()
    Path(out).write_bytes(pickle.dumps((capability, results)))


# ------------------------------------------------------------------------------ comparison


def embedding_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 − cos(a, b) as |â − b̂|²/2 in float64: no cancellation for nearly equal vectors."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    d = a / np.linalg.norm(a) - b / np.linalg.norm(b)
    return float(d @ d / 2)


def distances(embedding: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """The chain's fixed-point distances (× 10^9) to each target."""
    return np.array([cosine_distance_fixed(embedding, t) for t in targets], dtype=np.int64)


@dataclasses.dataclass
class Drift:
    loss_abs: float = 0.0
    loss_rel: float = 0.0
    emb_abs: float = 0.0
    emb_rel: float = 0.0  # max |Δe| / max |e_ref|
    emb_cos: float = 0.0
    dist_abs: float = 0.0  # cosine distance units (fixed point / 10^9)
    dist_rel: float = 0.0
    usage: float = 0.0  # max |Δ| / (AUDIT_ATOL + AUDIT_RTOL·|ref|) over loss and embedding
    identical: int = 0  # (model, item) pairs with bit-identical loss and embedding
    pairs: int = 0
    worst_item: str = ""  # the item of the largest `usage`

    @property
    def worst_abs(self) -> float:
        return max(self.loss_abs, self.emb_abs, self.dist_abs)

    @property
    def worst_rel(self) -> float:
        return max(self.loss_rel, self.emb_rel, self.dist_rel)


def compare(reference, results, ref_distances, targets, names) -> Drift:
    drift = Drift()
    for ref_model, got_model, ref_d_model in zip(reference, results, ref_distances):
        for (ref_loss, ref_emb), (loss, emb), ref_d, name in zip(ref_model, got_model, ref_d_model,
                                                                 names):
            drift.pairs += 1
            if loss == ref_loss and np.array_equal(emb, ref_emb):
                drift.identical += 1
                continue
            dl = abs(loss - ref_loss)
            de = np.abs(emb.astype(np.float64) - ref_emb.astype(np.float64))
            dd = np.abs(distances(emb, targets) - ref_d) / DISTANCE_SCALE
            drift.loss_abs = max(drift.loss_abs, dl)
            drift.loss_rel = max(drift.loss_rel, dl / abs(ref_loss))
            drift.emb_abs = max(drift.emb_abs, float(de.max()))
            drift.emb_rel = max(drift.emb_rel, float(de.max() / np.abs(ref_emb).max()))
            drift.emb_cos = max(drift.emb_cos, embedding_cosine_distance(emb, ref_emb))
            drift.dist_abs = max(drift.dist_abs, float(dd.max()))
            drift.dist_rel = max(drift.dist_rel, float((dd / (ref_d / DISTANCE_SCALE)).max()))
            usage = max(dl / (AUDIT_ATOL + AUDIT_RTOL * abs(ref_loss)),
                        float((de / (AUDIT_ATOL + AUDIT_RTOL * np.abs(ref_emb))).max()))
            if usage > drift.usage:
                drift.usage, drift.worst_item = usage, name
    return drift


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def margin_text(usage: float) -> str:
    return "inf" if usage == 0 else f"{1 / usage:.1e}"


def nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ x."""
    if x <= 0:
        return 0.0
    exponent = math.floor(math.log10(x))
    for mantissa in (1, 2, 5, 10):
        value = mantissa * 10.0 ** exponent
        if value >= x * (1 - 1e-12):
            return value
    return 10.0 ** (exponent + 1)


# ------------------------------------------------------------------------------ cheater's gain


def max_distance_gain(embedding: np.ndarray, target: np.ndarray, atol: float, rtol: float) -> float:
    """How much lower a claimed embedding inside the tolerance box around the true one can make
    the chain's distance: one step against the distance's gradient to the box's corner."""
    e = embedding.astype(np.float64)
    t = target.astype(np.float64)
    ne, nt = np.linalg.norm(e), np.linalg.norm(t)
    cos = e @ t / (ne * nt)
    gradient = -(t / (ne * nt) - cos * e / ne**2)  # d(1 − cos)/de
    claimed = (e - np.sign(gradient) * (atol + rtol * np.abs(e))).astype(np.float32)
    return (cosine_distance_fixed(embedding, target) - cosine_distance_fixed(claimed, target)) / DISTANCE_SCALE


def cheater_report(reference, targets, tolerances: dict[str, float]) -> None:
    losses = np.array([[loss for loss, _ in model] for model in reference])  # [model, item]
    print("\nwhat a cheater can gain inside a tolerance t (atol = rtol = t):")
    median_loss = float(np.median(losses))
    for label, t in tolerances.items():
        print(f"  {label} t={t:.0e}: a claimed loss may be off by t·(1 + |L|) = "
              f"{t * (1 + median_loss):.2e} at the median loss {median_loss:.3f}")
    if losses.shape[0] >= 2:
        ordered = np.sort(losses, axis=0)
        gap = ordered[1] - ordered[0]
        print(f"  winner rule ({losses.shape[0]} models per item): gap best→second loss "
              f"median {np.median(gap):.2e}, min {gap.min():.2e}")
        for label, t in tolerances.items():
            free = np.mean(gap <= t * (1 + np.abs(ordered[0])))
            print(f"    {label} t={t:.0e}: the cheater may name a model other than the lowest-loss "
                  f"one on {free:.0%} of the items")
    params = Parameters()
    low, high = params.min_distance_threshold / DISTANCE_SCALE, params.max_distance_threshold / DISTANCE_SCALE
    for label, t in tolerances.items():
        gains = [max_distance_gain(emb, target, t, t) for model in reference for _, emb in model
                 for target in targets]
        print(f"  {label} t={t:.0e}: a claimed embedding inside the tolerance lowers the chain's "
              f"distance by up to {max(gains):.2e} (median {np.median(gains):.2e}), "
              f"{max(gains) / low:.1e}..{max(gains) / high:.1e} of thresholds {low:g}..{high:g}")
    print("  (the audit compares the RECOMPUTED distance with the threshold, exactly: that gain is "
          "on the chain's check only and is caught by an audit; see the results notes)")


# ------------------------------------------------------------------------------ main


def main() -> None:
    # torch.backends.mkldnn.flags() warns that oneDNN TF32 is for Intel GPUs only.
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true",
                        help="a 1 MiB item (max_submission_bytes), 64 targets, an 8-thread row")
    parser.add_argument("--models", type=int, default=1,
                        help="genesis models 0..N-1 the rows compare (the reference scores at "
                             "least k_models_per_target, for the winner rule)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small",
                        help="medium: a bigger seeded model, to see how drift grows with size")
    parser.add_argument("--long-bytes", type=int, default=0,
                        help="size of the longest item, and no item above it "
                             "(default 64 KiB, 1 MiB with --full)")
    parser.add_argument("--targets", type=int, default=0, help="targets per item (default 16, 64 with --full)")
    parser.add_argument("--margin", type=float, default=10.0, help="proposed tolerance / worst drift")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: add the GPU rows (against the CPU reference)")
    parser.add_argument("--only", default="", help="run only the rows whose name contains this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    models_n = args.models
    # k_models_per_target models score the reference: the winner rule needs their losses.
    reference_n = max(models_n, Parameters().k_models_per_target)
    long_bytes = args.long_bytes or (Parameters().max_submission_bytes if args.full else 64 * 1024)
    targets_n = args.targets or (64 if args.full else 16)

    start = time.perf_counter()
    sample = make_sample(long_bytes, args.seed)
    names, items = [n for n, _ in sample], [d for _, d in sample]
    chunks = sum(-(-len(d) // SEQ) for d in items)
    model_indices = list(range(models_n))
    models = load_models(list(range(reference_n)), args.config)
    dim = models[0].config.embedding_dim
    targets = [target_embedding(target_seed(b"audit-drift".ljust(32, b"."), i), dim)
               for i in range(targets_n)]
    config = models[0].config
    print(f"{args.config} V1 (D={dim}, L={config.num_layers}, F={config.pwff_hidden_dim}), "
          f"{'genesis' if args.config == 'small' else 'seeded'} models {model_indices} "
          f"(reference: {reference_n}); {len(items)} items, "
          f"1..{long_bytes} bytes, {chunks} chunks; {targets_n} targets per item; torch "
          f"{torch.__version__}, {os.cpu_count()} cores, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"configured tolerance: atol {AUDIT_ATOL:g}, rtol {AUDIT_RTOL:g}")

    score_variant(REFERENCE, models, items[:1])  # warm-up (kernels, noise cache)
    t0 = time.perf_counter()
    reference = score_variant(REFERENCE, models, items)
    ref_s = time.perf_counter() - t0
    ref_distances = [[distances(emb, targets) for _, emb in model] for model in reference]
    print(f"reference ({REFERENCE.name}): {ref_s:.1f} s")

    variants = cpu_variants(args.full)
    gpu_note = None
    if args.device == "cuda":
        # cuBLAS is deterministic only with a fixed workspace (use_deterministic_algorithms
        # raises without it); set before the first cuBLAS call, it holds for every GPU row.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.cuda.is_available():
            variants += cuda_variants()
        else:
            gpu_note = "GPU: --device cuda asked, but torch sees no CUDA device: GPU rows skipped"
    else:
        gpu_note = ("GPU: not measured (no GPU in this run); `--device cuda` adds the same "
                    "comparisons on a GPU against this CPU reference")
    if args.only:
        variants = [v for v in variants if args.only in v.name]

    header = (f"{'source':52s} {'loss abs':>8s} {'loss rel':>8s} {'emb abs':>8s} {'emb rel':>8s} "
              f"{'emb cos':>8s} {'dist abs':>8s} {'dist rel':>8s} {'same':>7s} {'margin':>8s} {'s':>5s} worst item")
    print("\n" + header + "\n" + "-" * len(header))
    rows = []
    cuda_models = None
    for variant in variants:
        t0 = time.perf_counter()
        name = variant.name
        if variant.env:
            capability, results = score_in_child(variant, args.config, model_indices, items)
            name = f"{name} [{capability}]"
        elif variant.device == "cuda":
            cuda_models = cuda_models or load_models(model_indices, args.config, "cuda")
            results = score_variant(variant, cuda_models, items)
        else:
            results = score_variant(variant, models[:models_n], items)
        seconds = time.perf_counter() - t0
        drift = compare(reference, results, ref_distances, targets, names)
        rows.append((variant, drift))
        print(f"{name[:52]:52s} {fmt(drift.loss_abs):>8s} {fmt(drift.loss_rel):>8s} "
              f"{fmt(drift.emb_abs):>8s} {fmt(drift.emb_rel):>8s} {fmt(drift.emb_cos):>8s} "
              f"{fmt(drift.dist_abs):>8s} {fmt(drift.dist_rel):>8s} "
              f"{drift.identical:>3d}/{drift.pairs:<3d} {margin_text(drift.usage):>8s} {seconds:5.1f} "
              f"{drift.worst_item}",
              flush=True)
    print("(abs: max |Δ|; emb rel: max |Δe| / max |e|; emb cos: cosine distance between the two "
          "embeddings; dist: the chain's distance to the targets; same: bit-identical (loss, "
          "embedding) pairs; margin: how many times the drift fits in the configured tolerance)")
    if gpu_note:
        print(gpu_note)

    honest = [d for v, d in rows if not v.informative]
    if not honest:
        return
    proposed = summarise(rows, honest, args.margin)
    tolerances = {"configured": min(AUDIT_ATOL, AUDIT_RTOL)}
    if proposed:
        tolerances["proposed"] = proposed
    cheater_report(reference, targets, tolerances)
    print(f"\nrun time {time.perf_counter() - start:.0f} s")


def summarise(rows, honest: list[Drift], margin: float) -> float | None:
    worst_abs = max(d.worst_abs for d in honest)
    worst_rel = max(d.worst_rel for d in honest)
    worst_usage = max(d.usage for d in honest)
    worst = max(worst_abs, worst_rel)
    print(f"\nworst honest drift: abs {fmt(worst_abs)}, rel {fmt(worst_rel)} "
          f"(loss {fmt(max(d.loss_abs for d in honest))}, embedding element "
          f"{fmt(max(d.emb_abs for d in honest))}, distance {fmt(max(d.dist_abs for d in honest))})")
    current = min(AUDIT_ATOL, AUDIT_RTOL)
    print(f"margin of the configured tolerance: {current:g} / worst abs drift = "
          f"{'inf' if worst_abs == 0 else f'{current / worst_abs:.1e}'}x; "
          f"through within_tolerance (atol + rtol·|x|): {margin_text(worst_usage)}x")
    proposed = nice_ceil(margin * worst) if worst > 0 else None
    if proposed:
        print(f"proposed audit_tolerance: atol = rtol = {proposed:.0e} "
              f"(≥ {margin:g}x the worst honest float32 drift {fmt(worst)}, rounded up to 1-2-5); "
              f"the distance check would take {round(proposed * DISTANCE_SCALE)} fixed-point units")
        print(f"honest float32 distance drift: {round(max(d.dist_abs for d in honest) * DISTANCE_SCALE)}"
              f" fixed-point units at most; the audit's exact threshold check can flip on it")
    for v, d in ((v, d) for v, d in rows if v.informative):
        verdict = "passes" if proposed is None or d.usage * AUDIT_ATOL <= proposed else "FAILS"
        print(f"  {v.name}: worst drift {fmt(max(d.worst_abs, d.worst_rel))} (would need "
              f"{nice_ceil(margin * max(d.worst_abs, d.worst_rel)):.0e} at {margin:g}x): {verdict} the proposed")
    return proposed


if __name__ == "__main__":
    main()
