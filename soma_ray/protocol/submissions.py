"""Submissions by commit-reveal, challenges, and reward claims (spec §2 "Targets", §5).

Life of a target: Open → (CommitSubmission) Committed → (RevealSubmission) Filled →
[(InitiateChallenge) Challenged → (ResolveChallenge) Filled or reopened] → (ClaimRewards,
from its `claimable_epoch`) Settled. An Open target whose epoch has ended is expired: a claim
pays the finder's fee and returns the rest to the emission pool. A Settled target records its
`settled_epoch`; the epoch change prunes it, with its paid-out submission, once
`settled_retention_epochs` more epochs have ended (`targets.prune_settled_targets`).

Funds move only between accounts, bonds held in Submission/Challenge objects, target reward
pools, staking pools and the emission pool, so the supply invariant holds after every kind.
"""
from __future__ import annotations

from soma_ray.protocol.accounts import credit, debit, return_to_emission_pool
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import verify_certificate
from soma_ray.protocol.encoding import (
    DOMAIN_CHALLENGE_VOTE, DOMAIN_SUBMISSION_COMMITMENT, digest, encode, signing_domain,
)
from soma_ray.protocol.errors import (
    AuditWindowOpen, ChallengeAlreadyOpen, ChallengeWindowClosed, CommitmentMismatch, DataTooLarge,
    DistanceExceedsThreshold, InsufficientBond, MalformedInput, ModelNotActive, ModelNotInTarget,
    NotOwner, PoolInactive, RevealWindowExpired, TargetExpired, TargetNotFilled, TargetNotOpen,
)
from soma_ray.protocol.params import BPS, Parameters
from soma_ray.protocol.staking import stake_activation_epoch, stake_pending
from soma_ray.protocol.state import CHALLENGE, MODEL, STAKING_POOL, SUBMISSION, TARGET, State
from soma_ray.protocol.targets import (
    accepts_commit, as_embedding, challenge_allowed, claimable_epoch, cosine_distance_fixed,
    generate_target, is_claimable, is_expired, next_target_seed, reveal_deadline_ms,
    reveal_window_open, slash_stale_commit,
)
from soma_ray.protocol.types import (
    Challenge, ClaimRewards, CommitSubmission, InitiateChallenge, Model, ResolveChallenge,
    RevealedSubmission, RevealSubmission, StakingPool, Submission, Target, Verdict,
)

COMMITMENT_BYTES = 32


# A loss crosses the chain in fixed point: loss_score = round(loss × LOSS_SCALE) (as distances
# use DISTANCE_SCALE); audits compare the recomputed loss in the same scale.
LOSS_SCALE = 10**9


def submission_commitment(
    data_hash: bytes, data_size: int, model_id: bytes, embedding: bytes, loss_score: int, nonce: bytes
) -> bytes:
    """H(data_hash, data_size, model_id, embedding, loss_score, nonce): what a miner commits to.

    `embedding` is the little-endian float32 bytes that the reveal will carry; `nonce` is
    secret random bytes that keep the commitment from being guessed before the reveal.
    """
    fields = (bytes(data_hash), data_size, bytes(model_id), bytes(embedding), loss_score, bytes(nonce))
    return digest(DOMAIN_SUBMISSION_COMMITMENT, encode(fields))


def challenge_vote_message(challenge_id: bytes, verdict: Verdict) -> bytes:
    """The bytes validators sign (under `challenge_vote_domain`) to vote `verdict` on a challenge."""
    return encode((bytes(challenge_id), verdict))


def challenge_vote_domain(chain_id: bytes) -> bytes:
    """What a challenge vote is signed under: DOMAIN_CHALLENGE_VOTE and the network's chain id,
    so a vote (and a certificate) made on one network never resolves a challenge on another."""
    return signing_domain(DOMAIN_CHALLENGE_VOTE, chain_id)


# --- CommitSubmission ---------------------------------------------------------------------------


def clear_expired_commit(state: State, target: Target, ctx: ExecutionContext) -> None:
    """A Committed target whose reveal window has passed reopens; the stale bond is slashed."""
    if target.status != "Committed":
        return
    stale = state.require(SUBMISSION, target.submission_id, Submission)
    if not reveal_window_open(stale, ctx):
        slash_stale_commit(state, target, stale)


