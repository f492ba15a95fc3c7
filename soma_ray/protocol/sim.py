"""A single-process driver: orders submitted transactions into checkpoints without consensus.

For tests, benchmarks and `soma simulate`::

    sim = Simulator(localnet_config())
    sim.submit_kind(keypair, Transfer(recipient, 5))   # or sim.submit(signed_bytes)
    checkpoint, effects = sim.make_checkpoint()
    sim.advance_epoch()

It admits as a validator's mempool does (`check_admission`, with the sender's pooled count for
the fee) and seals as a proposer does (`propose_checkpoint`): an entry that cannot execute is
left out (`left_out`), and stays in the mempool only while it can still execute (a nonce
ahead of its predecessors, which are pooled too, or a checkpoint that was full).
"""
from __future__ import annotations

from collections import Counter

from soma_ray.protocol.checkpoint import LeftOut, propose_checkpoint
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.epoch import current_epoch_end_ms
from soma_ray.protocol.execution import check_admission_policy, check_envelope, sign_transaction
from soma_ray.protocol.genesis import GenesisConfig, genesis
from soma_ray.protocol.types import (
    ChangeEpoch, Checkpoint, SignedTransaction, Transaction, TransactionEffects,
)

CHECKPOINT_INTERVAL_MS = 1_000


class Simulator:
    def __init__(self, config: GenesisConfig) -> None:
        self.state = genesis(config)
        self.timestamp_ms = config.timestamp_ms
        self.mempool: list[bytes] = []
        self.checkpoints: list[Checkpoint] = []
        self.effects: list[TransactionEffects] = []
        self.left_out: list[LeftOut] = []  # what the last checkpoint left out, and why
        self._next_nonce: dict[bytes, int] = {}
        self._pooled: Counter[bytes] = Counter()  # the mempool's transactions by sender
        self._in_pool: set[bytes] = set()

    @property
    def params(self):
        return self.state.system().parameters

    @property
    def chain_id(self) -> bytes:
        return self.state.system().chain_id

    def submit(self, data: bytes) -> None:
        """Admit signed transaction bytes into the mempool; raises the admission's typed error.
        The same bytes again are pooled once."""
        data = bytes(data)
        if data in self._in_pool:
            return
        system = self.state.system()
        signed = check_envelope(data, self.state, system)
        sender = signed.transaction.sender
        check_admission_policy(signed.transaction, self.state, system, self._pooled[sender])
        self._next_nonce[sender] = max(self.next_nonce(sender), signed.transaction.nonce + 1)
        self._pooled[sender] += 1
        self._in_pool.add(data)
        self.mempool.append(data)

    def next_nonce(self, address: bytes) -> int:
        """The nonce the next transaction of `address` should carry, counting the mempool."""
        return max(self._next_nonce.get(address, 0), self.state.account(address).nonce)

    def sign(self, keypair: Keypair, kind, max_fee: int | None = None, nonce: int | None = None) -> bytes:
        """`kind` from `keypair`, signed for this network (by default with the next nonce)."""
        tx = Transaction(
            sender=keypair.address, nonce=self.next_nonce(keypair.address) if nonce is None else nonce,
            kind=kind, max_fee=self.params.base_fee if max_fee is None else max_fee,
        )
        return encode(sign_transaction(keypair, tx, self.chain_id))

    def submit_kind(self, keypair: Keypair, kind, max_fee: int | None = None) -> bytes:
        """Sign `kind` from `keypair` with the next nonce and submit it; returns its bytes."""
        data = self.sign(keypair, kind, max_fee)
        self.submit(data)
        return data

    def make_checkpoint(self, timestamp_ms: int | None = None, extra: list[bytes] = ()) -> tuple[Checkpoint, list[TransactionEffects]]:
        """Execute the whole mempool (then `extra` entries) as the next checkpoint, as a
        proposer: what cannot execute is left out (`self.left_out`)."""
        self.timestamp_ms = self.timestamp_ms + CHECKPOINT_INTERVAL_MS if timestamp_ms is None else timestamp_ms
        entries = self.mempool + list(extra)
        previous = self.checkpoints[-1] if self.checkpoints else None
        checkpoint, effects, self.left_out = propose_checkpoint(self.state, previous, entries, self.timestamp_ms)
        self.checkpoints.append(checkpoint)
        self.effects.extend(effects)
        self.mempool = self._still_executable(self.left_out)
        self._in_pool = set(self.mempool)
        self._pooled = Counter(decode(data, SignedTransaction).transaction.sender for data in self.mempool)
        self._next_nonce.clear()
        for data in self.mempool:
            tx = decode(data, SignedTransaction).transaction
            self._next_nonce[tx.sender] = max(self.next_nonce(tx.sender), tx.nonce + 1)
        return checkpoint, effects

    def _still_executable(self, left_out: list[LeftOut]) -> list[bytes]:
        """The left-out transactions that may execute in a later checkpoint: those left out for
        want of room, and a later nonce whose predecessors from the account's nonce on are all
        still pooled."""
        retry = [item for item in left_out if item.retry and item.tx_digest is not None]
        txs = [decode(item.entry, SignedTransaction).transaction for item in retry]
        nonces: dict[bytes, set[int]] = {}
        for tx in txs:
            nonces.setdefault(tx.sender, set()).add(tx.nonce)
        kept = []
        for item, tx in zip(retry, txs):
            start = self.state.account(tx.sender).nonce
            if all(n in nonces[tx.sender] for n in range(start, tx.nonce)):
                kept.append(item.entry)
        return kept

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
