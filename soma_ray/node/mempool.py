"""A validator's mempool: admitted transactions waiting for a checkpoint, and the limits on them.

Pure bookkeeping: no Ray, no asyncio, no clock. The caller passes `now` (monotonic seconds) and
the accounts' nonces, and acts on what comes back (answers submitters, sets one expiry timer).
`admit_transaction` is a validator's whole admission: the envelope and the policy (fee solvency
counting the sender's pooled transactions, kind bounds, faucet authority: protocol.execution),
then `Mempool.admit`, which only decides whether there is room (counts and bytes), keeps the
admission order (oldest first, for the TTL) and keeps each sender's transactions by nonce, so
`ready` is one pass over the pool.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Set
from typing import NamedTuple

from soma_ray.protocol.errors import (
    MempoolBytesFull, MempoolFull, NonceAlreadyPooled, NonceTooFarAhead, SenderBytesFull, SenderPoolFull,
)
from soma_ray.protocol.execution import check_admission_policy, check_envelope, transaction_digest
from soma_ray.protocol.state import State


class Pending(NamedTuple):
    """An admitted transaction waiting in the mempool."""

    sender: bytes
    nonce: int
    data: bytes  # the exact bytes last admitted (a resubmission replaces them)
    admitted_at: float  # `now` of its first admission here


class VerifiedView(Set):
    """Read-only view of the exact bytes of the pooled transactions, whose signatures were
    checked at admission: execution need not check those bytes a second time."""

    __slots__ = ("_items",)

    def __init__(self, items: set[bytes]):
        self._items = items

    def __contains__(self, data: object) -> bool:
        return data in self._items

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Mempool:
    """Transactions by digest in order of first admission, at most `capacity` in all and
    `per_sender` per sender, taking at most `max_bytes` in all and `sender_max_bytes` per sender
    (None: no byte limit), each dropped by `expired` once pooled `ttl_s` seconds."""

    def __init__(self, capacity: int, per_sender: int, ttl_s: float, max_bytes: int | None = None,
                 sender_max_bytes: int | None = None):
        self.capacity = capacity
        self.per_sender = per_sender
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.sender_max_bytes = sender_max_bytes
        self._pool: dict[bytes, Pending] = {}  # insertion order = admission order = time order
        self._by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> digest
        self._bytes = 0
        self._sender_bytes: dict[bytes, int] = {}
        self._verified: set[bytes] = set()
        self.verified = VerifiedView(self._verified)
        self._faucet_nonce = 0

    def __len__(self) -> int:
        return len(self._pool)

    def __contains__(self, tx_digest: object) -> bool:
        return tx_digest in self._pool

    def __iter__(self) -> Iterator[bytes]:
        """The pooled digests, oldest admission first."""
        return iter(self._pool)

    def get(self, tx_digest: bytes) -> Pending | None:
        return self._pool.get(tx_digest)

    def nonces_of(self, sender: bytes) -> list[int]:
        """Nonces of `sender`'s pooled transactions, ascending."""
        return sorted(self._by_sender.get(sender, ()))

    def sender_pending(self, sender: bytes) -> int:
        """How many pooled transactions are `sender`'s."""
        return len(self._by_sender.get(sender, ()))

    @property
    def pooled_bytes(self) -> int:
        """The bytes of every pooled transaction."""
        return self._bytes

    def sender_bytes(self, sender: bytes) -> int:
        """The bytes of `sender`'s pooled transactions."""
        return self._sender_bytes.get(sender, 0)

    # ------------------------------------------------------------------ admission

    def admit(self, tx_digest: bytes, sender: bytes, nonce: int, data: bytes,
              account_nonce: int, now: float) -> bool:
        """Pool a transaction whose signature the caller checked; True when new, False when it
        was pooled already.

        A resubmission is never refused and does not grow the pool: its bytes replace the pooled
        ones, while it keeps its first admission time (its TTL runs on) and its place in the
        order. A new one is refused, keeping nothing, with `SenderPoolFull` when its sender holds
        `per_sender` pooled transactions, `SenderBytesFull` when its bytes would take the
        sender's past `sender_max_bytes`, `NonceTooFarAhead` when its nonce is `per_sender` or
        more past `account_nonce` (it could not execute before the ones in between),
        `NonceAlreadyPooled` when the sender's pooled transaction with that nonce is another one,
        `MempoolFull`, or `MempoolBytesFull` (past `max_bytes`); checked in that order.
        """
        pooled = self._pool.get(tx_digest)
        if pooled is not None:
            self._verified.discard(pooled.data)
            self._pool[tx_digest] = pooled._replace(data=data)
            self._verified.add(data)
            self._count_bytes(sender, len(data) - len(pooled.data))
            return False
        self.check_room(sender, nonce, account_nonce, len(data))
        if self._pool and now < next(reversed(self._pool.values())).admitted_at:
            # `expired` stops at the first one still young: that needs time order.
            raise ValueError(f"now={now} is before the latest admission: time must not go back")
        self._pool[tx_digest] = Pending(sender, nonce, data, now)
        self._by_sender.setdefault(sender, {})[nonce] = tx_digest
        self._verified.add(data)
        self._count_bytes(sender, len(data))
        return True

    def check_room(self, sender: bytes, nonce: int, account_nonce: int, size: int = 0) -> None:
        """Raise why a transaction of `size` bytes the pool does not hold would be refused (see
        `admit`)."""
        nonces = self._by_sender.get(sender, {})
        if len(nonces) >= self.per_sender:
            raise SenderPoolFull(sender_pending=len(nonces), limit=self.per_sender)
        held = self._sender_bytes.get(sender, 0)
        if self.sender_max_bytes is not None and held + size > self.sender_max_bytes:
            raise SenderBytesFull(size=size, sender_bytes=held, limit=self.sender_max_bytes)
        if nonce >= account_nonce + self.per_sender:
            raise NonceTooFarAhead(account_nonce=account_nonce,
                                   max=account_nonce + self.per_sender - 1, got=nonce)
        if nonce in nonces:
            raise NonceAlreadyPooled(nonce=nonce)
        if len(self._pool) >= self.capacity:
            raise MempoolFull(capacity=self.capacity)
        if self.max_bytes is not None and self._bytes + size > self.max_bytes:
            raise MempoolBytesFull(size=size, pooled_bytes=self._bytes, limit=self.max_bytes)

    def _count_bytes(self, sender: bytes, delta: int) -> None:
        self._bytes += delta
        held = self._sender_bytes.get(sender, 0) + delta
        if held:
            self._sender_bytes[sender] = held
        else:
            self._sender_bytes.pop(sender, None)

    def remove(self, tx_digest: bytes) -> Pending | None:
        """Take a transaction out (committed, stale or expired); None when it is not pooled."""
        pending = self._pool.pop(tx_digest, None)
        if pending is None:
            return None
        self._verified.discard(pending.data)
        self._count_bytes(pending.sender, -len(pending.data))
        nonces = self._by_sender[pending.sender]
        del nonces[pending.nonce]
        if not nonces:
            del self._by_sender[pending.sender]
        return pending

    # ------------------------------------------------------------------ proposing and committing

    def ready(self, account_nonce: Callable[[bytes], int], limit: int) -> list[bytes]:
        """Per sender (senders in byte order), the pooled transaction bytes whose nonces follow
        the account's without a gap, at most `limit` in all: a later nonce that arrived first
        waits for its predecessor instead of failing. `account_nonce` is asked once per sender,
        at most."""
        ready: list[bytes] = []
        if limit <= 0:
            return ready
        for sender in sorted(self._by_sender):
            nonces = self._by_sender[sender]
            nonce = account_nonce(sender)
            while (tx_digest := nonces.get(nonce)) is not None:
                ready.append(self._pool[tx_digest].data)
                if len(ready) >= limit:
                    return ready
                nonce += 1
        return ready

    def stale(self, account_nonce: Callable[[bytes], int]) -> list[tuple[bytes, int]]:
        """(digest, the account's nonce) of each pooled transaction whose nonce is below its
        account's, in admission order: another transaction took the nonce, so it can never
        execute. Removes nothing: the caller drops them and tells their submitters."""
        expected: dict[bytes, int] = {}  # by sender, asked once per sender
        stale = []
        for tx_digest, pending in self._pool.items():
            nonce = expected.get(pending.sender)
            if nonce is None:
                nonce = expected[pending.sender] = account_nonce(pending.sender)
            if pending.nonce < nonce:
                stale.append((tx_digest, nonce))
        return stale

    # ------------------------------------------------------------------ expiry

    def expired(self, now: float) -> list[tuple[bytes, Pending]]:
        """Remove and return, oldest first, the transactions pooled `ttl_s` or longer
        (`admitted_at + ttl_s <= now`): one whose earlier nonce never comes would otherwise
        hold its sender's slot forever."""
        expired = []
        for tx_digest, pending in self._pool.items():
            if pending.admitted_at + self.ttl_s > now:
                break
            expired.append((tx_digest, pending))
        for tx_digest, _ in expired:
            self.remove(tx_digest)
        return expired

    def next_expiry(self, now: float) -> float | None:
        """Seconds until the oldest transaction expires (0 when it has), None when the pool is
        empty: one timer for the whole pool. Exactly 0 when `expired(now)` would remove some."""
        if not self._pool:
            return None
        oldest = next(iter(self._pool.values()))
        return max(oldest.admitted_at + self.ttl_s - now, 0.0)

    # ------------------------------------------------------------------ the faucet's nonces

    def faucet_nonce(self, account_nonce: int, sender: bytes | None = None) -> int:
        """The nonce the faucet's next transaction takes: past the ones it had admitted, unless
        an expired one handed its nonce back. With `sender` (the faucet's key), nonces the
        sender has pooled are skipped: a second transaction there would be `NonceAlreadyPooled`."""
        nonce = max(self._faucet_nonce, account_nonce)
        if sender is not None:
            pooled = self._by_sender.get(sender, {})
            while nonce in pooled:
                nonce += 1
        return nonce

    def faucet_admitted(self, nonce: int) -> None:
        """Only an admitted faucet transaction takes its nonce: a refused one leaves no gap that
        would hold every later faucet transaction back."""
        self._faucet_nonce = nonce + 1

    def faucet_expired(self, nonce: int) -> None:
        """An expired faucet transaction hands its nonce back: later ones would otherwise all
        wait behind the gap it leaves."""
        self._faucet_nonce = min(self._faucet_nonce, nonce)


def admit_transaction(pool: Mempool, data: bytes, state: State, now: float) -> tuple[bytes, bool]:
    """A validator's whole admission of `data` into `pool` at `now`, against the committed
    `state`: the envelope (protocol.execution.check_envelope), then, unless it is pooled already
    (a resubmission is never refused), the policy with the sender's pooled count (a fee each
    for them and this one, kind bounds, faucet authority), then the pool's room. Returns (its
    digest, whether it is new here); raises the typed error why not, keeping nothing."""
    system = state.system()
    signed = check_envelope(data, state, system, pool.verified)
    tx = signed.transaction
    tx_digest = transaction_digest(tx)
    if tx_digest not in pool:
        check_admission_policy(tx, state, system, pool.sender_pending(tx.sender))
    return tx_digest, pool.admit(tx_digest, tx.sender, tx.nonce, data, state.account(tx.sender).nonce, now)
