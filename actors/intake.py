"""Transactions coming into a validator: admission into its pure `Mempool`, the futures its
submitters wait on, the one expiry timer, and gossip to the peers. Part of the validator actor's
shell (it runs on that actor's event loop); the rules themselves are the mempool's
(`admit_transaction`: the envelope, fee solvency, kind bounds, faucet authority, room)."""
from __future__ import annotations

import asyncio
import time

from soma_ray import metrics
from actors.peers import Peers
from soma_ray.config import NetworkConfig
from soma_ray.node.mempool import Mempool, admit_transaction
from soma_ray.node.replies import SubmitReply
from soma_ray.protocol.checkpoint import LeftOut
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import BadNonce, ProtocolError, TransactionExpired
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.state import State
from soma_ray.protocol.types import Faucet, Transaction, TransactionEffects

# How many mempool transactions one checkpoint carries at most.
MAX_CHECKPOINT_TRANSACTIONS = 1000


class Intake:
    def __init__(self, network: NetworkConfig, state: State, peers: Peers, metric_tags: dict[str, str]):
        self.mempool = Mempool(network.mempool_capacity, network.mempool_per_sender, network.mempool_ttl_s,
                               network.mempool_bytes, network.mempool_sender_bytes)
        self._ttl_s = network.mempool_ttl_s
        self._state = state
        self._peers = peers
        self._waiters: dict[bytes, asyncio.Future] = {}  # by transaction digest
        self._expiry: asyncio.TimerHandle | None = None  # when the oldest reaches the TTL
        self._faucet_key: bytes | None = None
        self._metric_tags = metric_tags

    def account_nonce(self, sender: bytes) -> int:
        return self._state.account(sender).nonce

    def ready(self, limit: int = MAX_CHECKPOINT_TRANSACTIONS) -> list[bytes]:
        """Pooled transactions that can execute next, in nonce order per sender."""
        return self.mempool.ready(self.account_nonce, limit)

    def admit(self, data: bytes) -> bytes:
        """Pool an admissible transaction (the limits: `Mempool.admit`); the digest its waiter
        is found under. Raises the typed error why not, keeping nothing."""
        tx_digest, new = admit_transaction(self.mempool, data, self._state, time.monotonic())
        if new:
            self._schedule_expiry()
        return tx_digest

    def admit_and_share(self, data: bytes) -> asyncio.Future | SubmitReply:
        """The waiter of an admitted transaction, queued for the peers; or why it was refused."""
        try:
            tx_digest = self.admit(data)
        except ProtocolError as error:
            return SubmitReply.refused(error)
        self._peers.share(data)
        return self._waiters.setdefault(tx_digest, asyncio.get_running_loop().create_future())

    def faucet(self, keypair: Keypair, recipient: bytes, amount: int) -> asyncio.Future | SubmitReply:
        """Admit a Faucet transaction signed by `keypair` (the validator's key; its genesis
        balance pays the fee) with the faucet's next nonce; only an admitted one takes it."""
        self._faucet_key = keypair.address
        nonce = self.mempool.faucet_nonce(self.account_nonce(keypair.address), keypair.address)
        system = self._state.system()
        tx = Transaction(sender=keypair.address, nonce=nonce, kind=Faucet(recipient=recipient, amount=amount),
                         max_fee=system.parameters.base_fee)
        outcome = self.admit_and_share(encode(sign_transaction(keypair, tx, system.chain_id)))
        if not isinstance(outcome, SubmitReply):
            self.mempool.faucet_admitted(nonce)
        return outcome

    def committed(self, sequence: int, effects: list[TransactionEffects]) -> None:
        """Answer the submitters of a certified checkpoint's transactions, and of those whose
        nonce another transaction took (they can never execute)."""
        now = time.monotonic()
        for effect in effects:
            self._observe_finality(effect.transaction_digest, now)
            self._answer(effect.transaction_digest, SubmitReply(sequence=sequence, effects=effect))
        for tx_digest, expected in self.mempool.stale(self.account_nonce):
            got = self.mempool.get(tx_digest).nonce
            self._answer(tx_digest, SubmitReply.refused(BadNonce(expected=expected, got=got)))

    def left_out(self, left_out: list[LeftOut]) -> None:
        """What this validator's proposal left out: those that can never execute are dropped and
        their submitters told why (like an expiry); a later nonce, or one with no room left,
        stays pooled."""
        for item in left_out:
            if item.retry or item.tx_digest is None:
                continue
            pending = self.mempool.get(item.tx_digest)
            self._answer(item.tx_digest, SubmitReply.refused(item.error))
            if pending is not None and pending.sender == self._faucet_key:
                self.mempool.faucet_expired(pending.nonce)

    def _observe_finality(self, tx_digest: bytes, now: float) -> None:
        # Only transactions submitted here: this validator saw both their admission and commit.
        pending = self.mempool.get(tx_digest)
        if pending is not None and tx_digest in self._waiters:
            metrics.FINALITY_SECONDS.record(now - pending.admitted_at, self._metric_tags)

    def record_mempool_size(self) -> None:
        metrics.MEMPOOL_TRANSACTIONS.record(len(self.mempool), self._metric_tags)

    def _schedule_expiry(self) -> None:
        delay = self.mempool.next_expiry(time.monotonic())
        if self._expiry is None and delay is not None:
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """Drop the transactions pooled for the TTL and fail their submitters: one whose earlier
        nonce never comes would otherwise hold its sender's slot forever."""
        self._expiry = None
        for tx_digest, pending in self.mempool.expired(time.monotonic()):
            self._answer(tx_digest, SubmitReply.refused(TransactionExpired(ttl_s=self._ttl_s)))
            if pending.sender == self._faucet_key:
                self.mempool.faucet_expired(pending.nonce)
        self.record_mempool_size()
        self._schedule_expiry()

    def _answer(self, tx_digest: bytes, reply: SubmitReply) -> None:
        """Take a transaction out of the mempool and answer its submitter."""
        self.mempool.remove(tx_digest)
        waiter = self._waiters.pop(tx_digest, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
