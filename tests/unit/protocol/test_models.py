"""Model kinds and lifecycle: create → commit → reveal, missed reveal, dropped update, reports."""
import numpy as np
import pytest

from soma_ray.protocol.errors import (
    AlreadyReported, ArchitectureMismatch, CommissionTooHigh, CommitmentMismatch, DataTooLarge,
    EmbeddingDimensionMismatch, InsufficientBalance, InvalidModelStatus, MalformedInput,
    ModelRevealEpochMismatch, NonFiniteEmbedding, NotAValidator, NotOwner, NotReported, ObjectNotFound,
    StakeBelowMinimum, StakeLocked,
)
from soma_ray.protocol.models import model_commitment
from soma_ray.protocol.state import MODEL, STAKED_SOMA, STAKING_POOL, TARGET
from soma_ray.protocol.targets import ZeroEmbedding
from soma_ray.protocol.types import (
    AddStakeToModel, CommitModel, CreateModel, DeactivateModel, Model, ReportModel, RevealModel,
    StakedSoma, StakingPool, WithdrawStake,
    Target, Transfer, UndoReportModel, WeightsManifest,
)

SOMA = 10**9
KEY = b"k" * 32


def embedding(dim, seed=1):
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4").tobytes()


def commit_for(model_id, emb, key=KEY, size=1000):
    manifest = WeightsManifest(url="http://blobs/w", checksum=b"c" * 32, size=size)
    return CommitModel(model_id, manifest, b"w" * 32, model_commitment(emb), model_commitment(key))


def create(net, owner=None, stake=10 * SOMA):
    owner = owner or net.users[0]
    _, effects = net.ok(owner, CreateModel(stake=stake, commission_bps=100, architecture_version=1))
    return net.state.require(MODEL, effects.created[0], Model)


def pool(net, model):
    return net.state.require(STAKING_POOL, model.staking_pool_id, StakingPool)


def test_create_model_locks_stake_in_its_pool(net):
    alice = net.users[0]
    before = net.balance(alice.address)
    model = create(net)
    assert (model.status, model.owner, model.commission_bps) == ("Created", alice.address, 100)
    assert pool(net, model).soma_balance == 10 * SOMA
    assert net.balance(alice.address) == before - 10 * SOMA - net.params.base_fee


@pytest.mark.parametrize(
    "kind, error",
    [
        (CreateModel(stake=10**9, commission_bps=0, architecture_version=2), ArchitectureMismatch(expected=1, got=2)),
        (CreateModel(stake=10**9 - 1, commission_bps=0, architecture_version=1), StakeBelowMinimum(required=10**9, provided=10**9 - 1)),
        (CreateModel(stake=10**9, commission_bps=10_001, architecture_version=1), CommissionTooHigh(bps=10_001, max=10_000)),
    ],
)
def test_create_model_errors(net, kind, error):
    net.fails(net.users[0], kind, error)


def test_create_model_without_funds_fails(net):
    alice = net.users[0]
    available = net.balance(alice.address) - net.params.base_fee
    net.fails(alice, CreateModel(stake=available + 1, commission_bps=0, architecture_version=1),
              InsufficientBalance(required=available + 1, available=available))


def test_create_commit_reveal_makes_the_model_active(net):
    model = create(net)
    emb = embedding(net.params.embedding_dim)
    net.ok(net.users[0], commit_for(model.id, emb))
    committed = net.state.require(MODEL, model.id, Model)
    assert (committed.status, committed.commit_epoch) == ("Pending", 0)
    net.advance()
    net.ok(net.users[0], RevealModel(model.id, KEY, emb))
    active = net.state.require(MODEL, model.id, Model)
    assert (active.status, active.embedding, active.decryption_key) == ("Active", emb, KEY)


def test_commit_errors(net):
    model = create(net)
    emb = embedding(net.params.embedding_dim)
    user = net.users[1]
    net.fails(user, commit_for(model.id, emb), NotOwner(owner=net.users[0].address, sender=user.address))
    too_big = net.params.model_max_weight_size + 1
    net.fails(net.users[0], commit_for(model.id, emb, size=too_big), DataTooLarge(size=too_big, max=net.params.model_max_weight_size))
    net.ok(net.users[0], commit_for(model.id, emb))
    net.fails(net.users[0], commit_for(model.id, emb),
              InvalidModelStatus(status="Pending", expected="Created, or Active without a pending update"))