def process_commit_submission(state: State, tx: CommitSubmission, ctx: ExecutionContext) -> None:
    if len(tx.commitment) != COMMITMENT_BYTES:
        raise MalformedInput(reason=f"a commitment is {COMMITMENT_BYTES} bytes, got {len(tx.commitment)}")
    target = state.require(TARGET, tx.target_id, Target)
    clear_expired_commit(state, target, ctx)
    if target.status != "Open":
        raise TargetNotOpen(status=target.status)
    if not accepts_commit(target.generation_epoch, ctx.epoch):
        raise TargetExpired(generation_epoch=target.generation_epoch, current_epoch=ctx.epoch)
    if tx.bond < ctx.params.submission_min_bond:
        raise InsufficientBond(required=ctx.params.submission_min_bond, provided=tx.bond)
    debit(state, ctx.sender, tx.bond)
    submission = Submission(
        id=ctx.new_id(),
        target_id=target.id,
        miner=ctx.sender,
        commitment=bytes(tx.commitment),
        bond=tx.bond,
        commit_timestamp_ms=ctx.timestamp_ms,
        commit_epoch=ctx.epoch,
    )
    state.put(SUBMISSION, submission.id, submission)
    target.status = "Committed"
    target.submission_id = submission.id
    state.put(TARGET, target.id, target)


# --- RevealSubmission ---------------------------------------------------------------------------


def require_revealable(state: State, submission: Submission, ctx: ExecutionContext) -> Target:
    if submission.miner != ctx.sender:
        raise NotOwner(owner=submission.miner, sender=ctx.sender)
    target = state.require(TARGET, submission.target_id, Target)
    if target.status != "Committed" or target.submission_id != submission.id:
        raise TargetNotOpen(status=target.status)
    if not reveal_window_open(submission, ctx):
        raise RevealWindowExpired(deadline_ms=reveal_deadline_ms(submission, ctx), now_ms=ctx.timestamp_ms)
    return target


def require_eligible_model(state: State, target: Target, model_id: bytes) -> None:
    if model_id not in target.model_ids:
        raise ModelNotInTarget(model_id=model_id)
    model = state.get(MODEL, model_id, Model)
    if model is None or model.status != "Active":
        raise ModelNotActive(model_id=model_id)


def require_data_bond(submission: Submission, data_size: int, ctx: ExecutionContext) -> None:
    params = ctx.params
    if data_size < 0:
        raise MalformedInput(reason=f"data_size {data_size} is negative")
    if data_size > params.max_submission_bytes:
        raise DataTooLarge(size=data_size, max=params.max_submission_bytes)
    required = required_bond(params, data_size)  # the commit already posted the minimum
    if submission.bond < required:
        raise InsufficientBond(required=required, provided=submission.bond)


def chain_distance(embedding: bytes, target: Target, dim: int) -> int:
    """The chain's own distance between the revealed embedding and the target (§0)."""
    return cosine_distance_fixed(as_embedding(embedding, dim), target.embedding)


def hit_time_ms(target: Target, ctx: ExecutionContext) -> int:
    """Reveal timestamp − target generation timestamp (§3.4), clamped at 0 so a hit never counts
    as faster than instant."""
    return max(0, ctx.timestamp_ms - target.generation_timestamp_ms)


def _tally_hit(state: State, ms: int, hits: int) -> None:
    """Change the ending epoch's hit tally, which feeds the difficulty (§3.4): a reveal adds its
    hit (`ms`, 1); a challenger's win undoes it (`-ms`, -1) while it is still in this epoch's tally."""
    system = state.system()
    system.target_state.hit_time_sum_ms += ms
    system.target_state.confirmed_hits += hits
    state.put_system(system)


