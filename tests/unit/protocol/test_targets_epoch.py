"""Epoch steps owned by targets.py: expiry (§3.1), difficulty (§3.4), target budget and generation (§3.7, §4)."""
import msgspec
import numpy as np
import pytest

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.genesis import genesis, localnet_config, preset_keypair
from soma_ray.protocol.state import CHALLENGE, MODEL, STAKING_POOL, SUBMISSION, TARGET
from soma_ray.protocol.submissions import (
    process_commit_submission, process_initiate_challenge, process_reveal_submission, submission_commitment,
)
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.targets import (
    active_model_index, adjust_difficulty, expire_targets, generate_epoch_targets, generate_target, next_target_seed,
    target_embedding, target_index, target_seed,
)
from soma_ray.protocol.types import (
    CommitSubmission, InitiateChallenge, Model, RevealSubmission, StakingPool, Submission, Target,
)

from test_targets import brute_force  # the exact, independent reference selection

MINER, CHALLENGER = preset_keypair("user", 0).address, preset_keypair("user", 1).address


def localnet(models=5, **params):
    config = localnet_config(validators=4, models=models, users=2)
    if params:
        config = msgspec.structs.replace(config, parameters=msgspec.structs.replace(config.parameters, **params))
    return genesis(config)


def context(state, sender=bytes(32), timestamp_ms=5_000, seed=b"\x01" * 32, tx=b"\x02" * 32):
    system = state.system()
    return ExecutionContext(system.parameters, system.epoch, timestamp_ms, seed, sender, tx)


def targets(state, status=None):
    return [t for t in state.values(TARGET, Target) if status is None or t.status == status]


def commit_and_reveal(state, target, reveal=True):
    data_hash, nonce = blake2b256(b"data"), b"nonce"
    commitment = submission_commitment(data_hash, 4, target.model_ids[0], target.embedding, 1, nonce)
    process_commit_submission(state, CommitSubmission(target.id, commitment, 10_000), context(state, MINER, tx=b"c" * 32))
    submission_id = state.require(TARGET, target.id, Target).submission_id
    if reveal:
        kind = RevealSubmission(submission_id, data_hash, 4, "u", target.model_ids[0], target.embedding, 1, nonce)
        process_reveal_submission(state, kind, context(state, MINER, tx=b"r" * 32))
    return submission_id


def set_epoch(state, epoch):
    system = state.system()
    system.epoch = epoch
    state.put_system(system)


# --- expire_targets -----------------------------------------------------------------------------


def test_expiry_slashes_commits_and_closes_challenge_windows_that_end():
    state = localnet()
    committed, filled_then_challenged = targets(state, "Open")[:2]
    stale = commit_and_reveal(state, committed, reveal=False)
    challenged = commit_and_reveal(state, filled_then_challenged)
    process_initiate_challenge(state, InitiateChallenge(challenged, "ScoreFraud", 4_000), context(state, CHALLENGER, tx=b"x" * 32))
    supply = total_supply(state)

    expire_targets(state, context(state))  # end of epoch 0 = fill_epoch: the challenge window stays open
    assert state.get(SUBMISSION, stale, Submission) is None
    assert state.require(TARGET, committed.id, Target).status == "Open"
    assert state.require(TARGET, filled_then_challenged.id, Target).status == "Challenged"

    set_epoch(state, 1)
    challenger, pool = state.account(CHALLENGER).balance, state.system().emission_pool.balance
    expire_targets(state, context(state))  # end of epoch 1 = fill_epoch + 1: it closes unresolved
    assert state.account(CHALLENGER).balance == challenger + 4_000
    assert state.require(TARGET, filled_then_challenged.id, Target).status == "Filled"
    assert not state.ids(CHALLENGE) and state.system().emission_pool.balance == pool
    assert total_supply(state) == supply


def test_expiry_returns_the_stale_bond_to_the_emission_pool_exactly():
    state = localnet()
    commit_and_reveal(state, targets(state, "Open")[0], reveal=False)
    pool = state.system().emission_pool.balance
    stale = 5_000 + state.system().parameters.reveal_window_ms + 1  # committed at 5 000 ms
    expire_targets(state, context(state, timestamp_ms=stale))
    assert state.system().emission_pool.balance == pool + 10_000


def test_expiry_inside_the_reveal_window_refunds_the_bond_to_the_miner():
    state = localnet()
    commit_and_reveal(state, targets(state, "Open")[0], reveal=False)
    pool, miner = state.system().emission_pool.balance, state.account(MINER).balance
    expire_targets(state, context(state, timestamp_ms=5_000 + state.system().parameters.reveal_window_ms))
    assert state.system().emission_pool.balance == pool
    assert state.account(MINER).balance == miner + 10_000
    assert state.ids(SUBMISSION) == []


# --- adjust_difficulty --------------------------------------------------------------------------


@pytest.mark.parametrize("threshold, hits, hit_time_sum_ms, expected", [
    (1_050_000_000, 0, 0, 1_071_000_000),  # no hits: easier by 2%
    (1_050_000_000, 10, 100_000, 1_029_000_000),  # average 10 s < 60 s: harder by 2%
    (1_050_000_000, 2, 240_000, 1_071_000_000),  # average 120 s: easier
    (1_050_000_000, 3, 180_000, 1_050_000_000),  # exactly on time: unchanged
    (960_000_000, 5, 5_000, 950_000_000),  # 940.8e6 clamps to the minimum
    (1_990_000_000, 0, 0, 2_000_000_000),  # 2029.8e6 clamps to the maximum
    (1_000_000_001, 1, 1, 980_000_000),  # 980000000.98 rounds down
])
def test_difficulty_follows_the_average_hit_time_in_fixed_point(threshold, hits, hit_time_sum_ms, expected):
    state = localnet()
    system = state.system()
    system.target_state.distance_threshold = threshold
    system.target_state.confirmed_hits = hits
    system.target_state.hit_time_sum_ms = hit_time_sum_ms
    state.put_system(system)
    adjust_difficulty(state)
    tally = state.system().target_state
    assert (tally.distance_threshold, tally.confirmed_hits, tally.hit_time_sum_ms) == (expected, 0, 0)