def test_reveal_errors(net):
    model = create(net)
    dim = net.params.embedding_dim
    emb = embedding(dim)
    alice = net.users[0]
    net.fails(alice, RevealModel(model.id, KEY, emb), InvalidModelStatus(status="Created", expected="Pending, or Active with a pending update"))
    net.ok(alice, commit_for(model.id, emb))
    net.fails(alice, RevealModel(model.id, KEY, emb), ModelRevealEpochMismatch(commit_epoch=0, current_epoch=0))
    net.advance()
    net.fails(alice, RevealModel(model.id, b"w" * 32, emb), CommitmentMismatch(field="decryption_key"))
    net.fails(alice, RevealModel(model.id, KEY, embedding(dim, seed=2)), CommitmentMismatch(field="embedding"))
    net.fails(alice, RevealModel(model.id, KEY, embedding(dim + 1)), EmbeddingDimensionMismatch(expected=dim, got=dim + 1))
    bad = np.frombuffer(emb, dtype="<f4").copy()
    bad[5] = np.inf
    net.fails(alice, RevealModel(model.id, KEY, bad.tobytes()), NonFiniteEmbedding(index=5))
    net.fails(alice, RevealModel(model.id, KEY, bytes(4 * dim)), ZeroEmbedding())
    net.fails(alice, RevealModel(model.id, KEY, emb[:-1]),
              MalformedInput(reason=f"embedding of {len(emb) - 1} bytes is not float32 values"))
    net.ok(alice, RevealModel(model.id, KEY, emb))  # nothing above was lost


def test_missed_reveal_is_slashed_into_the_emission_pool(net):
    model = create(net)
    net.ok(net.users[0], commit_for(model.id, embedding(net.params.embedding_dim)))
    net.advance()
    assert net.state.require(MODEL, model.id, Model).status == "Pending"
    emission_before = net.state.system().emission_pool.balance
    net.advance()  # the change into commit_epoch + 2
    assert net.state.require(MODEL, model.id, Model).status == "Inactive"
    assert pool(net, model).soma_balance == 5 * SOMA
    emission = net.params.initial_emission_per_epoch
    validators_part = emission * net.params.validator_share_bps // 10_000
    # In: the slash. Out: the validators' part of emission and the new epoch's funded targets.
    change = net.state.system().emission_pool.balance - emission_before
    funded = sum(t.reward_pool for t in net.state.values(TARGET, Target) if t.generation_epoch == 2)
    assert change == 5 * SOMA - validators_part - funded


def _active_model(net):
    model = create(net)
    emb = embedding(net.params.embedding_dim)
    net.ok(net.users[0], commit_for(model.id, emb))
    net.advance()
    net.ok(net.users[0], RevealModel(model.id, KEY, emb))
    return model


def test_update_is_applied_when_revealed(net):
    model = _active_model(net)
    new_emb = embedding(net.params.embedding_dim, seed=9)
    net.ok(net.users[0], commit_for(model.id, new_emb, key=b"n" * 32))
    assert net.state.require(MODEL, model.id, Model).pending_update is not None
    net.advance()
    net.ok(net.users[0], RevealModel(model.id, b"n" * 32, new_emb))
    updated = net.state.require(MODEL, model.id, Model)
    assert (updated.embedding, updated.pending_update, updated.status) == (new_emb, None, "Active")


def test_unrevealed_update_is_dropped_without_slash(net):
    model = _active_model(net)
    net.ok(net.users[0], commit_for(model.id, embedding(net.params.embedding_dim, seed=9)))
    stake = pool(net, model).soma_balance
    net.advance(2)
    after = net.state.require(MODEL, model.id, Model)
    assert (after.status, after.pending_update) == ("Active", None)
    assert pool(net, model).soma_balance >= stake


def test_report_quorum_slashes_and_deactivates(net):
    model = _active_model(net)
    for key in net.validators:
        net.ok(net.users[0], Transfer(key.address, 10**9))
    for key in net.validators[:2]:
        net.ok(key, ReportModel(model.id))
    net.advance()  # 5000 < 6667: nothing happens
    assert net.state.require(MODEL, model.id, Model).status == "Active"
    net.ok(net.validators[2], ReportModel(model.id))
    stake = pool(net, model).soma_balance
    net.advance()
    assert net.state.require(MODEL, model.id, Model).status == "Inactive"
    assert pool(net, model).soma_balance == stake - stake * 9_500 // 10_000


def report_by_three_validators(net, model, funder):
    """Validators 0-2 (3 of 4 equal votes) report `model`; `funder` pays their fees."""
    for key in net.validators[:3]:
        net.ok(funder, Transfer(key.address, 10**9))
        net.ok(key, ReportModel(model.id))


def test_undo_report_removes_the_vote(net):
    model = _active_model(net)
    report_by_three_validators(net, model, funder=net.users[0])
    net.ok(net.validators[2], UndoReportModel(model.id))
    net.advance()
    assert net.state.require(MODEL, model.id, Model).status == "Active"


