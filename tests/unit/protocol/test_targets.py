"""Target math: seeded embeddings, exact cosine distance, stake-weighted model selection (§0, §4)."""

import math
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soma_ray.protocol.errors import EmbeddingDimensionMismatch, MalformedInput, NonFiniteEmbedding
from soma_ray.protocol.targets import (
    DISTANCE_SCALE,
    ModelIndex,
    ModelSetMismatch,
    ZeroEmbedding,
    cosine_distance_fixed,
    prefilter_margin,
    target_embedding,
    target_seed,
)


def real_distance_fixed(a: np.ndarray, b: np.ndarray) -> Decimal:
    """(1 − cos) × 10^9 from exact rational sums and 50-digit square roots."""
    getcontext().prec = 50
    dot = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b))
    norm_a = sum(Fraction(float(x)) ** 2 for x in a)
    norm_b = sum(Fraction(float(y)) ** 2 for y in b)

    def dec(f: Fraction) -> Decimal:
        return Decimal(f.numerator) / Decimal(f.denominator)

    return (1 - dec(dot) / (dec(norm_a) * dec(norm_b)).sqrt()) * DISTANCE_SCALE


def brute_force(target, ids, embeddings, stakes, k):
    """Every model scored exactly: score = d / (sqrt(s)/Σ sqrt(s)), compared as rationals."""
    keyed = []
    for model_id, row, stake in zip(ids, embeddings, stakes):
        d = cosine_distance_fixed(target, row)
        # d / sqrt(s) ordered exactly as d² / s (both non-negative).
        keyed.append(((0, Fraction(d * d, stake)) if stake > 0 else (1, Fraction(0)), model_id))
    return [model_id for _, model_id in sorted(keyed)[:k]]


# --- target embeddings -------------------------------------------------------------------------


def test_target_embedding_is_deterministic_standard_normal_float32():
    seed = target_seed(b"\x07" * 32, 3)
    first = target_embedding(seed, 2048)
    assert first.dtype == np.float32 and first.shape == (2048,)
    assert np.array_equal(first, target_embedding(seed, 2048))
    assert abs(float(first.mean())) < 0.1 and abs(float(first.std()) - 1.0) < 0.1


def test_target_seed_changes_with_index_and_checkpoint():
    seeds = {target_seed(c, i) for c in (b"a" * 32, b"b" * 32) for i in range(3)}
    assert len(seeds) == 6
    assert target_seed(b"a" * 32, 1) != target_seed(b"a" * 32, 1 << 32)
    assert not np.array_equal(
        target_embedding(target_seed(b"a" * 32, 0), 16), target_embedding(target_seed(b"a" * 32, 1), 16)
    )


# --- exact cosine distance ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.integers(0, 2**32 - 1), st.sampled_from([1e-20, 1.0, 1e15]))
def test_cosine_distance_is_the_correctly_rounded_real_value(dim, seed, scale):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(dim) * scale).astype(np.float32)
    b = (rng.standard_normal(dim) * scale).astype(np.float32)
    if not a.any() or not b.any():
        return
    exact = real_distance_fixed(a, b)
    got = cosine_distance_fixed(a, b)
    # Float error after exact summation is a few ulps of 1 (≈1e-7 fixed units) << 0.5.
    assert abs(Decimal(got) - exact) <= Decimal("0.5") + Decimal("1e-6")


def test_cosine_distance_of_known_vectors():
    x = np.array([1, 0, 0], dtype=np.float32)
    assert cosine_distance_fixed(x, x) == 0
    assert cosine_distance_fixed(x, np.array([0, 1, 0], dtype=np.float32)) == DISTANCE_SCALE
    assert cosine_distance_fixed(x, -x) == 2 * DISTANCE_SCALE
    assert cosine_distance_fixed(x, np.array([1, 1, 0], dtype=np.float32)) == round(
        (1 - 1 / math.sqrt(2)) * DISTANCE_SCALE
    )


