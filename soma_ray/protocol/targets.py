"""Targets: seeded embeddings, exact cosine distance, stake-weighted model selection (spec §4).

Every number that validators must agree on is computed from float32 inputs with exact
summation and correctly rounded IEEE-754 float64 operations, then converted to fixed point
(`DISTANCE_SCALE`); comparisons and rankings use integers only.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import arrgen

from soma_ray.protocol.accounts import credit, return_to_emission_pool
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.encoding import blake2b256, u64_le
from soma_ray.protocol.errors import (  # ZeroEmbedding, ModelSetMismatch: raised here
    EmbeddingDimensionMismatch,
    MalformedInput,
    ModelSetMismatch,
    NonFiniteEmbedding,
    ZeroEmbedding,
)
from soma_ray.protocol.params import BPS
from soma_ray.protocol.state import CHALLENGE, MODEL, STAKING_POOL, SUBMISSION, TARGET, State
from soma_ray.protocol.types import Challenge, Model, StakingPool, Submission, Target

DISTANCE_SCALE = 10**9  # fixed point: 1.0 cosine distance == 10**9
MAX_DISTANCE_FIXED = 2 * DISTANCE_SCALE

# The pre-filter works on unit vectors rounded to float32 (relative error u = 2^-24 per
# element; no overflow, and underflow can only lose terms below 2^-126). Their float32 dot
# product of length D errs by at most γ_D·|a||b| = γ_D, with γ_D = D·u/(1 − D·u), in ANY
# summation order, with or without FMA (Higham, "Accuracy and Stability of Numerical
# Algorithms", §3.1, with Cauchy–Schwarz). With the rounding of the unit vectors the cosine
# errs by less than γ_{D+2}; we allow twice that, plus 1e-8 for the exact path's rounding to
# 1e-9 and the float64 normalisation.
_PREFILTER_SLACK = 1e-8
_FLOAT32_UNIT_ROUNDOFF = 2.0**-24
_BLOCK_ROWS = 2048


def prefilter_margin(dim: int) -> float:
    """Proven bound on |pre-filter distance − exact distance| for embeddings of `dim`."""
    du = (dim + 2) * _FLOAT32_UNIT_ROUNDOFF
    return 2 * du / (1 - du) + _PREFILTER_SLACK if du < 0.5 else math.inf


def target_seed(checkpoint_seed: bytes, target_index: int) -> bytes:
    """blake2b(checkpoint_digest || u64_le(target_index)) (spec §4)."""
    return blake2b256(checkpoint_seed + u64_le(target_index))


def target_embedding(seed: bytes, dim: int) -> np.ndarray:
    """Standard-normal float32 vector of `dim` elements from a 32-byte seed.

    arrgen takes an unsigned 64-bit seed: we use the first 8 bytes of the seed, little-endian.
    """
    int_seed = int.from_bytes(seed[:8], "little")
    return np.asarray(arrgen.normal_array(int_seed, [dim], 0.0, 1.0), dtype=np.float32)


def _is_float32(array) -> bool:
    return isinstance(array, np.ndarray) and array.dtype.kind == "f" and array.dtype.itemsize == 4


def as_embedding(vector, dim: int | None = None) -> np.ndarray:
    """Validate a float32 vector (array of any byte order/layout, or little-endian bytes).

    Returns a native-order contiguous copy: converting byte order or layout never changes a
    float32 value, so every result computed from it is independent of how the caller stored it.
    Other dtypes are refused rather than silently rounded.
    """
    if isinstance(vector, (bytes, bytearray, memoryview)):
        if len(vector) % 4:
            raise MalformedInput(reason=f"embedding of {len(vector)} bytes is not float32 values")
        vector = np.frombuffer(vector, dtype="<f4")
    if not _is_float32(vector):
        got = getattr(vector, "dtype", type(vector).__name__)
        raise MalformedInput(reason=f"an embedding must be float32, got {got}")
    array = np.ascontiguousarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise EmbeddingDimensionMismatch(expected=dim if dim is not None else -1, got=array.size)
    if dim is not None and array.shape[0] != dim:
        raise EmbeddingDimensionMismatch(expected=dim, got=array.shape[0])
    finite = np.isfinite(array)
    if not finite.all():
        raise NonFiniteEmbedding(index=int(np.argmin(finite)))
    return array


def embedding_bytes(embedding) -> bytes:
    """The canonical encoding of an embedding: little-endian float32 (NaN/inf or a non-vector
    is refused), as RevealModel and RevealSubmission carry it."""
    return as_embedding(embedding).astype("<f4").tobytes()


def _exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    # A product of two float32 values has at most 48 significant bits, so the float64
    # elementwise product is exact; fsum then returns the correctly rounded exact sum.
    return math.fsum((a.astype(np.float64) * b.astype(np.float64)).tolist())


def _cosine_distance_from_sums(dot: float, norm_a: float, norm_b: float) -> int:
    # IEEE-754 sqrt, multiplication and division are correctly rounded, so identical inputs
    # give identical bits on every conforming platform; the result is then fixed point.
    cosine = dot / (math.sqrt(norm_a) * math.sqrt(norm_b))
    distance = int(round((1.0 - cosine) * DISTANCE_SCALE))
    return min(max(distance, 0), MAX_DISTANCE_FIXED)


def cosine_distance_fixed(a, b) -> int:
    """Cosine distance 1 − a·b/(|a||b|) of two float32 vectors, as an integer × 10^9.

    Bit-for-bit the same on every platform and memory layout (spec §0).
    """
    a = as_embedding(a)
    b = as_embedding(b, a.shape[0])
    norm_a, norm_b = _exact_dot(a, a), _exact_dot(b, b)
    if norm_a == 0.0 or norm_b == 0.0:
        raise ZeroEmbedding()
    return _cosine_distance_from_sums(_exact_dot(a, b), norm_a, norm_b)


def _unit_rows(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rows scaled to unit length in float64, rounded to float32 (in row blocks to bound
    memory); and whether any row is zero (float32 squares cannot underflow in float64)."""
    unit = np.empty(matrix.shape, dtype=np.float32)
    zero = False
    for start in range(0, len(matrix), _BLOCK_ROWS):
        block = matrix[start : start + _BLOCK_ROWS].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        zero = zero or bool((norms == 0.0).any())
        unit[start : start + _BLOCK_ROWS] = block / np.where(norms == 0.0, 1.0, norms)[:, None]
    return unit, zero