def test_report_errors(net):
    model = _active_model(net)
    key, user = net.validators[0], net.users[1]
    net.ok(net.users[0], Transfer(key.address, 10**9))
    net.fails(user, ReportModel(model.id), NotAValidator(user.address))
    net.fails(key, UndoReportModel(model.id), NotReported(key.address))
    net.ok(key, ReportModel(model.id))
    net.fails(key, ReportModel(model.id), AlreadyReported(key.address))
    fresh = create(net)
    net.fails(key, ReportModel(fresh.id), InvalidModelStatus(status="Created", expected="Active"))


def test_deactivate_model(net):
    model = _active_model(net)
    net.fails(net.users[1], DeactivateModel(model.id), NotOwner(owner=net.users[0].address, sender=net.users[1].address))
    net.ok(net.users[0], DeactivateModel(model.id))
    assert net.state.require(MODEL, model.id, Model).status == "Inactive"
    net.fails(net.users[0], DeactivateModel(model.id), InvalidModelStatus(status="Inactive", expected="Created or Active"))


def test_a_pending_model_cannot_dodge_the_reveal_slash(net):
    model = create(net)
    net.ok(net.users[0], commit_for(model.id, embedding(net.params.embedding_dim)))
    net.fails(net.users[0], DeactivateModel(model.id), InvalidModelStatus(status="Pending", expected="Created or Active"))
    net.fails(net.users[0], WithdrawStake(_owner_stake(net, model)), StakeLocked(model_id=model.id, status="Pending"))


def test_the_owner_cannot_withdraw_the_minimum_stake_before_committing(net):
    model = create(net)
    net.fails(net.users[0], WithdrawStake(_owner_stake(net, model)), StakeLocked(model_id=model.id, status="Created"))
    assert pool(net, model).soma_balance == 10 * SOMA


def test_a_created_model_unlocks_its_stake_after_deactivation_and_an_epoch_change(net):
    model = create(net)
    net.ok(net.users[0], DeactivateModel(model.id))
    net.advance()
    before = net.balance(net.users[0].address)
    net.ok(net.users[0], WithdrawStake(_owner_stake(net, model)))
    net.advance()
    assert net.balance(net.users[0].address) == before + 10 * SOMA - net.params.base_fee


def _owner_stake(net, model):
    return next(s.id for s in net.state.values(STAKED_SOMA, StakedSoma)
                if s.pool_id == model.staking_pool_id and s.owner == model.owner)


def test_owner_stake_unlocks_only_after_the_epoch_change_following_deactivation(net):
    model = _active_model(net)
    staked_id = _owner_stake(net, model)
    alice = net.users[0]
    net.fails(alice, WithdrawStake(staked_id), StakeLocked(model_id=model.id, status="Active"))
    net.ok(alice, DeactivateModel(model.id))
    net.fails(alice, WithdrawStake(staked_id), StakeLocked(model_id=model.id, status="Inactive"))
    net.advance()
    before = net.balance(alice.address)
    net.ok(alice, WithdrawStake(staked_id))
    net.advance()
    assert net.balance(alice.address) == before + 10 * SOMA - net.params.base_fee


def test_delegators_leave_at_the_epoch_change_after_the_report_slash(net):
    model = _active_model(net)
    _, effects = net.ok(net.users[1], AddStakeToModel(model.id, 2 * SOMA))
    net.advance()
    delegator = net.users[1].address
    report_by_three_validators(net, model, funder=net.users[2])
    net.ok(net.users[1], WithdrawStake(effects.created[-1]))  # seen the reports: too late to escape
    before = net.balance(delegator)
    net.advance()
    assert before < net.balance(delegator) <= before + 2 * SOMA * (10_000 - 9_500) // 10_000


def test_deactivating_does_not_dodge_a_report_quorum(net):
    model = _active_model(net)
    report_by_three_validators(net, model, funder=net.users[1])
    net.ok(net.users[0], DeactivateModel(model.id))
    stake = pool(net, model).soma_balance
    net.advance()
    assert pool(net, model).soma_balance == stake - stake * 9_500 // 10_000
    assert net.state.require(MODEL, model.id, Model).reporters == []


def test_report_tally_uses_the_quorum_parameter(make_net):
    net = make_net(quorum=7_501)  # 3 of 4 equal validators hold 7 500
    model = _active_model(net)
    report_by_three_validators(net, model, funder=net.users[1])
    stake = pool(net, model).soma_balance
    net.advance()
    assert pool(net, model).soma_balance == stake
    assert net.state.require(MODEL, model.id, Model).status == "Active"


def test_commit_to_an_unknown_model_fails(net):
    emb = embedding(net.params.embedding_dim)
    net.fails(net.users[0], commit_for(b"\x05" * 32, emb), ObjectNotFound(kind="model", id=b"\x05" * 32))