def test_new_targets_use_the_adjusted_threshold():
    state = localnet()
    adjust_difficulty(state)  # no hits: 1.071
    created = generate_epoch_targets(state, context(state, seed=b"\x05" * 32), 10**12)
    assert {t.distance_threshold for t in created} == {1_071_000_000}


# --- generate_epoch_targets / generate_target ---------------------------------------------------


def test_epoch_targets_are_funded_from_the_emission_pool_within_the_budget():
    state = localnet()
    params = state.system().parameters
    emission = 1_370 * 10**9
    pool = state.system().emission_pool.balance
    created = generate_epoch_targets(state, context(state, seed=b"\x07" * 32), emission)
    budget = emission * 8_000 // 10_000
    per_target = budget // params.target_hits_per_epoch
    assert len(created) == params.initial_targets_per_epoch
    assert {t.reward_pool for t in created} == {per_target}
    assert state.system().emission_pool.balance == pool - len(created) * per_target
    assert state.system().target_state.reward_budget == budget - len(created) * per_target


def test_targets_never_exceed_the_budget_and_the_last_gets_the_remainder():
    state = localnet(target_hits_per_epoch=3)
    emission = 1_000_003  # budget 800002 = 3 × 266667 + 1
    created = generate_epoch_targets(state, context(state, seed=b"\x08" * 32), emission)
    assert [t.reward_pool for t in created] == [266_667, 266_667, 266_667, 1]
    assert sum(t.reward_pool for t in created) == emission * 8_000 // 10_000
    assert state.system().target_state.reward_budget == 0


def test_no_targets_without_active_models():
    state = localnet(models=0)
    assert targets(state) == []
    assert generate_epoch_targets(state, context(state), 10**12) == []


def test_inactive_models_are_never_selected():
    state = localnet(models=5)
    active = state.ids(MODEL)[:2]
    for model_id in state.ids(MODEL)[2:]:
        model = state.require(MODEL, model_id, Model)
        model.status = "Inactive"
        state.put(MODEL, model_id, model)
    created = generate_epoch_targets(state, context(state, seed=b"\x09" * 32), 10**12)
    assert created and all(sorted(t.model_ids) == sorted(active) for t in created)


def _spread_stakes(state):
    """Unequal stakes (1×, 4×, 9×, …), so the selection's stake weighting matters."""
    for i, model in enumerate(state.values(MODEL, Model)):
        pool = state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
        pool.soma_balance *= (i + 1) ** 2
        state.put(STAKING_POOL, pool.id, pool)


def test_targets_follow_the_seed_and_the_stake_weighted_selection():
    state = localnet(models=6)
    _spread_stakes(state)
    seed = b"\x0a" * 32
    created = generate_epoch_targets(state, context(state, seed=seed), 10**12)
    dim = state.system().parameters.embedding_dim
    models = list(state.values(MODEL, Model))
    embeddings = [np.frombuffer(m.embedding, "<f4") for m in models]
    stakes = [state.require(STAKING_POOL, m.staking_pool_id, StakingPool).soma_balance for m in models]
    for index, target in enumerate(created):
        expected = target_embedding(target_seed(seed, target_index(0, index)), dim)
        assert target.embedding == expected.astype("<f4").tobytes()
        assert target.model_ids == brute_force(expected, [m.id for m in models], embeddings, stakes, 3)
    again = localnet(models=6)
    _spread_stakes(again)
    repeat = generate_epoch_targets(again, context(again, seed=seed), 10**12)
    assert [t.embedding for t in repeat] == [t.embedding for t in created]
    assert state.state_root() == again.state_root()


def test_fills_and_an_epoch_change_in_one_checkpoint_never_repeat_a_target():
    """Same checkpoint seed: a fill's replacement in epoch 0, then epoch 1's initial targets."""
    state = localnet(models=4)
    seed = b"\x0b" * 32
    system = state.system()
    system.target_state.targets_generated_this_epoch = 2  # a budget-limited epoch 0
    state.put_system(system)
    ctx = context(state, seed=seed)
    generate_target(state, next_target_seed(state, ctx), ctx)
    set_epoch(state, 1)
    generate_epoch_targets(state, context(state, seed=seed), 10**12)
    embeddings = [t.embedding for t in targets(state)]
    assert len(embeddings) == len(set(embeddings))
    assert target_index(1, 2) == (1 << 32) + 2


def test_the_model_index_is_reused_until_a_model_or_pool_changes():
    state = localnet(models=4)
    index = active_model_index(state)
    process_commit_submission(
        state, CommitSubmission(targets(state, "Open")[0].id, b"c" * 32, 10_000), context(state, MINER, tx=b"c" * 32)
    )
    assert active_model_index(state) is index  # targets, submissions and accounts do not matter
    model = next(state.values(MODEL, Model))
    pool = state.require(STAKING_POOL, model.staking_pool_id, StakingPool)
    state.begin()
    pool.soma_balance *= 100
    state.put(STAKING_POOL, pool.id, pool)
    bigger = active_model_index(state)
    assert bigger is not index and bigger.stakes != index.stakes
    state.rollback()
    assert active_model_index(state).stakes == index.stakes
    state.delete(MODEL, model.id)
    assert model.id not in active_model_index(state).model_ids