def selection_key(distance_fixed: int, stake: int) -> tuple:
    """Exact sort key for score = distance / (sqrt(stake) / Σ sqrt(stake)).

    Σ sqrt(stake) is common to all models, so ranking by score is ranking by
    distance / sqrt(stake), i.e. by distance² / stake: a rational, compared exactly.
    A model without stake has an infinite score and ranks last.
    """
    if stake <= 0:
        return (1, Fraction(0))
    return (0, Fraction(distance_fixed * distance_fixed, stake))


class ModelIndex:
    """The Active models' embeddings and stakes, prepared once for many selections.

    `select` returns exactly the ranking of an exact evaluation of every model; a float32
    pre-filter with a proven error margin only decides which models need exact evaluation.
    """

    def __init__(self, model_ids: Sequence, embeddings, stakes: Sequence[int]):
        if not _is_float32(embeddings):
            raise MalformedInput(reason="model embeddings must be a float32 matrix")
        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2 or len(model_ids) != matrix.shape[0] or len(stakes) != matrix.shape[0]:
            raise ModelSetMismatch(
                model_ids=len(model_ids), embeddings=len(matrix) if matrix.ndim else 0, stakes=len(stakes)
            )
        finite_rows = np.isfinite(matrix).all(axis=1)
        if not finite_rows.all():
            as_embedding(matrix[int(np.argmin(finite_rows))])  # raises, naming the element
        self.model_ids = list(model_ids)
        self.stakes = [int(s) for s in stakes]
        self.dim = matrix.shape[1]
        self._matrix = matrix
        self._unit, zero = _unit_rows(matrix)
        if zero:
            raise ZeroEmbedding()
        self._exact_norms: dict[int, float] = {}
        sqrt_stake = np.sqrt(np.maximum(np.asarray(self.stakes, dtype=np.float64), 0.0))
        with np.errstate(divide="ignore"):
            self._inv_sqrt_stake = np.where(sqrt_stake > 0, 1.0 / sqrt_stake, np.inf)

    def __len__(self) -> int:
        return len(self.model_ids)

    def exact_distance(self, row: int, target: np.ndarray, target_norm: float) -> int:
        norm = self._exact_norms.get(row)
        if norm is None:
            norm = self._exact_norms[row] = _exact_dot(self._matrix[row], self._matrix[row])
        return _cosine_distance_from_sums(
            _exact_dot(self._matrix[row], target), norm, target_norm
        )

    def rank_exactly(self, target: np.ndarray, target_norm: float, rows, k: int) -> list:
        """The k lowest exact selection keys among `rows` (all rows: the brute-force ranking)."""
        keyed = sorted(
            (selection_key(self.exact_distance(r, target, target_norm), self.stakes[r]),
             self.model_ids[r])
            for r in rows
        )
        return [model_id for _, model_id in keyed[:k]]

    def candidate_rows(self, approx_distances: np.ndarray, k: int) -> np.ndarray:
        """Rows whose score could be among the k lowest, given the pre-filter's error bound."""
        if len(self) <= k:
            return np.arange(len(self))
        margin = prefilter_margin(self.dim)
        with np.errstate(invalid="ignore"):
            upper = (approx_distances + margin) * self._inv_sqrt_stake * (1 + 1e-12)
            lower = np.maximum(approx_distances - margin, 0.0) * self._inv_sqrt_stake * (1 - 1e-12)
        lower = np.where(np.isnan(lower), np.inf, lower)  # 0 × inf: no stake ranks last
        kth_upper = np.partition(upper, k - 1)[k - 1]
        return np.flatnonzero(lower <= kth_upper)

    def approx_distances(self, targets: np.ndarray) -> np.ndarray:
        """[T, N] cosine distances within `prefilter_margin` of the exact ones, whatever BLAS."""
        unit_targets, _ = _unit_rows(targets)
        return 1.0 - (unit_targets @ self._unit.T).astype(np.float64)

    def select(self, target, k: int) -> list:
        """The stake-weighted k nearest models of one target (spec §4)."""
        return self.select_many([target], k)[0]

    def select_many(self, targets, k: int) -> list[list]:
        """The k lowest-score model ids for each target, ties by model id (spec §4)."""
        if k <= 0 or len(self) == 0:
            return [[] for _ in targets]
        checked = np.stack([as_embedding(t, self.dim) for t in targets])
        norms = [_exact_dot(t, t) for t in checked]
        if 0.0 in norms:
            raise ZeroEmbedding()
        approx = self.approx_distances(checked)
        return [
            self.rank_exactly(target, norm, self.candidate_rows(row, k), k)
            for target, norm, row in zip(checked, norms, approx)
        ]


