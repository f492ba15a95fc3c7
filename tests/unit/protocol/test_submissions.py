"""CommitSubmission, RevealSubmission, InitiateChallenge, ResolveChallenge, ClaimRewards (spec §2).

Pyspec style: a pre-state from localnet genesis, one transaction kind, then the post-state —
or the typed error with its numbers and an unchanged state (the kind's savepoint is rolled back).
"""
import numpy as np
import pytest

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.crypto import sign_certificate
from soma_ray.protocol.encoding import DOMAIN_VOTE, blake2b256, u64_le
from soma_ray.protocol.errors import (
    AuditWindowOpen, ChallengeAlreadyOpen, ChallengeWindowClosed, CommitmentMismatch, DataTooLarge,
    DistanceExceedsThreshold, EmbeddingDimensionMismatch, InsufficientBalance, InsufficientBond,
    InvalidCertificate, MalformedInput, ModelNotActive, ModelNotInTarget, NonFiniteEmbedding, NotOwner,
    ObjectNotFound, RevealWindowExpired, TargetExpired, TargetNotOpen,
)
from soma_ray.protocol.genesis import genesis, localnet_config, preset_keypair
from soma_ray.protocol.params import BPS
from soma_ray.protocol.state import CHALLENGE, MODEL, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET
from soma_ray.protocol.submissions import (
    TargetNotFilled, challenge_vote_domain, challenge_vote_message, process_claim_rewards, process_commit_submission,
    process_initiate_challenge, process_resolve_challenge, process_reveal_submission,
    submission_commitment,
)
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import ZeroEmbedding
from soma_ray.protocol.types import (
    Challenge, ClaimRewards, CommitSubmission, InitiateChallenge, Model, ResolveChallenge,
    RevealSubmission, StakedSoma, StakingPool, Submission, Target,
)

MINER, OTHER_MINER, CHALLENGER, CLAIMER = (preset_keypair("user", i).address for i in range(4))
VALIDATORS = [preset_keypair("validator", i) for i in range(4)]
T0 = 1_000_000  # consensus time of the transactions, ms
NONCE = b"n" * 16
DATA = b"the data a miner found"


class Net:
    """A localnet genesis state plus the consensus context of the next transaction."""

    def __init__(self):
        self.state = genesis(localnet_config(validators=4, models=4, users=4))  # k = 3 of 4 models
        self.params = self.state.system().parameters
        self.counter = 0

    def ctx(self, sender: bytes, timestamp_ms: int = T0) -> ExecutionContext:
        self.counter += 1
        return ExecutionContext(
            self.params, self.state.system().epoch, timestamp_ms, blake2b256(b"seed" + u64_le(self.counter)),
            sender, blake2b256(b"tx" + u64_le(self.counter)),
        )

    def apply(self, process, tx, sender: bytes, timestamp_ms: int = T0):
        """Run one kind as execution does: inside a savepoint, rolled back on a typed error."""
        self.state.begin()
        try:
            process(self.state, tx, self.ctx(sender, timestamp_ms))
        except Exception:
            self.state.rollback()
            raise
        self.state.commit()

    def expect_error(self, error, fields, process, tx, sender, timestamp_ms=T0):
        root, supply = self.state.state_root(), total_supply(self.state)
        with pytest.raises(error) as raised:
            self.apply(process, tx, sender, timestamp_ms)
        if fields is not None:
            assert raised.value.values() == fields
        assert self.state.state_root() == root and total_supply(self.state) == supply
        return raised.value

    def set_epoch(self, epoch: int) -> None:
        system = self.state.system()
        system.epoch = epoch
        self.state.put_system(system)

    def targets(self, status=None) -> list[Target]:
        return [t for t in self.state.values(TARGET, Target) if status is None or t.status == status]

    def target(self, target_id) -> Target:
        return self.state.require(TARGET, target_id, Target)

    def balance(self, address) -> int:
        return self.state.account(address).balance

    def emission_balance(self) -> int:
        return self.state.system().emission_pool.balance


