"""No entry can halt the chain: whatever a proposer includes, execution ends in typed errors."""
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soma_ray.protocol import checkpoint as checkpoint_module
from soma_ray.protocol import execution
from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import InternalError, ProtocolError
from soma_ray.protocol.execution import INTERNAL_ERROR_REASON, sign_transaction
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import TARGET
from soma_ray.protocol.submissions import _tally_hit, hit_time_ms
from soma_ray.protocol.types import (
    Account, AddStake, ChangeEpoch, CommitSubmission, Faucet, Target, Transaction, Transfer, WithdrawStake,
)

USER = preset_keypair("user", 0)


def test_an_unexpected_exception_becomes_a_fixed_internal_error(net, monkeypatch):
    def overflow(state, kind, ctx):
        state.put_account(USER.address, state.account(USER.address))
        raise OverflowError("library-specific text")

    monkeypatch.setitem(execution.PROCESS, Transfer, overflow)
    effects = net.fails(USER, Transfer(USER.address, 5), InternalError(reason=INTERNAL_ERROR_REASON))
    assert effects.fee_charged == net.params.base_fee


@pytest.mark.parametrize("raised", [MemoryError, KeyboardInterrupt])
def test_memory_error_and_base_exceptions_propagate_from_a_kind_after_rollback(net, monkeypatch, raised):
    def failing(state, kind, ctx):
        state.put_account(USER.address, Account(balance=1, nonce=0))
        raise raised()

    monkeypatch.setitem(execution.PROCESS, Transfer, failing)
    net.sim.submit_kind(USER, Transfer(USER.address, 5))
    with pytest.raises(raised):
        net.sim.make_checkpoint()
    assert net.state.account(USER.address).balance != 1


@pytest.mark.parametrize("raised", [MemoryError, KeyboardInterrupt])
def test_memory_error_and_base_exceptions_propagate_from_admission(net, monkeypatch, raised):
    def failing(*args):
        raise raised()

    monkeypatch.setattr(checkpoint_module, "check_decoded_admission", failing)
    net.sim.submit_kind(USER, Transfer(USER.address, 5))
    with pytest.raises(raised):
        net.sim.make_checkpoint()


def test_an_unexpected_exception_in_admission_fails_the_entry_with_the_fixed_internal_error(net, monkeypatch):
    def failing(*args):
        raise OverflowError("library-specific text")

    monkeypatch.setattr(checkpoint_module, "check_decoded_admission", failing)
    net.sim.submit_kind(USER, Transfer(USER.address, 5))
    pre = net.state.state_root()
    _, effects = net.sim.make_checkpoint()  # it cannot execute: left out, nothing charged
    assert effects == [] and net.sim.left_out[-1].error == InternalError(reason=INTERNAL_ERROR_REASON)
    assert net.state.state_root() == pre


def test_a_hit_never_counts_negative_time(net):
    target = msgspec.structs.replace(next(net.state.values(TARGET, Target)), generation_timestamp_ms=2**63)
    system = net.state.system()
    ctx = ExecutionContext(system.parameters, system.epoch, 1_000)
    assert hit_time_ms(target, ctx) == 0
    _tally_hit(net.state, hit_time_ms(target, ctx), 1)
    assert net.state.system().target_state.hit_time_sum_ms == system.target_state.hit_time_sum_ms
    assert net.state.system().target_state.confirmed_hits == system.target_state.confirmed_hits + 1


extreme = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1])
)


def _entry(sim, choice, value, nonce):
    if choice == 0:
        return ChangeEpoch(epoch=value, timestamp_ms=value)
    if choice == 1:
        return ChangeEpoch(epoch=sim.state.system().epoch + 1, timestamp_ms=value)
    target = sim.state.ids(TARGET)[0]
    kind = [Transfer(USER.address, value), Faucet(USER.address, value), AddStake(b"x" * 32, value),
            CommitSubmission(target, b"c" * 32, value), WithdrawStake(b"s" * 32)][choice - 2]
    return sign_transaction(USER, Transaction(USER.address, nonce, kind, 1_000), sim.chain_id)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 6), extreme, st.one_of(st.integers(0, 10**6), extreme)), min_size=1, max_size=8))
def test_only_typed_errors_come_out_of_build_checkpoint(draws):
    sim = Simulator(localnet_config())
    previous = None
    for index, (choice, value, timestamp) in enumerate(draws):
        try:
            entry = encode(_entry(sim, choice, value, sim.state.account(USER.address).nonce))
        except OverflowError:  # an int msgpack cannot carry never reaches a checkpoint
            continue
        try:
            previous, effects = build_checkpoint(sim.state, previous, [entry], timestamp)
        except ProtocolError:
            continue
        assert all(e.error is None or e.error.code != "InternalError" for e in effects), effects