def process_reveal_submission(state: State, tx: RevealSubmission, ctx: ExecutionContext) -> None:
    submission = state.require(SUBMISSION, tx.submission_id, Submission)
    target = require_revealable(state, submission, ctx)
    commitment = submission_commitment(
        tx.data_hash, tx.data_size, tx.model_id, tx.embedding, tx.loss_score, tx.nonce
    )
    if commitment != submission.commitment:
        raise CommitmentMismatch(field="submission")
    require_eligible_model(state, target, tx.model_id)
    require_data_bond(submission, tx.data_size, ctx)
    distance = chain_distance(tx.embedding, target, ctx.params.embedding_dim)
    if distance > target.distance_threshold:
        raise DistanceExceedsThreshold(distance=distance, threshold=target.distance_threshold)
    submission.revealed = RevealedSubmission(
        data_hash=bytes(tx.data_hash),
        data_size=tx.data_size,
        data_url=tx.data_url,
        model_id=bytes(tx.model_id),
        embedding=bytes(tx.embedding),
        loss_score=tx.loss_score,
        distance=distance,
        hit_time_ms=hit_time_ms(target, ctx),
    )
    state.put(SUBMISSION, submission.id, submission)
    target.status = "Filled"
    target.fill_epoch = ctx.epoch
    state.put(TARGET, target.id, target)
    _tally_hit(state, submission.revealed.hit_time_ms, 1)
    generate_target(state, next_target_seed(state, ctx), ctx)


# --- InitiateChallenge / ResolveChallenge -------------------------------------------------------


def open_challenge_of(state: State, target_id: bytes) -> Challenge | None:
    return next((c for c in state.values(CHALLENGE, Challenge) if c.target_id == target_id), None)