def reveal_for(target: Target, submission_id: bytes, embedding: bytes | None = None, **changes) -> RevealSubmission:
    """A reveal that fills `target` with its own embedding (distance 0) through its first model."""
    fields = dict(
        submission_id=submission_id, data_hash=blake2b256(DATA), data_size=len(DATA), data_url="http://blobs/x",
        model_id=target.model_ids[0], embedding=target.embedding if embedding is None else embedding,
        loss_score=123, nonce=NONCE,
    )
    fields.update(changes)
    return RevealSubmission(**fields)


def commitment_of(reveal: RevealSubmission) -> bytes:
    return submission_commitment(
        reveal.data_hash, reveal.data_size, reveal.model_id, reveal.embedding, reveal.loss_score, reveal.nonce
    )


def commit(net: Net, target: Target, reveal: RevealSubmission | None = None, sender=MINER, bond=10_000, timestamp_ms=T0) -> bytes:
    """Commit to `reveal` (default: the honest fill); returns the new submission id."""
    reveal = reveal or reveal_for(target, b"")
    before = set(net.state.ids(SUBMISSION))
    net.apply(process_commit_submission, CommitSubmission(target.id, commitment_of(reveal), bond), sender, timestamp_ms)
    (submission_id,) = set(net.state.ids(SUBMISSION)) - before
    return submission_id


def fill(net: Net, target: Target, sender=MINER, bond=10_000) -> bytes:
    submission_id = commit(net, target, sender=sender, bond=bond)
    net.apply(process_reveal_submission, reveal_for(target, submission_id), sender, T0 + 1_000)
    return submission_id


def challenge(net: Net, submission_id: bytes, bond=10_000) -> bytes:
    before = set(net.state.ids(CHALLENGE))
    net.apply(process_initiate_challenge, InitiateChallenge(submission_id, "ScoreFraud", bond), CHALLENGER)
    (challenge_id,) = set(net.state.ids(CHALLENGE)) - before
    return challenge_id


def certificate(net: Net, challenge_id: bytes, verdict: str, signers=VALIDATORS):
    committee = net.state.system().committee
    domain = challenge_vote_domain(net.state.system().chain_id)
    return sign_certificate(committee, list(signers), domain, challenge_vote_message(challenge_id, verdict))


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def target(net) -> Target:
    return net.targets("Open")[0]


# --- CommitSubmission ---------------------------------------------------------------------------


def test_commit_locks_the_bond_and_marks_the_target_committed(net, target):
    supply, balance = total_supply(net.state), net.balance(MINER)
    submission_id = commit(net, target, bond=5_000)
    submission = net.state.require(SUBMISSION, submission_id, Submission)
    assert (submission.miner, submission.bond, submission.commit_timestamp_ms) == (MINER, 5_000, T0)
    assert net.target(target.id).status == "Committed" and net.target(target.id).submission_id == submission_id
    assert net.balance(MINER) == balance - 5_000
    assert total_supply(net.state) == supply


def test_second_commit_on_a_committed_target_fails_target_not_open(net, target):
    commit(net, target)
    reveal = reveal_for(target, b"")
    net.expect_error(
        TargetNotOpen, {"status": "Committed"}, process_commit_submission,
        CommitSubmission(target.id, commitment_of(reveal), 10_000), OTHER_MINER, T0 + 10,
    )


def test_commit_after_the_generation_epoch_fails_target_expired(net, target):
    net.set_epoch(1)
    net.expect_error(
        TargetExpired, {"generation_epoch": 0, "current_epoch": 1}, process_commit_submission,
        CommitSubmission(target.id, b"c" * 32, 10_000), MINER,
    )


def test_commit_below_the_minimum_bond_fails(net, target):
    minimum = net.params.submission_min_bond
    net.expect_error(
        InsufficientBond, {"required": minimum, "provided": minimum - 1}, process_commit_submission,
        CommitSubmission(target.id, b"c" * 32, minimum - 1), MINER,
    )


