"""Shared helpers for protocol tests: a localnet simulator and pre-state/tx/post-state checks."""
import msgspec
import pytest

from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.genesis import localnet_config, preset_config, preset_keypair
from soma_ray.protocol.params import localnet, testnet
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import State
from soma_ray.protocol.supply import total_supply


class Harness:
    """A localnet simulator plus the checks every kind test makes."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.state = sim.state
        self.params = sim.params
        self.users = [preset_keypair("user", i) for i in range(4)]
        self.validators = [preset_keypair("validator", i) for i in range(4)]
        self.owners = [preset_keypair("model-owner", i) for i in range(3)]

    def apply(self, keypair, kind, **kwargs):
        """Submit one transaction, seal a checkpoint; returns (pre-state copy, effects)."""
        pre = self.state.copy()
        self.sim.submit_kind(keypair, kind, **kwargs)
        _, effects = self.sim.make_checkpoint()
        assert total_supply(self.state) == self.params.genesis_supply
        return pre, effects[-1]

    def ok(self, keypair, kind):
        pre, effects = self.apply(keypair, kind)
        assert effects.error is None, effects.error
        assert effects.fee_charged == self.params.base_fee
        return pre, effects

    def fails(self, keypair, kind, error):
        """The kind fails with exactly `error`; only the fee and the nonce changed. An error
        admission catches (a kind field out of bounds, a Faucet not from a faucet authority) must
        be the same there: the transaction is refused, and one a proposer includes anyway pays
        its fee and fails alike."""
        data = self.sim.sign(keypair, kind)
        try:
            self.sim.submit(data)
            extra = []
        except ProtocolError as refused:
            assert refused == error, refused
            extra = [data]
        pre = self.state.copy()
        _, effects = self.sim.make_checkpoint(extra=extra)
        assert total_supply(self.state) == self.params.genesis_supply
        effects = effects[-1]
        assert effects.error == error.to_struct()
        expected = fee_and_nonce_only(pre, keypair.address, self.params.base_fee)
        assert expected.state_root() == self.state.state_root()
        return effects

    def advance(self, epochs=1):
        for _ in range(epochs):
            _, effects = self.sim.advance_epoch()
            assert effects[-1].error is None, effects[-1].error
        assert total_supply(self.state) == self.params.genesis_supply

    def balance(self, address):
        return self.state.account(address).balance


def fee_and_nonce_only(pre: State, sender: bytes, fee: int) -> State:
    """The pre-state with just the fee charged and the nonce bumped (what a failed kind leaves)."""
    expected = pre.copy()
    account = expected.account(sender)
    account.nonce += 1
    account.balance -= fee
    expected.put_account(sender, account)
    system = expected.system()
    system.fees_this_epoch += fee
    expected.put_system(system)
    return expected


@pytest.fixture
def net():
    return Harness(Simulator(localnet_config()))


@pytest.fixture
def make_net():
    """A harness on localnet parameters with some fields replaced, e.g. faucet_enabled=False."""

    def make(validators=4, **overrides):
        config = localnet_config(validators=validators)
        config.parameters = msgspec.structs.replace(localnet(), **overrides)
        return Harness(Simulator(config))

    return make


@pytest.fixture
def testnet_net():
    """A harness on testnet parameters: no models, one funded user."""
    return Harness(Simulator(preset_config(testnet(), validators=4, models=0, users=1)))
