"""Transfer, Faucet, AddStake, WithdrawStake, AddStakeToModel: pre-state / tx / post-state."""
import pytest

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.errors import (
    BadNonce, FaucetDisabled, FaucetLimitExceeded, FeeBelowBaseFee, InsufficientBalance,
    InsufficientBalanceForFees, InsufficientFee, InvalidAmount, InvalidAddress, NotFaucetAuthority,
    NotOwner, StakeTooSmall, WithdrawalPending, ObjectNotFound, PoolInactive,
)
from soma_ray.protocol.state import MODEL, STAKED_SOMA, STAKING_POOL, VALIDATOR
from soma_ray.protocol.types import (
    AddStake, AddStakeToModel, DeactivateModel, Faucet, Model, StakedSoma, StakingPool, Transfer,
    Validator, WithdrawStake,
)


def test_transfer_moves_amount_and_charges_fee(net):
    alice, bob = net.users[0], net.users[1]
    a0, b0 = net.balance(alice.address), net.balance(bob.address)
    net.ok(alice, Transfer(bob.address, 12_345))
    assert net.balance(alice.address) == a0 - 12_345 - net.params.base_fee
    assert net.balance(bob.address) == b0 + 12_345
    assert net.state.account(alice.address).nonce == 1


def test_transfer_to_a_new_address_creates_the_account(net):
    fresh = bytes(range(32))
    net.ok(net.users[0], Transfer(fresh, 7))
    assert net.balance(fresh) == 7


def test_transfer_more_than_balance_fails_and_loses_only_the_fee(net):
    alice = net.users[0]
    available = net.balance(alice.address) - net.params.base_fee
    net.fails(alice, Transfer(net.users[1].address, available + 1), InsufficientBalance(available + 1, available))


@pytest.mark.parametrize("amount", [0, -5])
def test_transfer_of_non_positive_amount_fails(net, amount):
    net.fails(net.users[0], Transfer(net.users[1].address, amount), InvalidAmount(amount))


def test_wrong_nonce_is_left_out_without_charging(net):
    alice = net.users[0]
    net.sim.submit_kind(alice, Transfer(net.users[1].address, 1))
    net.sim.submit_kind(alice, Transfer(net.users[1].address, 1))
    pre = net.state.copy()
    # Both carry nonces 0 and 1; executing only the second is a nonce gap.
    first, second = net.sim.mempool
    net.sim.mempool.clear()
    _, effects = net.sim.make_checkpoint(extra=[second])
    assert effects == [] and [(e.entry, e.error, e.retry) for e in net.sim.left_out] == [
        (second, BadNonce(expected=0, got=1), True)]
    assert net.state.state_root() == pre.state_root()
    assert net.sim.mempool == []  # its nonce 0 is not pooled: it could never execute
    _, effects = net.sim.make_checkpoint(extra=[first, first])  # the same bytes twice
    assert len(effects) == 1 and net.sim.left_out[0].error == BadNonce(expected=1, got=0)


def test_max_fee_below_base_fee_is_refused_and_never_charged(net):
    alice, bob = net.users[0], net.users[1]
    data = net.sim.sign(alice, Transfer(bob.address, 1), max_fee=999)
    with pytest.raises(FeeBelowBaseFee) as refused:
        net.sim.submit(data)
    assert (refused.value.max_fee, refused.value.base_fee) == (999, 1000)
    pre = net.state.copy()
    _, effects = net.sim.make_checkpoint(extra=[data])  # a proposer that includes it anyway
    assert effects == [] and net.sim.left_out[0].error == InsufficientFee(required=1000, available=999)
    assert net.state.state_root() == pre.state_root()


def test_account_that_cannot_pay_the_fee_is_refused_and_never_charged(net):
    poor = Keypair.from_secret(b"\x42" * 32)
    net.ok(net.users[0], Transfer(poor.address, 999))
    data = net.sim.sign(poor, Transfer(net.users[0].address, 1))
    with pytest.raises(InsufficientBalanceForFees) as refused:
        net.sim.submit(data)
    assert refused.value == InsufficientBalanceForFees(required=1000, available=999, pooled=0)
    pre = net.state.copy()
    _, effects = net.sim.make_checkpoint(extra=[data])
    assert effects == [] and net.sim.left_out[0].error == InsufficientFee(required=1000, available=999)
    assert net.state.state_root() == pre.state_root()