def test_cosine_distance_survives_cancellation_that_breaks_float_dot():
    # 1e8 + 1 − 1e8: float32 (and naive float64 of larger terms) loses the 1; exact sums do not.
    a = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    b = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    assert abs(Decimal(cosine_distance_fixed(a, b)) - real_distance_fixed(a, b)) <= Decimal("0.5")


def test_distance_independent_of_memory_layout_and_byte_order():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((8, 300)).astype(np.float32)
    b = rng.standard_normal(300).astype(np.float32)
    reference = cosine_distance_fixed(matrix[2], b)
    variants = [
        np.asfortranarray(matrix)[2],  # strided row of a Fortran matrix
        matrix.T.copy(order="C")[:, 2],  # column view
        matrix[2].astype(">f4"),  # big-endian
        matrix[2].astype("<f4").tobytes(),  # raw little-endian transaction bytes
    ]
    interleaved = np.empty(600, dtype=np.float32)
    interleaved[::2] = matrix[2]
    variants.append(interleaved[::2])  # non-contiguous view
    for variant in variants:
        assert cosine_distance_fixed(variant, b) == reference
        assert cosine_distance_fixed(b, variant) == cosine_distance_fixed(b, matrix[2])


@pytest.mark.parametrize(
    "a, b, error, fields",
    [
        (np.zeros(4, np.float32), np.ones(4, np.float32), ZeroEmbedding, {}),
        (np.ones(4, np.float32), np.ones(5, np.float32), EmbeddingDimensionMismatch, {"expected": 4, "got": 5}),
        (np.array([1, np.nan, 1], np.float32), np.ones(3, np.float32), NonFiniteEmbedding, {"index": 1}),
        (np.ones(3, np.float32), np.array([1, 1, np.inf], np.float32), NonFiniteEmbedding, {"index": 2}),
        (np.ones(3, np.float64), np.ones(3, np.float32), MalformedInput, None),
        (b"\x00\x00\x80?\x00", np.ones(1, np.float32), MalformedInput, None),
    ],
)
def test_bad_embeddings_raise_typed_errors(a, b, error, fields):
    with pytest.raises(error) as raised:
        cosine_distance_fixed(a, b)
    if fields is not None:
        assert raised.value.values() == fields


# --- model selection ---------------------------------------------------------------------------