# --- state transitions: generation (§3 step 7, §4), expiry (§3 step 1), difficulty (§3 step 4),
# --- pruning of Settled targets (§3 step 8) ---


def active_model_index(state: State) -> ModelIndex | None:
    """Active models (ascending id) with their pools' stake; None when there are none. Built once
    and reused until a model or a pool changes, so a checkpoint of fills pays for it once."""
    return state.derived("active_model_index", (MODEL, STAKING_POOL), lambda: build_model_index(state))


def build_model_index(state: State) -> ModelIndex | None:
    ids, rows, stakes = [], [], []
    for model in state.values(MODEL, Model):
        if model.status == "Active" and model.embedding is not None:
            ids.append(model.id)
            rows.append(np.frombuffer(model.embedding, dtype="<f4"))
            stakes.append(state.require(STAKING_POOL, model.staking_pool_id, StakingPool).soma_balance)
    if not ids:
        return None
    return ModelIndex(ids, np.stack(rows), stakes)


def target_index(epoch: int, number_in_epoch: int) -> int:
    """The u64 target index of §4: epoch in the high 32 bits, the epoch's target count below.

    A checkpoint that fills targets and then changes the epoch seeds both from the same
    checkpoint seed; the epoch bits keep their targets apart.
    """
    return epoch << 32 | number_in_epoch


def next_target_seed(state: State, ctx: ExecutionContext) -> bytes:
    """Seed of the next target: this checkpoint's seed and the epoch's target counter (§4)."""
    counter = state.system().target_state.targets_generated_this_epoch
    return target_seed(ctx.checkpoint_seed, target_index(ctx.epoch, counter))


def _fund_target(
    state: State, ctx: ExecutionContext, embedding: np.ndarray, model_ids: list
) -> Target | None:
    """Create one target whose reward moves from the emission pool, within the epoch's remaining
    budget; None once the budget (or the pool) is spent.

    The last target of an epoch may get less than `reward_per_target`: never beyond the budget.
    """
    system = state.system()
    targets = system.target_state
    reward = min(targets.reward_per_target, targets.reward_budget, system.emission_pool.balance)
    if reward <= 0:
        return None
    targets.reward_budget -= reward
    targets.targets_generated_this_epoch += 1
    system.emission_pool.balance -= reward
    state.put_system(system)
    target = Target(
        id=ctx.new_id(),
        embedding=embedding.astype("<f4").tobytes(),
        model_ids=model_ids,
        distance_threshold=targets.distance_threshold,
        reward_pool=reward,
        generation_epoch=ctx.epoch,
        generation_timestamp_ms=ctx.timestamp_ms,
    )
    state.put(TARGET, target.id, target)
    return target


