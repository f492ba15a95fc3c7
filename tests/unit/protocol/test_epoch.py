"""ChangeEpoch (spec §3): emission step decay, validator rewards and fees, genesis."""
import msgspec
import pytest

from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import (
    CommissionTooHigh, DuplicateEpochChange, EmbeddingDimensionMismatch, EpochChangeNotDue,
    EpochChangeTimestampMismatch, InsufficientBalance, TimestampOutOfRange, TimestampRegression,
    UnexecutableEntry,
)
from soma_ray.protocol.epoch import current_epoch_end_ms
from soma_ray.protocol.genesis import genesis, localnet_config, preset_config
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol import params as parameters
from soma_ray.protocol.state import MODEL, STAKING_POOL, TARGET, VALIDATOR
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import ChangeEpoch, Model, StakingPool, Target, Transfer, Validator

SOMA = SHANNONS_PER_SOMA


def test_genesis_localnet(net):
    state = net.state
    system = state.system()
    assert system.epoch == 0
    assert [m.voting_power for m in system.committee.members] == [2500] * 4
    assert all(m.status == "Active" and m.embedding for m in state.values(MODEL, Model))
    assert len(state.ids(TARGET)) == net.params.initial_targets_per_epoch
    assert total_supply(state) == net.params.genesis_supply


def test_genesis_is_reproducible():
    assert genesis(localnet_config()).state_root() == genesis(localnet_config()).state_root()
    assert genesis(localnet_config()).state_root() != genesis(localnet_config(validators=3)).state_root()


def test_testnet_preset_has_no_targets_without_models():
    state = genesis(preset_config(parameters.testnet(), validators=4, models=0, users=0))
    assert state.system().parameters.embedding_dim == 2048
    assert state.ids(TARGET) == [] and total_supply(state) == state.system().parameters.genesis_supply


def test_genesis_allocations_beyond_supply_fail():
    config = localnet_config()
    config.parameters = msgspec.structs.replace(config.parameters, genesis_supply=10 * SOMA)
    with pytest.raises(InsufficientBalance):
        genesis(config)


def test_genesis_rejects_bad_commission_and_embeddings():
    config = localnet_config()
    config.validators[0].commission_bps = 10_001
    with pytest.raises(CommissionTooHigh):
        genesis(config)
    config = localnet_config()
    config.models[0].embedding = config.models[0].embedding[:-4]
    with pytest.raises(EmbeddingDimensionMismatch):
        genesis(config)


def test_emission_decays_every_period(make_net):
    net = make_net(emission_period_epochs=2, emission_decrease_bps=1_000)
    start = net.params.initial_emission_per_epoch
    net.advance()
    assert net.state.system().emission_pool.emission_per_epoch == start
    net.advance()
    assert net.state.system().emission_pool.emission_per_epoch == start * 9 // 10
    net.advance(2)
    assert net.state.system().emission_pool.emission_per_epoch == start * 9 // 10 * 9 // 10


def test_emission_never_exceeds_the_pool(make_net):
    allocated = 4 * 1_000_000 * SOMA + 4 * 100_000 * SOMA + 3 * 1_000 * SOMA + 4 * 1_000 * SOMA
    net = make_net(genesis_supply=allocated + 1_000 * SOMA)
    for _ in range(4):
        net.advance()
        assert net.state.system().emission_pool.balance >= 0
    assert total_supply(net.state) == net.params.genesis_supply


def _pool_balance(net, key):
    validator = net.state.require(VALIDATOR, key.address, Validator)
    pool = net.state.require(STAKING_POOL, validator.staking_pool_id, StakingPool)
    return pool.soma_balance + pool.pending_stake