def test_commit_without_the_funds_for_the_bond_fails(net, target):
    poor = b"\x99" * 32
    net.expect_error(
        InsufficientBalance, {"required": 10_000, "available": 0}, process_commit_submission,
        CommitSubmission(target.id, b"c" * 32, 10_000), poor,
    )


@pytest.mark.parametrize("target_id, commitment, error", [
    (b"\x00" * 32, b"c" * 32, ObjectNotFound), (None, b"short", MalformedInput),
])
def test_commit_to_unknown_target_or_malformed_commitment_fails(net, target, target_id, commitment, error):
    net.expect_error(error, None, process_commit_submission, CommitSubmission(target_id or target.id, commitment, 10_000), MINER)


def test_commit_on_a_stale_commit_slashes_it_to_the_emission_pool(net, target):
    stale_id = commit(net, target, bond=7_000)
    pool, supply = net.emission_balance(), total_supply(net.state)
    deadline = T0 + net.params.reveal_window_ms
    new_id = commit(net, target, sender=OTHER_MINER, timestamp_ms=deadline + 1)
    assert net.state.get(SUBMISSION, stale_id, Submission) is None
    assert net.emission_balance() == pool + 7_000
    assert net.target(target.id).submission_id == new_id
    assert total_supply(net.state) == supply


def test_commit_inside_the_reveal_window_does_not_slash(net, target):
    commit(net, target)
    deadline = T0 + net.params.reveal_window_ms
    net.expect_error(
        TargetNotOpen, {"status": "Committed"}, process_commit_submission,
        CommitSubmission(target.id, b"c" * 32, 10_000), OTHER_MINER, deadline,
    )


# --- RevealSubmission ---------------------------------------------------------------------------


def test_reveal_fills_records_the_hit_and_generates_a_replacement(net, target):
    submission_id = commit(net, target)
    open_before, pool, supply = len(net.targets("Open")), net.emission_balance(), total_supply(net.state)
    reward = net.state.system().target_state.reward_per_target
    reveal_at = T0 + 2_000
    net.apply(process_reveal_submission, reveal_for(target, submission_id), MINER, reveal_at)

    filled = net.target(target.id)
    assert (filled.status, filled.fill_epoch) == ("Filled", 0)
    revealed = net.state.require(SUBMISSION, submission_id, Submission).revealed
    assert revealed.distance == 0 and revealed.model_id == target.model_ids[0]
    tally = net.state.system().target_state
    assert (tally.confirmed_hits, tally.hit_time_sum_ms) == (1, reveal_at - target.generation_timestamp_ms)
    assert len(net.targets("Open")) == open_before + 1  # the replacement
    assert net.emission_balance() == pool - reward
    assert total_supply(net.state) == supply


def test_reveal_by_someone_else_fails_not_owner(net, target):
    submission_id = commit(net, target)
    net.expect_error(
        NotOwner, {"owner": MINER, "sender": OTHER_MINER}, process_reveal_submission,
        reveal_for(target, submission_id), OTHER_MINER,
    )


def test_reveal_after_the_window_fails(net, target):
    submission_id = commit(net, target)
    deadline = T0 + net.params.reveal_window_ms
    net.expect_error(
        RevealWindowExpired, {"deadline_ms": deadline, "now_ms": deadline + 1}, process_reveal_submission,
        reveal_for(target, submission_id), MINER, deadline + 1,
    )


def test_reveal_twice_fails_target_not_open(net, target):
    submission_id = fill(net, target)
    net.expect_error(TargetNotOpen, {"status": "Filled"}, process_reveal_submission, reveal_for(target, submission_id), MINER)