def challenge_bond_for(params: Parameters, submission_bond: int) -> int:
    """The least bond a challenge of a submission bonded `submission_bond` posts:
    submission bond × challenge_bond_ratio_bps / 10000, rounded up."""
    return -(-submission_bond * params.challenge_bond_ratio_bps // BPS)


def process_initiate_challenge(state: State, tx: InitiateChallenge, ctx: ExecutionContext) -> None:
    submission = state.require(SUBMISSION, tx.submission_id, Submission)
    target = state.require(TARGET, submission.target_id, Target)
    if target.status == "Challenged":
        raise ChallengeAlreadyOpen(challenge_id=open_challenge_of(state, target.id).id)
    if target.status != "Filled" or target.submission_id != submission.id:
        raise TargetNotFilled(status=target.status)
    if not challenge_allowed(target.fill_epoch, ctx.epoch):
        raise ChallengeWindowClosed(fill_epoch=target.fill_epoch, current_epoch=ctx.epoch)
    required = challenge_bond_for(ctx.params, submission.bond)
    if tx.bond < required:
        raise InsufficientBond(required=required, provided=tx.bond)
    debit(state, ctx.sender, tx.bond)
    challenge = Challenge(
        id=ctx.new_id(),
        submission_id=submission.id,
        target_id=target.id,
        challenger=ctx.sender,
        kind=tx.kind,
        bond=tx.bond,
        opened_epoch=ctx.epoch,
    )
    state.put(CHALLENGE, challenge.id, challenge)
    target.status = "Challenged"
    state.put(TARGET, target.id, target)


def challenger_wins(state: State, challenge: Challenge, target: Target, ctx: ExecutionContext) -> None:
    """Miner's bond and the challenger's own bond go to the challenger; the fill is undone."""
    submission = state.require(SUBMISSION, challenge.submission_id, Submission)
    credit(state, challenge.challenger, challenge.bond + submission.bond)
    if target.fill_epoch == ctx.epoch:  # the tally resets at each epoch change
        _tally_hit(state, -submission.revealed.hit_time_ms, -1)
    state.delete(SUBMISSION, submission.id)
    target.submission_id = None
    target.fill_epoch = None
    if accepts_commit(target.generation_epoch, ctx.epoch):
        target.status = "Open"
    else:
        return_to_emission_pool(state, target.reward_pool)
        target.reward_pool = 0
        target.status = "Settled"
        target.settled_epoch = ctx.epoch


def miner_wins(state: State, challenge: Challenge, target: Target) -> None:
    submission = state.require(SUBMISSION, challenge.submission_id, Submission)
    credit(state, submission.miner, challenge.bond)
    target.status = "Filled"


def process_resolve_challenge(state: State, tx: ResolveChallenge, ctx: ExecutionContext) -> None:
    """Anyone may submit a 2f+1 certificate of the current committee on one verdict (§2, §5)."""
    challenge = state.require(CHALLENGE, tx.challenge_id, Challenge)
    system = state.system()
    verify_certificate(
        system.committee, challenge_vote_domain(system.chain_id), challenge_vote_message(challenge.id, tx.verdict),
        tx.certificate, ctx.params.quorum,
    )
    target = state.require(TARGET, challenge.target_id, Target)
    if tx.verdict == "ChallengerWins":
        challenger_wins(state, challenge, target, ctx)
    else:
        miner_wins(state, challenge, target)
    state.delete(CHALLENGE, challenge.id)
    state.put(TARGET, target.id, target)


# --- ClaimRewards -------------------------------------------------------------------------------


def finder_fee(reward: int, ctx: ExecutionContext) -> int:
    return reward * ctx.params.claimer_fee_bps // BPS


def claim_split(params: Parameters, reward: int) -> tuple[int, int, int]:
    """(finder's fee, miner's share, the model's) of claiming a filled target's `reward`."""
    fee = reward * params.claimer_fee_bps // BPS
    miner = (reward - fee) * params.submitter_share_bps // BPS
    return fee, miner, reward - fee - miner


def required_bond(params: Parameters, data_size: int) -> int:
    """The least bond a submission of `data_size` bytes may post at its commit (the minimum,
    and enough for its size at the reveal)."""
    return max(params.submission_min_bond, data_size * params.bond_per_byte)


def submission_cost(params: Parameters, data_size: int) -> int:
    """What a miner needs to submit `data_size` bytes: the least bond, and the fees of the
    commit and the reveal (the balance the SDK and the CLI check before they send anything)."""
    return required_bond(params, data_size) + 2 * params.base_fee


def pay_model(state: State, model_id: bytes, amount: int, ctx: ExecutionContext) -> None:
    """The model's share: commission to the owner as new stake, the rest compounds in its pool.

    If the model is gone the share returns to the emission pool; if its pool no longer takes
    stake, the owner's commission is paid to the owner's balance instead.
    """
    model = state.get(MODEL, model_id, Model)
    if model is None:
        return_to_emission_pool(state, amount)
        return
    commission = amount * model.commission_bps // BPS
    pool = state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    pool.soma_balance += amount - commission
    state.put(STAKING_POOL, pool.id, pool)
    if commission == 0:
        return
    try:
        stake_pending(state, ctx, pool, model.owner, commission, stake_activation_epoch(ctx.epoch))
    except PoolInactive:
        credit(state, model.owner, commission)


def settle_filled(state: State, target: Target, ctx: ExecutionContext) -> None:
    if not is_claimable(target.fill_epoch, ctx.epoch):
        raise AuditWindowOpen(claimable_epoch=claimable_epoch(target.fill_epoch), current_epoch=ctx.epoch)
    submission = state.require(SUBMISSION, target.submission_id, Submission)
    fee, miner_share, model_share = claim_split(ctx.params, target.reward_pool)
    credit(state, ctx.sender, fee)
    credit(state, submission.miner, miner_share + submission.bond)
    pay_model(state, submission.revealed.model_id, model_share, ctx)
    submission.bond = 0
    state.put(SUBMISSION, submission.id, submission)


def settle_expired(state: State, target: Target, ctx: ExecutionContext) -> None:
    if not is_expired(target.generation_epoch, ctx.epoch):
        raise TargetNotFilled(status=target.status)
    fee = finder_fee(target.reward_pool, ctx)
    credit(state, ctx.sender, fee)
    return_to_emission_pool(state, target.reward_pool - fee)


def process_claim_rewards(state: State, tx: ClaimRewards, ctx: ExecutionContext) -> None:
    target = state.require(TARGET, tx.target_id, Target)
    if target.status == "Challenged":
        raise ChallengeAlreadyOpen(challenge_id=open_challenge_of(state, target.id).id)
    if target.status == "Filled":
        settle_filled(state, target, ctx)
    elif target.status == "Open":
        settle_expired(state, target, ctx)
    else:
        raise TargetNotFilled(status=target.status)
    target.reward_pool = 0
    target.status = "Settled"
    target.settled_epoch = ctx.epoch
    state.put(TARGET, target.id, target)