def test_admission_counts_the_fees_of_the_senders_pooled_transactions(net):
    poor = Keypair.from_secret(b"\x43" * 32)
    net.ok(net.users[0], Transfer(poor.address, 2_500))
    net.sim.submit_kind(poor, Transfer(net.users[0].address, 1))
    net.sim.submit_kind(poor, Transfer(net.users[0].address, 1))
    with pytest.raises(InsufficientBalanceForFees) as refused:
        net.sim.submit_kind(poor, Transfer(net.users[0].address, 1))
    assert refused.value == InsufficientBalanceForFees(required=3_000, available=2_500, pooled=2)
    _, effects = net.sim.make_checkpoint()
    assert [e.fee_charged for e in effects] == [1_000, 1_000] and net.balance(poor.address) == 498


def test_a_transaction_whose_fee_is_unaffordable_where_it_is_ordered_is_left_out(net):
    poor = Keypair.from_secret(b"\x44" * 32)
    net.ok(net.users[0], Transfer(poor.address, 3_000))
    net.sim.submit_kind(poor, Transfer(net.users[0].address, 1_500))  # leaves 500: not a fee
    late = net.sim.submit_kind(poor, Transfer(net.users[0].address, 1))
    _, effects = net.sim.make_checkpoint()
    assert [e.nonce for e in effects] == [0]
    assert [(e.entry, e.error, e.retry) for e in net.sim.left_out] == [
        (late, InsufficientFee(required=1_000, available=500), False)]
    assert net.state.account(poor.address) == type(net.state.account(poor.address))(balance=500, nonce=1)


def test_faucet_pays_from_the_emission_pool(net):
    pool_before = net.state.system().emission_pool.balance
    net.ok(net.validators[0], Faucet(net.users[2].address, 10**9))
    assert net.state.system().emission_pool.balance == pool_before - 10**9
    assert net.balance(net.users[2].address) == 1_000_000 * 10**9 + 10**9


def test_faucet_disabled_by_genesis_flag(make_net):
    net = make_net(faucet_enabled=False)
    net.fails(net.users[0], Faucet(net.users[0].address, 1), FaucetDisabled())


def test_faucet_is_off_on_testnet_by_default(testnet_net):
    net = testnet_net
    pool = net.state.system().emission_pool.balance
    net.fails(net.users[0], Faucet(net.users[0].address, pool), FaucetDisabled())
    assert net.state.system().emission_pool.balance == pool


def test_faucet_pays_at_most_its_cap_per_transaction(net):
    cap = net.params.faucet_max_amount
    net.ok(net.validators[0], Faucet(net.users[1].address, cap))
    net.fails(net.validators[0], Faucet(net.users[1].address, cap + 1), FaucetLimitExceeded(amount=cap + 1, max=cap))


def test_only_a_faucet_authority_sends_faucet(net):
    # Issue 18: a funded account's Faucet to itself, sent straight as a transaction, is refused
    # at admission; one a proposer includes pays its fee and fails: the emission pool is kept.
    alice = net.users[0]
    assert net.state.system().faucet_authorities == [v.address for v in net.validators]
    pool = net.state.system().emission_pool.balance
    net.fails(alice, Faucet(alice.address, net.params.faucet_max_amount), NotFaucetAuthority(sender=alice.address))
    assert net.state.system().emission_pool.balance == pool


def _validator_pool(net, index=0):
    validator = net.state.require(VALIDATOR, net.validators[index].address, Validator)
    return net.state.require(STAKING_POOL, validator.staking_pool_id, StakingPool)


def test_add_stake_is_pending_until_the_next_epoch(net):
    alice = net.users[0]
    before = _validator_pool(net)
    _, effects = net.ok(alice, AddStake(net.validators[0].address, 5 * 10**9))
    staked = net.state.require(STAKED_SOMA, effects.created[-1], StakedSoma)
    assert (staked.owner, staked.principal, staked.activation_epoch) == (alice.address, 5 * 10**9, 1)
    assert _validator_pool(net).pending_stake == before.pending_stake + 5 * 10**9
    net.advance()
    after = _validator_pool(net)
    assert after.pending_stake == 0 and after.pool_token_balance > before.pool_token_balance


def test_withdraw_pending_stake_refunds_principal(net):
    alice = net.users[0]
    _, effects = net.ok(alice, AddStake(net.validators[0].address, 5 * 10**9))
    before = net.balance(alice.address)
    net.ok(alice, WithdrawStake(effects.created[-1]))
    assert net.balance(alice.address) == before + 5 * 10**9 - net.params.base_fee
    assert net.state.get(STAKED_SOMA, effects.created[-1], StakedSoma) is None