def generate_target(state: State, seed: bytes, ctx: ExecutionContext) -> Target | None:
    """One new Open target from `seed`; None without Active models or budget (§4)."""
    index = active_model_index(state)
    if index is None:
        return None
    embedding = target_embedding(seed, ctx.params.embedding_dim)
    return _fund_target(state, ctx, embedding, index.select(embedding, ctx.params.k_models_per_target))


def generate_epoch_targets(state: State, ctx: ExecutionContext, emission: int) -> list[Target]:
    """§3 step 7: set the new epoch's budget from emission E and generate its initial targets.

    The budget is an allowance on the emission pool: the targets' share of E stays in
    `emission_pool.balance` until a target is funded, and what no target uses stays there.
    Seeds: this checkpoint's seed with `target_index(epoch, 0)`, `target_index(epoch, 1)`, …
    """
    params = ctx.params
    system = state.system()
    budget = emission * (BPS - params.validator_share_bps) // BPS
    system.target_state.reward_budget = budget
    system.target_state.reward_per_target = budget // params.target_hits_per_epoch
    system.target_state.targets_generated_this_epoch = 0
    state.put_system(system)
    index = active_model_index(state)
    if index is None:
        return []
    embeddings = [
        target_embedding(target_seed(ctx.checkpoint_seed, target_index(ctx.epoch, i)), params.embedding_dim)
        for i in range(params.initial_targets_per_epoch)
    ]
    created = []
    for embedding, model_ids in zip(embeddings, index.select_many(embeddings, params.k_models_per_target)):
        target = _fund_target(state, ctx, embedding, model_ids)
        if target is None:
            break
        created.append(target)
    return created


# --- A target's epochs (spec §2): the rules the SDK, the CLI, the strategies and the index call --
# An Open target takes commits in its generation epoch only, and is expired after it; a fill may
# be challenged until its window closes, and claimed after that.


def accepts_commit(generation_epoch: int, epoch: int) -> bool:
    """Whether an Open target generated in `generation_epoch` takes a commit in `epoch`."""
    return epoch == generation_epoch


def is_expired(generation_epoch: int, epoch: int) -> bool:
    """Whether an unfilled target generated in `generation_epoch` is expired in `epoch` (its
    epoch has ended: a claim pays the finder's fee and returns the rest to the emission pool)."""
    return generation_epoch < epoch


def last_challenge_epoch(fill_epoch: int) -> int:
    """The last epoch a fill made in `fill_epoch` may be challenged in (the next one: a fill late
    in its epoch still gets a whole epoch of audits)."""
    return fill_epoch + 1


def challenge_allowed(fill_epoch: int, epoch: int) -> bool:
    """Whether a fill made in `fill_epoch` may still be challenged in `epoch`."""
    return epoch <= last_challenge_epoch(fill_epoch)


def claimable_epoch(fill_epoch: int) -> int:
    """The first epoch a fill made in `fill_epoch` may be claimed in: the one after its
    challenge window closed."""
    return last_challenge_epoch(fill_epoch) + 1


def is_claimable(fill_epoch: int, epoch: int) -> bool:
    """Whether a fill made in `fill_epoch` (standing, unchallenged) may be claimed in `epoch`."""
    return epoch >= claimable_epoch(fill_epoch)


def expire_targets(state: State, ctx: ExecutionContext) -> None:
    """§3 step 1, run before the epoch number advances: the ending epoch is `system.epoch`.

    Committed targets of the ending epoch lose their commit and stay Open, i.e. expired and
    claimable: a stale commit (reveal window passed) has its bond slashed to the emission pool; a
    commit still inside its reveal window gets its bond back, since the miner is not at fault.
    Challenges whose window (`last_challenge_epoch`) closes now are dropped with the challenger's
    bond returned, the miner staying the winner.
    """
    ending = state.system().epoch
    open_challenges = {c.target_id: c for c in state.values(CHALLENGE, Challenge)}
    for target in state.values(TARGET, Target):
        if target.status == "Committed" and target.generation_epoch <= ending:
            drop_commit(state, target, ctx)
        elif target.status == "Challenged" and last_challenge_epoch(target.fill_epoch) <= ending:
            challenge = open_challenges[target.id]
            credit(state, challenge.challenger, challenge.bond)
            state.delete(CHALLENGE, challenge.id)
            target.status = "Filled"
            state.put(TARGET, target.id, target)


