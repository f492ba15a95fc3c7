"""Consensus with the real application (issue 18): four replicas run `ConsensusCore` over the
deterministic simulated network with an `Executor` each as their application. A Byzantine leader
that puts a transaction whose sender cannot pay its fee into its checkpoint (sealed as the rules
before issue 18 could seal it) never gets it certified: every honest replica refuses the
proposal, the round passes to the next leader, and the chain goes on with the paying ones."""
from __future__ import annotations

import msgspec
from consensus_sim import FIRST_HEIGHT, Simulation, equal_powers

from soma_ray.consensus import LeaderSchedule
from soma_ray.node.executor import Executor
from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import genesis, localnet_config, preset_keypair
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import Checkpoint, Transaction, Transfer

CONFIG = localnet_config(validators=1, models=0, users=1)
CHAIN_ID = genesis(CONFIG).system().chain_id  # the application's (consensus_sim signs under its own)
ALICE, BOB = preset_keypair("user", 0), preset_keypair("user", 1)
BROKE = Keypair.from_secret(b"\x66" * 32)  # no balance: cannot pay a fee
UNPAID = encode(sign_transaction(BROKE, Transaction(BROKE.address, 0, Transfer(BOB.address, 1), 1_000), CHAIN_ID))


def timestamp(height: int) -> int:
    return CONFIG.timestamp_ms + 1_000 * height


class ExecutorApp:
    """An honest replica's application: every proposal carries alice's next two transfers."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = genesis(CONFIG)
        self.executor = Executor(self.state, None)

    def entries(self) -> list[bytes]:
        nonce = self.state.account(ALICE.address).nonce
        return [encode(sign_transaction(ALICE, Transaction(ALICE.address, nonce + i, Transfer(BOB.address, 1), 1_000),
                                        CHAIN_ID)) for i in range(2)]

    def propose(self, height: int) -> bytes:
        value, _ = self.executor.propose(self.entries(), timestamp(height))
        return value

    def validate(self, height: int, value: bytes) -> bool:
        return self.executor.validate(height - FIRST_HEIGHT, value, timestamp(height) + 5_000)

    def apply(self, height: int, value: bytes) -> None:
        self.executor.apply(self.executor.decided(height - FIRST_HEIGHT, value))


class UnpaidLeaderApp(ExecutorApp):
    """A Byzantine leader: the honest checkpoint with the unpaid transfer put first, sealed as if
    an entry that cannot pay changed nothing (the state root it names is the honest one)."""

    def propose(self, height: int) -> bytes:
        checkpoint, _ = build_checkpoint(self.state.copy(), self.executor.latest, self.entries(), timestamp(height))
        return encode(msgspec.structs.replace(checkpoint, transactions=[UNPAID] + checkpoint.transactions))

    def validate(self, height: int, value: bytes) -> bool:
        return True


class AppSimulation(Simulation):
    def on_decide(self, node, decide) -> None:
        node.app.apply(decide.height, decide.value)


def test_a_leader_whose_checkpoint_carries_an_unpaid_transaction_is_never_certified():
    schedule = LeaderSchedule(Simulation(equal_powers(4), seed=0).committee)
    byzantine = schedule.leader(FIRST_HEIGHT, 0)
    sim = AppSimulation(equal_powers(4), seed=7, app_type=ExecutorApp,
                        byzantine={byzantine: (lambda node, sends: sends, UnpaidLeaderApp)})
    last = FIRST_HEIGHT + 5
    assert sim.run_until_height(last, limit_ms=120_000)
    sim.assert_agreement()
    honest = sim.honest()
    led = [h for h in range(FIRST_HEIGHT, last + 1) if schedule.leader(h, 0) == byzantine]
    assert led  # it led round 0 of these heights...
    for node in honest:  # ...and every honest replica refused its proposal there
        assert node.core.stats["invalid_value"] >= len(led)
        for height in range(FIRST_HEIGHT, last + 1):
            checkpoint = decode(node.decided[height].value, Checkpoint)
            assert UNPAID not in checkpoint.transactions and len(checkpoint.transactions) == 2
    # Alice's transfers went on; the broke key's never executed; the replicas agree on the state.
    states = [node.app.state for node in honest]
    assert len({s.state_root() for s in states}) == 1
    assert states[0].account(BROKE.address).nonce == 0
    assert states[0].account(ALICE.address).nonce == 2 * (last - FIRST_HEIGHT + 1)
    assert total_supply(states[0]) == CONFIG.parameters.genesis_supply