def test_withdraw_active_stake_pays_compounded_rewards(net):
    alice = net.users[0]
    _, effects = net.ok(alice, AddStake(net.validators[0].address, 100 * 10**9))
    net.advance(3)  # active from epoch 1, earns rewards in epochs 1 and 2
    before = net.balance(alice.address)
    net.ok(alice, WithdrawStake(effects.created[-1]))
    assert net.balance(alice.address) == before - net.params.base_fee  # queued, paid at the change
    net.fails(alice, WithdrawStake(effects.created[-1]), WithdrawalPending(staked_id=effects.created[-1]))
    net.advance()  # also earns epoch 3's reward: it stays in the pool until the change
    assert net.state.get(STAKED_SOMA, effects.created[-1], StakedSoma) is None
    gained = net.balance(alice.address) + 2 * net.params.base_fee - before
    assert gained > 100 * 10**9
    # Rewards are a share of the validators' part of emission: at most all of it.
    assert gained - 100 * 10**9 < 3 * net.params.initial_emission_per_epoch


def test_withdraw_someone_elses_stake_fails(net):
    _, effects = net.ok(net.users[0], AddStake(net.validators[0].address, 10**9))
    staked_id = effects.created[-1]
    net.fails(net.users[1], WithdrawStake(staked_id), NotOwner(owner=net.users[0].address, sender=net.users[1].address))


def test_withdraw_unknown_stake_fails(net):
    net.fails(net.users[0], WithdrawStake(b"\x01" * 32), ObjectNotFound(kind="staked soma", id=b"\x01" * 32))


def test_add_stake_to_unknown_pool_owner_fails(net):
    net.fails(net.users[0], AddStake(b"\x02" * 32, 10), ObjectNotFound(kind="validator or model", id=b"\x02" * 32))


def test_add_stake_beyond_balance_fails(net):
    alice = net.users[0]
    available = net.balance(alice.address) - net.params.base_fee
    net.fails(alice, AddStake(net.validators[0].address, available + 1), InsufficientBalance(available + 1, available))


def test_add_stake_to_model_and_inactive_model_pool(net):
    model = next(net.state.values(MODEL, Model))
    owner = next(o for o in net.owners if o.address == model.owner)
    _, effects = net.ok(net.users[0], AddStakeToModel(model.id, 3 * 10**9))
    assert net.state.require(STAKED_SOMA, effects.created[-1], StakedSoma).pool_id == model.staking_pool_id
    net.ok(net.users[0], Transfer(owner.address, 10**9))  # owners start without balance
    net.ok(owner, DeactivateModel(model.id))
    net.fails(net.users[0], AddStakeToModel(model.id, 10**9), PoolInactive(pool_id=model.staking_pool_id))
    net.fails(net.users[0], AddStakeToModel(b"\x03" * 32, 10**9), ObjectNotFound(kind="model", id=b"\x03" * 32))


def test_faucet_errors(make_net):
    net = make_net(genesis_supply=4_407_000 * 10**9 + 300 * 10**9)  # a small emission pool
    faucet = net.validators[0]
    net.fails(faucet, Faucet(net.users[1].address, 0), InvalidAmount(0))
    available = net.state.system().emission_pool.balance
    net.fails(faucet, Faucet(net.users[1].address, available + 1), InsufficientBalance(available + 1, available))


def test_add_stake_of_non_positive_amount_fails(net):
    net.fails(net.users[0], AddStake(net.validators[0].address, 0), InvalidAmount(0))


@pytest.mark.parametrize("address", [b"", b"\x01" * 31, b"\x01" * 33])
def test_coins_go_only_to_32_byte_addresses(net, address):
    field = "recipient"
    net.fails(net.users[0], Transfer(address, 5), InvalidAddress(field=field, length=len(address)))
    net.fails(net.users[0], Faucet(address, 5), InvalidAddress(field=field, length=len(address)))
    net.fails(net.users[0], AddStake(address, 10**9), InvalidAddress(field="pool_owner", length=len(address)))


def test_a_stake_that_would_mint_no_pool_tokens_is_refused(net):
    net.advance()  # rewards raise the pool's SOMA per token above 1
    validator = net.validators[0].address
    pool = _validator_pool(net)
    assert pool.soma_balance > pool.pool_token_balance
    net.fails(net.users[0], AddStake(validator, 1), StakeTooSmall(amount=1, minimum=2))
    net.ok(net.users[0], AddStake(validator, 2))