def random_models(seed: int, n: int, dim: int, equal_stakes: bool = False):
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    stakes = [10**9] * n if equal_stakes else rng.integers(1, 10**13, n).tolist()
    ids = [bytes([i % 256, i // 256]) * 16 for i in range(n)]
    return ids, embeddings, stakes


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([4, 16, 64]), st.integers(1, 8),
    st.booleans(), st.booleans(),
)
def test_prefilter_never_changes_the_exact_ranking(seed, n, dim, k, equal_stakes, duplicate_rows):
    ids, embeddings, stakes = random_models(seed, n, dim, equal_stakes)
    if duplicate_rows:  # exact ties in distance: order must fall back to stake, then model id
        embeddings[n // 2 :] = embeddings[: n - n // 2]
    target = np.random.default_rng(seed + 1).standard_normal(dim).astype(np.float32)
    assert ModelIndex(ids, embeddings, stakes).select(target, k) == brute_force(target, ids, embeddings, stakes, k)


def test_equal_scores_rank_by_model_id():
    row = np.array([[1, 2, 3, 4]], np.float32)
    embeddings = np.repeat(row, 5, axis=0)
    ids = [b"\x05" * 32, b"\x01" * 32, b"\x04" * 32, b"\x02" * 32, b"\x03" * 32]
    target = np.array([4, 3, 2, 1], np.float32)
    assert ModelIndex(ids, embeddings, [7] * 5).select(target, 3) == [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]


def test_stake_weighting_prefers_the_heavier_model_at_equal_distance_and_trades_off_distance():
    target = np.array([1, 0], np.float32)
    near = np.array([1, 1], np.float32)  # distance ≈ 0.2929
    far = np.array([0, 1], np.float32)  # distance 1.0
    ids = [b"a", b"b"]
    assert ModelIndex(ids, np.stack([near, near]), [1, 4]).select(target, 1) == [b"b"]
    # far wins only once sqrt(stake ratio) exceeds 1.0 / 0.2929 ≈ 3.414, i.e. ratio > 11.66.
    assert ModelIndex(ids, np.stack([near, far]), [1, 11]).select(target, 1) == [b"a"]
    assert ModelIndex(ids, np.stack([near, far]), [1, 12]).select(target, 1) == [b"b"]


def test_models_without_stake_rank_last():
    embeddings = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    ids = [b"x", b"y", b"z"]
    target = np.array([1, 0], np.float32)
    assert ModelIndex(ids, embeddings, [0, 5, 5]).select(target, 3) == [b"z", b"y", b"x"]


def test_selection_with_fewer_models_than_k_returns_all_ranked():
    ids, embeddings, stakes = random_models(3, 2, 8)
    target = np.ones(8, np.float32)
    assert sorted(ModelIndex(ids, embeddings, stakes).select(target, 5)) == sorted(ids)
    assert ModelIndex([], np.zeros((0, 8), np.float32), []).select(target, 3) == []


def test_selection_independent_of_memory_layout_and_byte_order():
    ids, embeddings, stakes = random_models(5, 200, 64)
    target = np.random.default_rng(6).standard_normal(64).astype(np.float32)
    reference = ModelIndex(ids, embeddings, stakes).select(target, 3)
    for layout in (np.asfortranarray(embeddings), embeddings.astype(">f4"), embeddings.T.copy().T):
        assert ModelIndex(ids, layout, stakes).select(target, 3) == reference
        assert ModelIndex(ids, layout, stakes).select(target.astype(">f4"), 3) == reference


def test_candidates_contain_the_top_k_under_any_summation_order_within_the_bound():
    """A different BLAS sums in another order: model that as noise inside the proven bound."""
    ids, embeddings, stakes = random_models(9, 500, 128)
    index = ModelIndex(ids, embeddings, stakes)
    target = np.random.default_rng(10).standard_normal(128).astype(np.float32)
    approx = index.approx_distances(target[None, :])[0]
    norm = float(math.fsum((target.astype(np.float64) ** 2).tolist()))
    truth = index.rank_exactly(target, norm, range(len(ids)), 3)
    rng = np.random.default_rng(11)
    for _ in range(20):
        # Half the proven margin: what a different summation order may at most change.
        half = prefilter_margin(128) / 2
        noisy = approx + rng.uniform(-half, half, approx.shape)
        assert index.rank_exactly(target, norm, index.candidate_rows(noisy, 3), 3) == truth


def test_select_many_equals_one_by_one():
    ids, embeddings, stakes = random_models(12, 300, 32)
    targets = [target_embedding(target_seed(b"s" * 32, i), 32) for i in range(5)]
    index = ModelIndex(ids, embeddings, stakes)
    assert index.select_many(targets, 3) == [index.select(t, 3) for t in targets]


@pytest.mark.parametrize(
    "ids, embeddings, stakes, error",
    [
        ([b"a"], np.ones((2, 4), np.float32), [1, 1], ModelSetMismatch),
        ([b"a", b"b"], np.ones((2, 4), np.float32), [1], ModelSetMismatch),
        ([b"a"], np.array([[1, np.nan, 0, 0]], np.float32), [1], NonFiniteEmbedding),
        ([b"a"], np.zeros((1, 4), np.float32), [1], ZeroEmbedding),
        ([b"a"], np.ones((1, 4), np.float64), [1], MalformedInput),
    ],
)
def test_bad_model_sets_raise_typed_errors(ids, embeddings, stakes, error):
    with pytest.raises(error):
        ModelIndex(ids, embeddings, stakes).select(np.ones(4, np.float32), 1)


def test_bad_target_raises_typed_errors():
    ids, embeddings, stakes = random_models(0, 4, 8)
    with pytest.raises(EmbeddingDimensionMismatch) as raised:
        ModelIndex(ids, embeddings, stakes).select(np.ones(9, np.float32), 1)
    assert raised.value.values() == {"expected": 8, "got": 9}
    with pytest.raises(ZeroEmbedding):
        ModelIndex(ids, embeddings, stakes).select(np.zeros(8, np.float32), 1)


def test_selection_across_prefilter_row_blocks_equals_brute_force():
    ids, embeddings, stakes = random_models(13, 4_500, 8, equal_stakes=True)  # > 2 blocks of rows
    embeddings[4_400:] = embeddings[:100]  # exact ties that straddle the blocks
    target = np.random.default_rng(14).standard_normal(8).astype(np.float32)
    assert ModelIndex(ids, embeddings, stakes).select(target, 5) == brute_force(target, ids, embeddings, stakes, 5)


@pytest.mark.parametrize("scale_spread, scale", [(0.0, 1.0), (30.0, 1.0), (0.0, 1e-30), (0.0, 1e30), (60.0, 1.0)])
def test_prefilter_distances_stay_within_the_proven_margin(scale_spread, scale):
    """Also with magnitudes spread over 2^±60 or near float32's limits, where a plain float32
    dot product would cancel, underflow or overflow."""
    rng = np.random.default_rng(15)
    dim = 256
    scales = np.exp2(rng.uniform(-scale_spread, scale_spread, dim)) * scale
    embeddings = (rng.standard_normal((300, dim)) * scales).astype(np.float32)
    targets = (rng.standard_normal((4, dim)) * scales).astype(np.float32)
    index = ModelIndex(list(range(300)), np.asfortranarray(embeddings), [1] * 300)
    approx = index.approx_distances(targets)
    for t, target in enumerate(targets):
        exact = np.array([cosine_distance_fixed(row, target) for row in embeddings]) / DISTANCE_SCALE
        assert np.abs(approx[t] - exact).max() <= prefilter_margin(dim)


@pytest.mark.parametrize("scale", [1e-35, 1e-20, 1e25, 3e36])
def test_selection_of_tiny_or_huge_embeddings_equals_brute_force(scale):
    ids, embeddings, stakes = random_models(16, 200, 32)
    embeddings = (embeddings.astype(np.float64) * scale).astype(np.float32)
    target = (np.random.default_rng(17).standard_normal(32) * scale).astype(np.float32)
    assert ModelIndex(ids, embeddings, stakes).select(target, 4) == brute_force(target, ids, embeddings, stakes, 4)


def test_selection_is_identical_in_a_process_with_another_blas_threading():
    """BLAS thread count changes the pre-filter's summation order; the selection must not change."""
    import os
    import subprocess
    import sys

    program = (
        "import numpy as np\n"
        "from soma_ray.protocol.targets import ModelIndex, target_embedding, target_seed\n"
        "rng = np.random.default_rng(21)\n"
        "e = rng.standard_normal((3000, 256)).astype(np.float32)\n"
        "stakes = rng.integers(1, 10**12, 3000).tolist()\n"
        "targets = [target_embedding(target_seed(b'p' * 32, i), 256) for i in range(20)]\n"
        "print(ModelIndex(list(range(3000)), e, stakes).select_many(targets, 3))\n"
    )
    results = set()
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        results.add(subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True).stdout)
    rng = np.random.default_rng(21)
    e = rng.standard_normal((3000, 256)).astype(np.float32)
    stakes = rng.integers(1, 10**12, 3000).tolist()
    targets = [target_embedding(target_seed(b"p" * 32, i), 256) for i in range(20)]
    in_process = ModelIndex(list(range(3000)), np.asfortranarray(e), stakes).select_many(targets, 3)
    assert results == {f"{in_process}\n"}
