"""A single-process driver: orders submitted transactions into checkpoints without consensus.

For tests, benchmarks and `soma simulate`::

    sim = Simulator(localnet_config())
    sim.submit_kind(keypair, Transfer(recipient, 5))   # or sim.submit(signed_bytes)
    checkpoint, effects = sim.make_checkpoint()
    sim.advance_epoch()
"""
from __future__ import annotations

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.execution import check_admission, sign_transaction
from soma_ray.protocol.genesis import GenesisConfig, genesis
from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.epoch import current_epoch_end_ms
from soma_ray.protocol.types import ChangeEpoch, Checkpoint, Transaction, TransactionEffects

CHECKPOINT_INTERVAL_MS = 1_000


class Simulator:
    def __init__(self, config: GenesisConfig) -> None:
        self.state = genesis(config)
        self.timestamp_ms = config.timestamp_ms
        self.mempool: list[bytes] = []
        self.checkpoints: list[Checkpoint] = []
        self.effects: list[TransactionEffects] = []
        self._next_nonce: dict[bytes, int] = {}

    @property
    def params(self):
        return self.state.system().parameters

    def submit(self, data: bytes) -> None:
        """Admit signed transaction bytes into the mempool; raises the admission's typed error."""
        signed = check_admission(data, self.state, self.params)
        sender = signed.transaction.sender
        self._next_nonce[sender] = max(self.next_nonce(sender), signed.transaction.nonce + 1)
        self.mempool.append(bytes(data))

    def next_nonce(self, address: bytes) -> int:
        """The nonce the next transaction of `address` should carry, counting the mempool."""
        return max(self._next_nonce.get(address, 0), self.state.account(address).nonce)

    def submit_kind(self, keypair: Keypair, kind, max_fee: int | None = None) -> bytes:
        """Sign `kind` from `keypair` with the next nonce and submit it; returns its bytes."""
        tx = Transaction(
            sender=keypair.address, nonce=self.next_nonce(keypair.address), kind=kind,
            max_fee=self.params.base_fee if max_fee is None else max_fee,
        )
        data = encode(sign_transaction(keypair, tx))
        self.submit(data)
        return data

    def make_checkpoint(self, timestamp_ms: int | None = None, extra: list[bytes] = ()) -> tuple[Checkpoint, list[TransactionEffects]]:
        """Execute the whole mempool (then `extra` entries) as the next checkpoint."""
        self.timestamp_ms = self.timestamp_ms + CHECKPOINT_INTERVAL_MS if timestamp_ms is None else timestamp_ms
        entries, self.mempool = self.mempool + list(extra), []
        previous = self.checkpoints[-1] if self.checkpoints else None
        checkpoint, effects = build_checkpoint(self.state, previous, entries, self.timestamp_ms)
        self.checkpoints.append(checkpoint)
        self.effects.extend(effects)
        self._next_nonce.clear()
        return checkpoint, effects

    def advance_epoch(self, timestamp_ms: int | None = None) -> tuple[Checkpoint, list[TransactionEffects]]:
        """A checkpoint of the mempool followed by ChangeEpoch (localnet's `advance_epoch`). By
        default it comes at the next checkpoint time, or at the epoch's end where early changes
        are not allowed."""
        timestamp = timestamp_ms
        if timestamp is None:
            timestamp = self.timestamp_ms + CHECKPOINT_INTERVAL_MS
            if not self.params.allow_early_epoch_change:
                timestamp = max(timestamp, current_epoch_end_ms(self.state))
        change = ChangeEpoch(epoch=self.state.system().epoch + 1, timestamp_ms=timestamp)
        return self.make_checkpoint(timestamp, [encode(change)])