def reveal_deadline_ms(submission: Submission, ctx: ExecutionContext) -> int:
    return submission.commit_timestamp_ms + ctx.params.reveal_window_ms


def reveal_window_open(submission: Submission, ctx: ExecutionContext) -> bool:
    """Whether `submission` may still be revealed at `ctx.timestamp_ms` (the deadline included)."""
    return ctx.timestamp_ms <= reveal_deadline_ms(submission, ctx)


def drop_commit(state: State, target: Target, ctx: ExecutionContext) -> None:
    """At the epoch change: refund a commit whose reveal window is open, slash a stale one."""
    submission = state.require(SUBMISSION, target.submission_id, Submission)
    if reveal_window_open(submission, ctx):
        credit(state, submission.miner, submission.bond)
        reopen(state, target, submission)
    else:
        slash_stale_commit(state, target, submission)


def slash_stale_commit(state: State, target: Target, submission: Submission) -> None:
    """Slash `submission`, the commit of `target`, to the emission pool and reopen the target."""
    return_to_emission_pool(state, submission.bond)
    reopen(state, target, submission)


def reopen(state: State, target: Target, submission: Submission) -> None:
    state.delete(SUBMISSION, submission.id)
    target.status = "Open"
    target.submission_id = None
    state.put(TARGET, target.id, target)


def adjust_difficulty(state: State) -> None:
    """§3 step 4: scale the threshold by (1 ∓ rate) from the ending epoch's hits; reset the tally.

    Faster hits than `target_hit_time_ms` make targets harder (smaller threshold); slower hits
    or none make them easier; exactly on time leaves it. Integer arithmetic, clamped to [min, max].
    """
    system = state.system()
    params = system.parameters
    targets = system.target_state
    rate = params.threshold_adjust_bps
    if targets.confirmed_hits == 0:
        factor = BPS + rate
    else:
        average_ms = targets.hit_time_sum_ms // targets.confirmed_hits
        if average_ms < params.target_hit_time_ms:
            factor = BPS - rate
        elif average_ms > params.target_hit_time_ms:
            factor = BPS + rate
        else:
            factor = BPS
    threshold = targets.distance_threshold * factor // BPS
    targets.distance_threshold = min(
        max(threshold, params.min_distance_threshold), params.max_distance_threshold
    )
    targets.hit_time_sum_ms = 0
    targets.confirmed_hits = 0
    state.put_system(system)


def prune_settled_targets(state: State, ctx: ExecutionContext) -> list[bytes]:
    """§3 step 8, the last step of the change into epoch `ctx.epoch`: remove every target Settled
    in an epoch ≤ ctx.epoch − 1 − `settled_retention_epochs`, with its submission(s). Returns the
    removed target ids (ascending).

    A target is removed only when nothing is owed from or to it: reward pool 0, no challenge on it,
    every submission of it with bond 0 (a claim pays the bond out and keeps the record with
    bond 0; a ChallengerWins deletes it). Whatever fails these checks stays (and stays counted by
    the supply invariant): pruning never moves funds, it only forgets paid-out records.
    A target's only submission is `target.submission_id`: one is created only by a commit to an
    Open target (whose submission_id is None), which sets it; every path that clears
    submission_id (reopen, ChallengerWins) deletes that submission.
    Every target marked Settled gets its `settled_epoch` (ClaimRewards, ChallengerWins); data
    dirs from before the field existed have another genesis and are refused.
    Deletion goes through `State.delete`, so the state root, the checkpoint's delta and a
    rollback of a failed epoch change treat it like any other write.
    """
    retention = max(ctx.params.settled_retention_epochs, 0)
    last_prunable = ctx.epoch - 1 - retention  # settled in this epoch or before: removed now
    candidates = [
        target for target in state.values(TARGET, Target)
        if target.status == "Settled" and target.settled_epoch is not None
        and target.settled_epoch <= last_prunable
    ]
    if not candidates:
        return []
    challenged = {challenge.target_id for challenge in state.values(CHALLENGE, Challenge)}
    removed = []
    for target in candidates:
        own = None if target.submission_id is None else state.get(SUBMISSION, target.submission_id, Submission)
        if target.reward_pool or target.id in challenged or (own is not None and own.bond):
            continue
        if own is not None:
            state.delete(SUBMISSION, own.id)
        state.delete(TARGET, target.id)
        removed.append(target.id)
    return removed