@pytest.mark.parametrize("field, value", [
    ("nonce", b"other"), ("loss_score", 124), ("data_size", len(DATA) + 1), ("data_hash", b"\x00" * 32),
])
def test_reveal_that_differs_from_the_commitment_fails(net, target, field, value):
    submission_id = commit(net, target)
    net.expect_error(
        CommitmentMismatch, {"field": "submission"}, process_reveal_submission,
        reveal_for(target, submission_id, **{field: value}), MINER,
    )


def scenario_reveal_error(net: Net, target: Target, reveal: RevealSubmission, bond=10_000):
    """Commit exactly to `reveal` so that only the rule under test can fail."""
    submission_id = commit(net, target, reveal, bond=bond)
    reveal.submission_id = submission_id
    return reveal


def test_reveal_with_a_model_outside_the_target_fails(net, target):
    outsider = next(m for m in net.state.ids(MODEL) if m not in target.model_ids)
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", model_id=outsider))
    net.expect_error(ModelNotInTarget, {"model_id": outsider}, process_reveal_submission, reveal, MINER)


def test_reveal_with_an_inactive_model_fails(net, target):
    reveal = scenario_reveal_error(net, target, reveal_for(target, b""))
    model = net.state.require(MODEL, reveal.model_id, Model)
    model.status = "Inactive"
    net.state.put(MODEL, model.id, model)
    net.expect_error(ModelNotActive, {"model_id": model.id}, process_reveal_submission, reveal, MINER)


def test_reveal_of_too_much_data_fails(net, target):
    size = net.params.max_submission_bytes + 1
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", data_size=size))
    net.expect_error(DataTooLarge, {"size": size, "max": size - 1}, process_reveal_submission, reveal, MINER)


def test_reveal_with_a_bond_below_size_times_bond_per_byte_fails(net, target):
    size = 1_000
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", data_size=size), bond=5_000)
    net.expect_error(
        InsufficientBond, {"required": size * net.params.bond_per_byte, "provided": 5_000},
        process_reveal_submission, reveal, MINER,
    )


def test_reveal_of_a_distant_embedding_fails_with_the_chain_distance(net, target):
    opposite = (-np.frombuffer(target.embedding, "<f4")).astype("<f4").tobytes()
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", embedding=opposite))
    net.expect_error(
        DistanceExceedsThreshold, {"distance": 2 * 10**9, "threshold": target.distance_threshold},
        process_reveal_submission, reveal, MINER,
    )


def test_reveal_just_within_the_threshold_fills(net, target):
    """A vector at distance ≈ threshold − ε passes: the comparison is on the chain's fixed point."""
    t = np.frombuffer(target.embedding, "<f4").astype(np.float64)
    other = np.random.default_rng(0).standard_normal(t.size)
    other -= other @ t / (t @ t) * t  # orthogonal to t: distance 1.0 exactly in reals
    near = (0.01 * t / np.linalg.norm(t) + other / np.linalg.norm(other)).astype("<f4").tobytes()
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", embedding=near))
    net.apply(process_reveal_submission, reveal, MINER)
    distance = net.state.require(SUBMISSION, reveal.submission_id, Submission).revealed.distance
    assert 0.98e9 < distance < 1.0e9 <= target.distance_threshold


@pytest.mark.parametrize("embedding, error, fields", [
    (np.ones(63, "<f4").tobytes(), EmbeddingDimensionMismatch, {"expected": 64, "got": 63}),
    (np.r_[np.ones(5), np.nan, np.ones(58)].astype("<f4").tobytes(), NonFiniteEmbedding, {"index": 5}),
    (np.zeros(64, "<f4").tobytes(), ZeroEmbedding, {}),
    (b"\x00" * 7, MalformedInput, None),
])
def test_reveal_of_a_malformed_embedding_fails(net, target, embedding, error, fields):
    reveal = scenario_reveal_error(net, target, reveal_for(target, b"", embedding=embedding))
    net.expect_error(error, fields, process_reveal_submission, reveal, MINER)


# --- InitiateChallenge --------------------------------------------------------------------------