def test_validators_share_emission_and_fees_by_voting_power(net):
    for _ in range(3):
        net.ok(net.users[0], Transfer(net.users[1].address, 1))
    fees = 3 * net.params.base_fee
    assert net.state.system().fees_this_epoch == fees
    before = [_pool_balance(net, key) for key in net.validators]
    net.advance()
    reward = net.params.initial_emission_per_epoch * net.params.validator_share_bps // 10_000 + fees
    gains = [_pool_balance(net, key) - b for key, b in zip(net.validators, before)]
    assert gains == [reward * 2_500 // 10_000] * 4
    assert net.state.system().fees_this_epoch == 0


def test_each_epoch_generates_funded_targets(net):
    net.advance()
    system = net.state.system()
    new = [t for t in net.state.values(TARGET, Target) if t.generation_epoch == 1]
    assert len(new) == net.params.initial_targets_per_epoch
    assert all(t.reward_pool == system.target_state.reward_per_target for t in new)


def test_checkpoint_timestamps_never_decrease(net):
    checkpoint, _ = net.sim.make_checkpoint()
    root = net.state.state_root()
    with pytest.raises(TimestampRegression) as info:
        build_checkpoint(net.state, checkpoint, [], checkpoint.timestamp_ms - 1)
    assert (info.value.previous_ms, info.value.got_ms) == (checkpoint.timestamp_ms, checkpoint.timestamp_ms - 1)
    assert net.state.state_root() == root


def test_change_epoch_before_the_epoch_start_is_refused():
    config = localnet_config()
    config.timestamp_ms = 10_000
    state = genesis(config)
    root = state.state_root()
    # A checkpoint that carries it is refused (a ChangeEpoch must change the epoch)...
    with pytest.raises(UnexecutableEntry) as info:
        build_checkpoint(state, None, [encode(ChangeEpoch(epoch=1, timestamp_ms=5_000))], 5_000)
    assert (info.value.index, info.value.error) == (0, "TimestampRegression")
    assert state.state_root() == root and state.system().epoch == 0


def _change(net, epoch, timestamp_ms):
    return encode(ChangeEpoch(epoch=epoch, timestamp_ms=timestamp_ms))


def test_change_epoch_must_carry_its_checkpoint_timestamp(net):
    root = net.state.state_root()
    _, effects = net.sim.make_checkpoint(5_000, [_change(net, 1, 10**13)])  # ...and a proposer leaves it out
    assert effects == [] and net.sim.left_out[0].error == EpochChangeTimestampMismatch(checkpoint_ms=5_000, got_ms=10**13)
    assert net.state.system().epoch == 0 and net.state.state_root() == root


def test_change_epoch_is_refused_before_the_epoch_ends_unless_early_changes_are_allowed(make_net):
    net = make_net(allow_early_epoch_change=False)
    end = net.params.epoch_duration_ms
    assert current_epoch_end_ms(net.state) == end  # refused at end - 1, accepted at end (below)
    root = net.state.state_root()
    _, effects = net.sim.make_checkpoint(end - 1, [_change(net, 1, end - 1)])
    assert effects == [] and net.sim.left_out[0].error == EpochChangeNotDue(due_at_ms=end, timestamp_ms=end - 1)
    assert net.state.system().epoch == 0 and net.state.state_root() == root
    _, effects = net.sim.make_checkpoint(end, [_change(net, 1, end)])
    assert effects[0].error is None
    assert (net.state.system().epoch, net.state.system().epoch_start_timestamp_ms) == (1, end)


def test_advance_epoch_waits_for_the_epoch_end_on_testnet_parameters(make_net):
    net = make_net(allow_early_epoch_change=False)
    net.advance(2)
    assert net.state.system().epoch_start_timestamp_ms == 2 * net.params.epoch_duration_ms


def test_localnet_allows_an_early_change(net):
    assert net.params.allow_early_epoch_change and not parameters.testnet().allow_early_epoch_change
    _, effects = net.sim.make_checkpoint(1_000, [_change(net, 1, 1_000)])
    assert effects[0].error is None and net.state.system().epoch == 1


def test_at_most_one_epoch_change_per_checkpoint(net):
    _, effects = net.sim.make_checkpoint(1_000, [_change(net, 1, 1_000), _change(net, 2, 1_000)])
    assert len(effects) == 1 and effects[0].error is None
    assert net.sim.left_out[0].error == DuplicateEpochChange(epoch=1)
    assert net.state.system().epoch == 1


def test_checkpoint_timestamps_must_fit_in_63_bits(net):
    root = net.state.state_root()
    with pytest.raises(TimestampOutOfRange):
        build_checkpoint(net.state, None, [], 2**63)
    assert net.state.state_root() == root
