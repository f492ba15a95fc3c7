"""AddValidator, RemoveValidator, SetCommission and the committee at epoch change."""
import pytest

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import DOMAIN_PROOF_OF_POSSESSION, DOMAIN_TX
from soma_ray.protocol.errors import (
    AlreadyValidator, CommissionTooHigh, InvalidAmount, InvalidProofOfPossession, LastValidator, NotAValidator,
    NotOwner, ObjectNotFound,
)
from soma_ray.protocol.state import MODEL, STAKING_POOL, VALIDATOR
from soma_ray.protocol.types import (
    AddStake, AddValidator, Model, RemoveValidator, SetCommission, StakingPool, Transfer, Validator,
)
from soma_ray.protocol.validators import voting_powers


def _join(net, key, stake=0):
    net.ok(net.users[0], Transfer(key.address, 10 * 10**9 + stake))
    pop = key.sign(DOMAIN_PROOF_OF_POSSESSION, key.address)
    net.ok(key, AddValidator(key.public_key, "new-validator:1", pop))
    if stake:
        net.ok(key, AddStake(key.address, stake))


def test_new_validator_with_stake_joins_the_committee_next_epoch(net):
    key = Keypair.from_secret(b"\x42" * 32)
    _join(net, key, stake=100_000 * 10**9)
    assert net.state.require(VALIDATOR, key.address, Validator).status == "Pending"
    assert key.address not in [m.address for m in net.state.system().committee.members]
    net.advance()
    committee = net.state.system().committee
    assert net.state.require(VALIDATOR, key.address, Validator).status == "Active"
    powers = {m.address: m.voting_power for m in committee.members}
    assert sum(powers.values()) == 10_000 and len(powers) == 5
    assert 1_900 <= powers[key.address] <= 2_000  # 100k of ~500k stake


def test_add_validator_rejects_a_key_that_is_not_the_senders(net):
    key, other = Keypair.from_secret(b"\x42" * 32), Keypair.from_secret(b"\x43" * 32)
    net.ok(net.users[0], Transfer(key.address, 10**9))
    pop = other.sign(DOMAIN_PROOF_OF_POSSESSION, key.address)
    net.fails(key, AddValidator(other.public_key, "x", pop), InvalidProofOfPossession("the public key is not the sender's"))


@pytest.mark.parametrize("domain", [DOMAIN_TX, DOMAIN_PROOF_OF_POSSESSION])
def test_add_validator_rejects_a_bad_proof_of_possession(net, domain):
    key = Keypair.from_secret(b"\x42" * 32)
    net.ok(net.users[0], Transfer(key.address, 10**9))
    message = key.address if domain == DOMAIN_TX else b"\x00" * 32
    pop = key.sign(domain, message)
    net.fails(key, AddValidator(key.public_key, "x", pop), InvalidProofOfPossession("the signature does not verify"))


def test_add_validator_twice_fails(net):
    key = net.validators[0]
    net.ok(net.users[0], Transfer(key.address, 10**9))
    pop = key.sign(DOMAIN_PROOF_OF_POSSESSION, key.address)
    net.fails(key, AddValidator(key.public_key, "x", pop), AlreadyValidator(key.address))


def test_remove_validator_leaves_at_the_epoch_change(net):
    key = net.validators[1]
    net.ok(net.users[0], Transfer(key.address, 10**9))
    net.ok(key, RemoveValidator())
    assert net.state.require(VALIDATOR, key.address, Validator).status == "Leaving"
    net.advance()
    committee = net.state.system().committee
    assert key.address not in [m.address for m in committee.members]
    assert [m.voting_power for m in committee.members] == [3334, 3333, 3333]
    assert net.state.get(VALIDATOR, key.address, Validator) is None


def test_remove_by_a_non_validator_fails(net):
    net.fails(net.users[0], RemoveValidator(), NotAValidator(net.users[0].address))


def test_the_last_validator_cannot_leave(make_net):
    net = make_net(validators=1)
    key = net.validators[0]
    net.ok(net.users[0], Transfer(key.address, 10**9))
    net.fails(key, RemoveValidator(), LastValidator(remaining=0))


def test_set_commission_applies_next_epoch(net):
    key = net.validators[0]
    net.ok(net.users[0], Transfer(key.address, 10**9))
    net.ok(key, SetCommission(key.address, 1_234))
    assert net.state.require(VALIDATOR, key.address, Validator).commission_bps == 500
    net.advance()
    assert net.state.require(VALIDATOR, key.address, Validator).commission_bps == 1_234


def test_set_commission_of_a_model_by_its_owner(net):
    model = next(net.state.values(MODEL, Model))
    owner = next(o for o in net.owners if o.address == model.owner)
    net.ok(net.users[0], Transfer(owner.address, 10**9))
    net.ok(owner, SetCommission(model.id, 42))
    net.advance()
    assert net.state.require(MODEL, model.id, Model).commission_bps == 42


def test_set_commission_errors(net):
    key, user = net.validators[0], net.users[0]
    net.fails(user, SetCommission(key.address, 10_001), CommissionTooHigh(bps=10_001, max=10_000))
    net.fails(user, SetCommission(key.address, -1), InvalidAmount(amount=-1))
    net.fails(user, SetCommission(key.address, 10), NotOwner(owner=key.address, sender=user.address))
    model = next(net.state.values(MODEL, Model))
    net.fails(user, SetCommission(model.id, 10), NotOwner(owner=model.owner, sender=user.address))
    net.fails(user, SetCommission(b"\x07" * 32, 10), ObjectNotFound(kind="validator or model", id=b"\x07" * 32))


def test_commission_goes_to_the_validator_as_new_stake(make_net):
    net = make_net(validators=2)
    key = net.validators[0]
    pool_id = net.state.require(VALIDATOR, key.address, Validator).staking_pool_id
    before = net.state.require(STAKING_POOL, pool_id, StakingPool)
    net.advance()
    after = net.state.require(STAKING_POOL, pool_id, StakingPool)
    reward = net.params.initial_emission_per_epoch * net.params.validator_share_bps // 10_000 // 2
    assert after.soma_balance - before.soma_balance == reward  # 5% commission re-staked + 95% compounded
    assert after.pool_token_balance - before.pool_token_balance < reward * 500 // 10_000 + 1


@pytest.mark.parametrize(
    "stakes, powers",
    [([1, 1, 1], [3334, 3333, 3333]), ([0, 0], [5000, 5000]), ([3, 1], [7500, 2500]), ([1, 2, 2], [2000, 4000, 4000])],
)
def test_voting_powers_sum_to_ten_thousand(stakes, powers):
    assert voting_powers(stakes) == powers


def test_a_pending_validator_leaves_at_once(net):
    key = Keypair.from_secret(b"\x42" * 32)
    _join(net, key)
    net.ok(key, RemoveValidator())
    assert net.state.get(VALIDATOR, key.address, Validator) is None
    net.advance()
    assert key.address not in [m.address for m in net.state.system().committee.members]