def test_challenge_locks_the_bond_and_marks_the_target_challenged(net, target):
    submission_id = fill(net, target, bond=9_000)
    balance, supply = net.balance(CHALLENGER), total_supply(net.state)
    challenge_id = challenge(net, submission_id, bond=3_000)
    record = net.state.require(CHALLENGE, challenge_id, Challenge)
    assert (record.challenger, record.bond, record.kind, record.target_id) == (CHALLENGER, 3_000, "ScoreFraud", target.id)
    assert net.target(target.id).status == "Challenged"
    assert net.balance(CHALLENGER) == balance - 3_000 and total_supply(net.state) == supply


def test_challenge_bond_below_the_ratio_fails_with_the_rounded_up_requirement(net, target):
    submission_id = fill(net, target, bond=9_001)
    required = -(-9_001 * net.params.challenge_bond_ratio_bps // BPS)  # 3000.03… → 3001
    assert required == 3_001
    net.expect_error(
        InsufficientBond, {"required": required, "provided": required - 1}, process_initiate_challenge,
        InitiateChallenge(submission_id, "DataFraud", required - 1), CHALLENGER,
    )


def test_second_challenge_fails_challenge_already_open(net, target):
    submission_id = fill(net, target)
    first = challenge(net, submission_id)
    net.expect_error(
        ChallengeAlreadyOpen, {"challenge_id": first}, process_initiate_challenge,
        InitiateChallenge(submission_id, "DataFraud", 10_000), OTHER_MINER,
    )


def test_challenge_after_fill_epoch_plus_one_fails(net, target):
    submission_id = fill(net, target)
    net.set_epoch(2)
    net.expect_error(
        ChallengeWindowClosed, {"fill_epoch": 0, "current_epoch": 2}, process_initiate_challenge,
        InitiateChallenge(submission_id, "ScoreFraud", 10_000), CHALLENGER,
    )


def test_challenge_in_fill_epoch_plus_one_is_allowed(net, target):
    submission_id = fill(net, target)
    net.set_epoch(1)
    challenge(net, submission_id)
    assert net.target(target.id).status == "Challenged"


def test_challenge_of_an_unrevealed_submission_fails(net, target):
    submission_id = commit(net, target)
    net.expect_error(
        TargetNotFilled, {"status": "Committed"}, process_initiate_challenge,
        InitiateChallenge(submission_id, "ScoreFraud", 10_000), CHALLENGER,
    )


# --- ResolveChallenge ---------------------------------------------------------------------------


def test_challenger_wins_takes_the_miner_bond_and_reopens_the_target(net, target):
    submission_id = fill(net, target, bond=9_000)
    challenge_id = challenge(net, submission_id, bond=3_000)
    balance, supply = net.balance(CHALLENGER), total_supply(net.state)
    net.apply(process_resolve_challenge, ResolveChallenge(challenge_id, "ChallengerWins", certificate(net, challenge_id, "ChallengerWins")), OTHER_MINER)
    assert net.balance(CHALLENGER) == balance + 3_000 + 9_000
    reopened = net.target(target.id)
    assert (reopened.status, reopened.submission_id, reopened.fill_epoch) == ("Open", None, None)
    assert net.state.get(SUBMISSION, submission_id, Submission) is None
    assert net.state.get(CHALLENGE, challenge_id, Challenge) is None
    assert total_supply(net.state) == supply


def test_challenger_wins_after_the_generation_epoch_returns_the_reward_to_the_emission_pool(net, target):
    submission_id = fill(net, target)
    net.set_epoch(1)
    challenge_id = challenge(net, submission_id)
    pool = net.emission_balance()
    net.apply(process_resolve_challenge, ResolveChallenge(challenge_id, "ChallengerWins", certificate(net, challenge_id, "ChallengerWins")), CHALLENGER)
    settled = net.target(target.id)
    assert (settled.status, settled.reward_pool) == ("Settled", 0)
    assert net.emission_balance() == pool + target.reward_pool


def test_miner_wins_takes_the_challenger_bond(net, target):
    submission_id = fill(net, target)
    challenge_id = challenge(net, submission_id, bond=4_000)
    balance = net.balance(MINER)
    net.apply(process_resolve_challenge, ResolveChallenge(challenge_id, "MinerWins", certificate(net, challenge_id, "MinerWins")), CHALLENGER)
    assert net.balance(MINER) == balance + 4_000
    assert net.target(target.id).status == "Filled"
    assert net.state.require(SUBMISSION, submission_id, Submission).bond == 10_000


def test_certificate_below_quorum_fails(net, target):
    challenge_id = challenge(net, fill(net, target))
    cert = certificate(net, challenge_id, "ChallengerWins", VALIDATORS[:2])  # 2 × 2500 < 6667
    net.expect_error(
        InvalidCertificate, {"reason": "voting power 5000 is below the quorum 6667"}, process_resolve_challenge,
        ResolveChallenge(challenge_id, "ChallengerWins", cert), CHALLENGER,
    )


def test_certificate_for_the_other_verdict_fails(net, target):
    challenge_id = challenge(net, fill(net, target))
    cert = certificate(net, challenge_id, "MinerWins")
    error = net.expect_error(InvalidCertificate, None, process_resolve_challenge, ResolveChallenge(challenge_id, "ChallengerWins", cert), CHALLENGER)
    assert "bad signature" in error.reason


def test_certificate_signed_under_another_domain_fails(net, target):
    challenge_id = challenge(net, fill(net, target))
    committee = net.state.system().committee
    cert = sign_certificate(committee, VALIDATORS, DOMAIN_VOTE, challenge_vote_message(challenge_id, "MinerWins"))
    net.expect_error(InvalidCertificate, None, process_resolve_challenge, ResolveChallenge(challenge_id, "MinerWins", cert), CHALLENGER)


def test_certificate_of_another_network_fails(net, target):
    # Issue 18: the same committee's votes on the same challenge id, made for another network
    # (another localnet with the same public preset keys), do not resolve the challenge here.
    challenge_id = challenge(net, fill(net, target))
    committee = net.state.system().committee
    other = challenge_vote_domain(blake2b256(b"another network"))
    cert = sign_certificate(committee, VALIDATORS, other, challenge_vote_message(challenge_id, "MinerWins"))
    error = net.expect_error(InvalidCertificate, None, process_resolve_challenge,
                             ResolveChallenge(challenge_id, "MinerWins", cert), CHALLENGER)
    assert "bad signature" in error.reason


def test_resolving_an_unknown_challenge_fails(net):
    net.expect_error(
        ObjectNotFound, {"kind": "challenge", "id": b"\x01" * 32}, process_resolve_challenge,
        ResolveChallenge(b"\x01" * 32, "MinerWins", certificate(net, b"\x01" * 32, "MinerWins")), CHALLENGER,
    )


# --- ClaimRewards -------------------------------------------------------------------------------


def test_claim_pays_finder_fee_miner_share_and_bond_and_model_pool_with_commission(net, target):
    submission_id = fill(net, target, bond=10_000)
    model = net.state.require(MODEL, target.model_ids[0], Model)
    pool_before = net.state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    net.set_epoch(2)
    claimer, miner, supply = net.balance(CLAIMER), net.balance(MINER), total_supply(net.state)
    stakes_before = set(net.state.ids(STAKED_SOMA))
    net.apply(process_claim_rewards, ClaimRewards(target.id), CLAIMER)

    reward = target.reward_pool
    fee = reward * 50 // 10_000  # claimer_fee_bps
    miner_share = (reward - fee) * 5_000 // 10_000  # submitter_share_bps
    model_share = reward - fee - miner_share
    commission = model_share * model.commission_bps // 10_000
    assert net.balance(CLAIMER) == claimer + fee
    assert net.balance(MINER) == miner + miner_share + 10_000
    pool = net.state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    assert pool.soma_balance == pool_before.soma_balance + model_share - commission
    assert pool.pending_stake == pool_before.pending_stake + commission
    (new_stake,) = [net.state.require(STAKED_SOMA, i, StakedSoma) for i in set(net.state.ids(STAKED_SOMA)) - stakes_before]
    assert (new_stake.owner, new_stake.principal, new_stake.activation_epoch) == (model.owner, commission, 3)
    settled = net.target(target.id)
    assert (settled.status, settled.reward_pool) == ("Settled", 0)
    assert net.state.require(SUBMISSION, submission_id, Submission).bond == 0
    assert total_supply(net.state) == supply


def test_miner_claiming_gets_the_finder_fee_too(net, target):
    fill(net, target, bond=10_000)
    net.set_epoch(2)
    miner = net.balance(MINER)
    net.apply(process_claim_rewards, ClaimRewards(target.id), MINER)
    reward = target.reward_pool
    fee = reward * 50 // 10_000
    assert net.balance(MINER) == miner + fee + (reward - fee) * 5_000 // 10_000 + 10_000


def test_claim_during_the_audit_window_fails(net, target):
    fill(net, target)
    net.set_epoch(1)
    net.expect_error(
        AuditWindowOpen, {"claimable_epoch": 2, "current_epoch": 1}, process_claim_rewards, ClaimRewards(target.id), CLAIMER,
    )


def test_claim_with_an_open_challenge_fails(net, target):
    challenge_id = challenge(net, fill(net, target))
    net.set_epoch(2)
    net.expect_error(ChallengeAlreadyOpen, {"challenge_id": challenge_id}, process_claim_rewards, ClaimRewards(target.id), CLAIMER)


def test_claim_of_an_expired_open_target_pays_the_fee_and_returns_the_rest(net, target):
    net.set_epoch(1)
    claimer, pool, supply = net.balance(CLAIMER), net.emission_balance(), total_supply(net.state)
    net.apply(process_claim_rewards, ClaimRewards(target.id), CLAIMER)
    fee = target.reward_pool * net.params.claimer_fee_bps // BPS
    assert net.balance(CLAIMER) == claimer + fee
    assert net.emission_balance() == pool + target.reward_pool - fee
    assert net.target(target.id).status == "Settled" and total_supply(net.state) == supply


@pytest.mark.parametrize("status", ["Open", "Committed", "Settled"])
def test_claim_of_an_unclaimable_target_fails_with_its_status(net, target, status):
    if status == "Committed":
        commit(net, target)
    if status == "Settled":
        net.set_epoch(1)
        net.apply(process_claim_rewards, ClaimRewards(target.id), CLAIMER)
    net.expect_error(TargetNotFilled, {"status": status}, process_claim_rewards, ClaimRewards(target.id), CLAIMER)


# --- helpers for miners and aggregators ---------------------------------------------------------


def test_submission_commitment_is_blake2b_of_the_domain_and_the_msgpack_fields():
    import hashlib

    import msgspec

    fields = [b"h" * 32, 21, b"m" * 32, b"\x00\x00\x80?" * 4, -5, b"nonce"]
    expected = hashlib.blake2b(b"soma/submission-commitment/v1" + msgspec.msgpack.encode(fields), digest_size=32).digest()
    assert submission_commitment(*fields) == expected


@pytest.mark.parametrize("position", range(6))
def test_submission_commitment_binds_every_field(position):
    fields = [b"h" * 32, 21, b"m" * 32, b"\x00\x00\x80?" * 4, 7, b"nonce"]
    changed = list(fields)
    changed[position] = changed[position] + (1 if isinstance(changed[position], int) else b"x")
    assert submission_commitment(*changed) != submission_commitment(*fields)


def test_challenge_vote_messages_differ_by_verdict_and_challenge():
    messages = {challenge_vote_message(c, v) for c in (b"\x01" * 32, b"\x02" * 32) for v in ("MinerWins", "ChallengerWins")}
    assert len(messages) == 4
