"""Whole target lifecycles through signed transactions, checkpoints and epoch changes (Simulator).

After every checkpoint the supply invariant of spec §3 holds exactly.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle_network import CHALLENGER, CLAIMER, MINER, RIVAL, Network
from soma_ray.protocol.state import ACCOUNT, CHALLENGE, MODEL, STAKING_POOL, SUBMISSION, TARGET
from soma_ray.protocol.types import (
    Account, Challenge, InitiateChallenge, Model, StakingPool, Submission, Target,
)


@pytest.fixture
def network():
    return Network()


def split(reward: int) -> tuple[int, int, int]:
    """(finder's fee, miner share, model share) with the localnet parameters (50 and 5000 bps)."""
    fee = reward * 50 // 10_000
    miner = (reward - fee) * 5_000 // 10_000
    return fee, miner, reward - fee - miner


def test_fill_then_claim_two_epochs_later_pays_everyone(network):
    target = network.open_target()
    network.fill(target)
    assert network.claim(target.id).error.code == "AuditWindowOpen"
    network.advance_epoch()
    network.advance_epoch()
    claimer, miner = network.balance(CLAIMER), network.balance(MINER)
    model = network.state.require(MODEL, target.model_ids[0], Model)
    pool = network.state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    assert network.claim(target.id).error is None
    fee, miner_share, model_share = split(target.reward_pool)
    base_fee = network.sim.params.base_fee
    assert network.balance(CLAIMER) == claimer - base_fee + fee
    assert network.balance(MINER) == miner + miner_share + 10_000
    after = network.state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    assert (after.soma_balance + after.pending_stake) - (pool.soma_balance + pool.pending_stake) == model_share
    assert network.target(target.id).status == "Settled"


def test_challenger_wins_then_another_miner_fills_and_claims(network):
    target = network.open_target()
    cheat = network.fill(target)
    challenge_id = network.challenge(cheat)
    challenger = network.balance(CHALLENGER)
    assert network.resolve(challenge_id, "ChallengerWins").error is None
    assert network.balance(CHALLENGER) == challenger + 5_000 + 10_000
    assert network.target(target.id).status == "Open"
    honest = network.fill(target, miner=RIVAL)
    assert network.target(target.id).submission_id == honest
    network.advance_epoch()
    network.advance_epoch()
    rival = network.balance(RIVAL)
    assert network.claim(target.id, claimer=RIVAL).error is None
    fee, miner_share, _ = split(target.reward_pool)
    assert network.balance(RIVAL) == rival - network.sim.params.base_fee + fee + miner_share + 10_000


def test_a_fraudulent_fill_leaves_the_difficulty_tally_when_the_challenger_wins(network):
    tally = network.state.system().target_state
    cheat = network.fill(network.open_target())
    filled = network.state.system().target_state
    assert filled.confirmed_hits == tally.confirmed_hits + 1 and filled.hit_time_sum_ms > tally.hit_time_sum_ms
    assert network.resolve(network.challenge(cheat), "ChallengerWins").error is None
    after = network.state.system().target_state
    assert (after.confirmed_hits, after.hit_time_sum_ms) == (tally.confirmed_hits, tally.hit_time_sum_ms)


def test_miner_wins_the_challenge_and_claims(network):
    target = network.open_target()
    submission_id = network.fill(target)
    challenge_id = network.challenge(submission_id)
    miner = network.balance(MINER)
    assert network.resolve(challenge_id, "MinerWins").error is None
    assert network.balance(MINER) == miner + 5_000
    network.advance_epoch()
    network.advance_epoch()
    assert network.claim(target.id).error is None
    assert network.state.require(SUBMISSION, submission_id, Submission).bond == 0


def test_unresolved_challenge_times_out_returning_the_bond_and_the_miner_stays_winner(network):
    target = network.open_target()
    network.fill(target)
    challenge_id = network.challenge(network.target(target.id).submission_id)
    challenger = network.balance(CHALLENGER)
    network.advance_epoch()  # epoch 1 = fill_epoch + 1: the window is still open
    assert network.state.get(CHALLENGE, challenge_id, object) is not None
    assert network.claim(target.id).error.code == "ChallengeAlreadyOpen"
    network.advance_epoch()  # end of fill_epoch + 1: the challenge closes unresolved
    assert network.state.get(CHALLENGE, challenge_id, object) is None
    assert network.balance(CHALLENGER) == challenger + 5_000
    assert network.target(target.id).status == "Filled"
    assert network.claim(target.id).error is None
    assert network.resolve(challenge_id, "ChallengerWins").error.code == "ObjectNotFound"


def test_expired_target_is_claimed_for_the_finder_fee(network):
    target = network.open_target()
    network.advance_epoch()
    assert network.run(MINER, network.commit_kind(target)).error.code == "TargetExpired"
    claimer = network.balance(CLAIMER)
    pool = network.state.system().emission_pool.balance
    effects = network.claim(target.id)
    assert effects.error is None
    fee = target.reward_pool * 50 // 10_000
    assert network.balance(CLAIMER) == claimer - network.sim.params.base_fee + fee
    # The emission pool gets the rest back (and, in the same checkpoint, the fee is collected).
    assert network.state.system().emission_pool.balance == pool + target.reward_pool - fee


def test_stale_commit_is_slashed_when_the_next_miner_commits(network):
    target = network.open_target()
    stale = network.run(MINER, network.commit_kind(target, bond=8_000)).created[0]
    pool = network.state.system().emission_pool.balance
    window_end = network.state.require(SUBMISSION, stale, Submission).commit_timestamp_ms + network.sim.params.reveal_window_ms
    effects = network.run(RIVAL, network.commit_kind(target), timestamp_ms=window_end + 1)
    assert effects.error is None
    assert network.state.get(SUBMISSION, stale, Submission) is None
    assert network.state.system().emission_pool.balance == pool + 8_000
    assert network.run(MINER, network.reveal_kind(target, stale)).error.code == "ObjectNotFound"


def test_a_stale_commit_left_at_the_epoch_change_is_slashed_and_the_target_expires(network):
    target = network.open_target()
    network.run(MINER, network.commit_kind(target, bond=8_000))
    network.checkpoint(network.sim.timestamp_ms + network.sim.params.reveal_window_ms + 1)
    miner = network.balance(MINER)
    network.advance_epoch()
    assert network.target(target.id).status == "Open"  # Open in a past epoch: expired
    assert not list(network.state.values(SUBMISSION, Submission))
    assert network.balance(MINER) == miner  # the bond is not returned (it went to the emission pool)
    assert network.run(MINER, network.commit_kind(target)).error.code == "TargetExpired"


def test_a_commit_inside_its_reveal_window_at_the_epoch_change_gets_its_bond_back(network):
    target = network.open_target()
    network.run(MINER, network.commit_kind(target, bond=8_000))
    miner = network.balance(MINER)
    network.advance_epoch()  # 1 s after the commit: the 30 s reveal window is still open
    assert network.target(target.id).status == "Open"
    assert not list(network.state.values(SUBMISSION, Submission))
    assert network.balance(MINER) == miner + 8_000
    assert network.run(MINER, network.commit_kind(target)).error.code == "TargetExpired"


def test_racing_commits_exactly_one_wins_and_the_loser_pays_only_the_base_fee(network):
    target = network.open_target()
    rival_balance = network.balance(RIVAL)
    network.sim.submit_kind(MINER, network.commit_kind(target))
    network.sim.submit_kind(RIVAL, network.commit_kind(target))
    first, second = network.checkpoint()
    assert first.error is None and first.sender == MINER.address
    assert second.error.code == "TargetNotOpen" and dict(second.error.fields) == {"status": "Committed"}
    assert network.balance(RIVAL) == rival_balance - network.sim.params.base_fee
    assert network.target(target.id).submission_id == first.created[0]


def test_fill_generates_a_replacement_target_in_the_same_epoch(network):
    before = len(list(network.state.values(TARGET, Target)))
    network.fill(network.open_target())
    targets = list(network.state.values(TARGET, Target))
    assert len(targets) == before + 1
    assert len({t.embedding for t in targets}) == len(targets)


# --- random interleavings ------------------------------------------------------------------------

COMMIT = st.tuples(st.just("commit"), st.integers(0, 3), st.integers(0, 30), st.sampled_from([999, 1_000, 50_000]))
REVEAL = st.tuples(st.just("reveal"), st.integers(0, 3), st.integers(0, 30), st.none())
CHALLENGE_ACTION = st.tuples(st.just("challenge"), st.integers(0, 3), st.integers(0, 30), st.sampled_from([1, 20_000]))
FILL = st.tuples(st.just("fill"), st.integers(0, 3), st.integers(0, 30), st.none())
ACTIONS = st.one_of(  # the commit → reveal → challenge path drawn more often than the rest
    COMMIT, REVEAL, FILL, FILL, CHALLENGE_ACTION, CHALLENGE_ACTION,
    st.tuples(st.just("resolve"), st.integers(0, 3), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("claim"), st.integers(0, 3), st.integers(0, 30), st.none()),
    st.tuples(st.just("wait"), st.just(0), st.integers(1, 40), st.none()),
    st.tuples(st.just("epoch"), st.just(0), st.just(0), st.none()),
)
USERS = [MINER, RIVAL, CHALLENGER, CLAIMER]


def pick(items: list, index: int):
    return items[index % len(items)] if items else None


def act(network: Network, action, user_index, index, arg):
    """Turn one drawn action into a transaction (valid or not) on a relevant object and run it."""
    user = USERS[user_index]
    state = network.state
    targets = list(state.values(TARGET, Target))
    submissions = list(state.values(SUBMISSION, Submission))
    if action == "commit":
        open_now = [t for t in targets if t.status == "Open" and t.generation_epoch == state.system().epoch]
        target = pick(open_now if index % 4 else targets, index)
        return target and network.run(user, network.commit_kind(target, bond=arg))
    if action == "fill":
        target = pick([t for t in targets if t.status == "Open"], index)
        effects = target and network.run(user, network.commit_kind(target, bond=50_000))
        if effects and effects.error is None:
            return network.run(user, network.reveal_kind(target, effects.created[0]))
        return effects
    if action == "reveal":
        submission = pick([s for s in submissions if s.revealed is None], index)
        if submission is None:
            return None
        miner = next(u for u in USERS if u.address == submission.miner)
        kind = network.reveal_kind(network.target(submission.target_id), submission.id)
        return network.run(user if user_index == 3 else miner, kind)
    if action == "challenge":
        submission = pick([s for s in submissions if s.revealed is not None], index)
        return submission and network.run(user, InitiateChallenge(submission.id, "ScoreFraud", arg))
    if action == "resolve":
        challenge_id = pick(state.ids(CHALLENGE), index)
        return challenge_id and network.resolve(challenge_id, "ChallengerWins" if arg else "MinerWins")
    if action == "claim":
        return network.claim(pick(targets, index).id, claimer=user)
    if action == "wait":
        return network.checkpoint(network.sim.timestamp_ms + index * 1_000)
    return network.advance_epoch()


def assert_consistent(state) -> None:
    """Statuses, submissions, challenges and bonds agree; no balance is negative."""
    challenged = [c.target_id for c in state.values(CHALLENGE, Challenge)]
    assert len(challenged) == len(set(challenged))
    for target in state.values(TARGET, Target):
        assert (target.reward_pool == 0) == (target.status == "Settled")
        assert (target.status == "Challenged") == (target.id in challenged)
        if target.status == "Open":
            assert target.submission_id is None
        elif target.status != "Settled":
            submission = state.require(SUBMISSION, target.submission_id, Submission)
            assert submission.target_id == target.id and submission.bond > 0
            assert (submission.revealed is not None) == (target.status != "Committed")
    for submission in state.values(SUBMISSION, Submission):
        target = state.require(TARGET, submission.target_id, Target)
        assert target.submission_id == submission.id
        assert submission.bond == 0 if target.status == "Settled" else submission.bond > 0
    assert all(account.balance >= 0 for account in state.values(ACCOUNT, Account))


@settings(max_examples=30, deadline=None)
@given(st.lists(ACTIONS, min_size=8, max_size=20))
def test_any_interleaving_conserves_supply_and_keeps_targets_consistent(actions):
    network = Network()  # every checkpoint checks the supply invariant
    for action in actions:
        act(network, *action)
        assert_consistent(network.state)
