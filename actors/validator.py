"""The validator actor: consensus transport, mempool, executor and LMDB replica around the pure core.

Transport: consensus messages travel as canonical msgpack bytes in fire-and-forget
`peer.deliver.remote(bytes)` calls to peers found by name, so no pickled object crosses the
trust boundary and a restarted peer is reached under the same name. Timers are asyncio timers
in this async actor; every handler runs on the actor's one event loop, so the core is never
entered concurrently.

Durability: the safety state is written before any vote it allows is sent, and a decided
checkpoint with its certificate and state changes is committed to LMDB in one transaction before
the next height starts, i.e. before this validator votes past it.

Evidence: every equivocation the core reports is kept in the LMDB store, once, and survives
restarts and epoch changes (the core keeps only its latest 256, in memory).

Recovery: a restarted validator reloads state from its store; a validator that is behind (or
lost its disk) fetches certified checkpoints from peers, verifies each certificate against the
committee its own replayed state holds, re-executes the checkpoint and checks the state root.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import NamedTuple

import msgspec
import ray

from actors.handles import find_actor
from soma_ray.config import NetworkConfig
from soma_ray.consensus.core import ConsensusCore
from soma_ray.consensus.messages import (
    Broadcast,
    CertifiedValue,
    CommitCertificate,
    Decide,
    Evidence,
    EvidenceFound,
    FallenBehind,
    Message,
    PeerBehind,
    PersistSafetyState,
    Send,
    SetTimer,
    value_digest,
)
from soma_ray.consensus.chain import verify_checkpoint_chain
from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.encoding import Struct, blake2b256, decode, encode
from soma_ray.protocol.execution import check_admission, sign_transaction, transaction_digest
from soma_ray.protocol.types import ChangeEpoch, Checkpoint, Faucet, Transaction
from soma_ray.protocol.errors import (
    BadNonce, MempoolFull, NonceTooFarAhead, ProtocolError, SenderPoolFull, TransactionExpired,
)
from soma_ray.protocol.crypto import address_of
from soma_ray.protocol.genesis import genesis
from soma_ray.protocol.state import State
from soma_ray.storage import ValidatorStore

# How many mempool transactions one checkpoint carries at most.
MAX_CHECKPOINT_TRANSACTIONS = 1000
# How many certified checkpoints one catch-up request fetches.
CATCH_UP_BATCH = 64
# A proposal stamped further ahead of this validator's clock is refused.
MAX_CLOCK_AHEAD_MS = 10_000
# An idle network still cuts a checkpoint this often, so the consensus clock (and with it the
# epoch clock) advances without traffic.
IDLE_CHECKPOINT_INTERVAL_S = 1.0




class Pending(NamedTuple):
    """An admitted transaction waiting in the mempool."""

    sender: bytes
    nonce: int
    data: bytes
    admitted_at: float  # time.monotonic() of its first admission here


class StoredEvidence(Struct, frozen=True):
    """What the store keeps of one equivocation: who signed twice where, and the evidence."""

    kind: str  # "ProposalEquivocation" or "VoteEquivocation", the type `evidence` decodes as
    epoch: int  # whose committee `signer` indexes
    height: int
    round: int
    signer: int
    evidence: bytes  # canonical encoding, its two messages in byte order (`_in_byte_order`)


class InvalidCheckpoint(Exception):
    """A proposed checkpoint is not the one this replica builds from the same inputs."""


class ValidatorActor:
    def __init__(self, config: dict, index: int):
        self._network = NetworkConfig(**config)
        self._index = index
        self._keypair = self._network.validator_keypair(index)
        initial = genesis(self._network.genesis_config())
        root = initial.state_root()
        self._store = ValidatorStore(self._network.validator_dir(index) / "db", genesis_digest=root)
        self._store.write_genesis(root, initial.items())
        self._state = State.from_items(self._store.state_items())
        self._latest = self._stored_latest_checkpoint()
        # By transaction digest, in order of first admission (so the oldest come first).
        self._mempool: dict[bytes, Pending] = {}
        self._expiry: asyncio.TimerHandle | None = None  # when the oldest reaches the TTL
        self._sender_pending: dict[bytes, int] = {}  # how many of the mempool's are each sender's
        # Exact bytes of the mempool's transactions, whose signatures `_admit` verified: execution
        # does not verify them a second time (same bytes, same signature over the same message).
        self._verified: set[bytes] = set()
        self._gossip: list[bytes] = []  # admitted from clients, not yet sent to the peers
        self._waiters: dict[bytes, asyncio.Future] = {}
        self._executed: dict[bytes, tuple] = {}  # value digest -> (changes, effects) of validate
        self._requested_epoch: int | None = None
        self._timers: dict[tuple, asyncio.TimerHandle] = {}
        self._peers: dict[int, object] = {}
        # Actor name of each validator address (peers are looked up again after every timeout).
        self._names = {address_of(public_key): self._network.validator_name(i)
                       for i, public_key in enumerate(self._network.validator_public_keys())}
        self._clock = None
        self._core: ConsensusCore | None = None
        self._next_height: asyncio.TimerHandle | None = None
        self._starting = asyncio.Lock()
        self._rejoining: asyncio.Task | None = None  # catching up after falling behind
        # The height a rejoin last reached: a member's far-ahead message at that same height
        # again (a Byzantine one may sign any height) does not pause the core a second time.
        self._rejoined_at = -1
        self._committed_txs = 0
        self._faucet_nonce = 0

    # ------------------------------------------------------------------ lifecycle

    def ready(self) -> bool:
        return True

    async def start_consensus(self) -> None:
        """Catch up with the peers, then join consensus at the next height (idempotent).

        The launcher calls it; after Ray restarts a crashed validator, the first peer message
        or client call does."""
        async with self._starting:
            if self._core is not None:
                return
            await self._catch_up()
            self._restart_core()

    def _restart_core(self) -> None:
        """A new core at the next height to decide, with the safety state on disk."""
        self._core = self._new_core(self._store.safety_state())
        self._perform(self._core.start_height())

    def _new_core(self, safety_state: bytes | None) -> ConsensusCore:
        return ConsensusCore(self._state.system().committee, self._keypair, self,
                             self._store.next_sequence(), safety_state=safety_state)

    # ------------------------------------------------------------------ transport

    async def deliver(self, message: bytes) -> None:
        """A consensus message from a peer (fire-and-forget; bad bytes are dropped)."""
        await self.start_consensus()
        if self._rejoining is not None:
            return  # the core is being replaced; peers re-send on their timers
        try:
            decoded = decode(message, Message)
        except ProtocolError:
            return
        self._perform(self._core.on_message(decoded))

    def _perform(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, PersistSafetyState):
                self._store.put_safety_state(output.data)
            elif isinstance(output, Broadcast):
                self._broadcast(encode(output.message))
            elif isinstance(output, Send):
                self._send(output.to, encode(output.message))
            elif isinstance(output, SetTimer):
                self._set_timer(output)
            elif isinstance(output, Decide):
                self._commit(output.height, output.value, output.certificate)
            elif isinstance(output, PeerBehind):
                self._serve_from_store(output.peer, output.height)
            elif isinstance(output, FallenBehind):
                self._rejoin_soon()
            elif isinstance(output, EvidenceFound):
                self._keep_evidence(output.evidence)

    def _keep_evidence(self, evidence: Evidence) -> None:
        """Durably keep an equivocation; one reported again (in either order) is kept once."""
        evidence = _in_byte_order(evidence)
        data = encode(evidence)
        first = evidence.first
        record = StoredEvidence(type(evidence).__name__, self._state.system().epoch, first.height,
                                first.round, first.signer, data)
        self._store.add_evidence(blake2b256(data), encode(record))

    def _other_members(self) -> list[int]:
        return [m for m in range(len(self._core.committee.members)) if m != self._core.index]

    def _broadcast(self, message: bytes) -> None:
        for member in self._other_members():
            self._send(member, message)

    def _send(self, member: int, message: bytes) -> None:
        peer = self._peer(member)
        if peer is not None:
            peer.deliver.remote(message)

    def _peer(self, member: int):
        """Handle of committee member `member`, looked up by name (None while it is down)."""
        if member not in self._peers:
            name = self._names.get(self._core.committee.members[member].address)
            try:
                self._peers[member] = ray.get_actor(name, namespace=self._network.namespace)
            except ValueError:
                return None
        return self._peers[member]

    def _set_timer(self, timer: SetTimer) -> None:
        key = (timer.height, timer.round, timer.step)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(timer.duration_ms / 1000, self._fire_timer, key)

    def _fire_timer(self, key: tuple) -> None:
        # A timeout means a peer may be missing; a peer that was stopped and launched again is a
        # new actor under the same name, so look the handles up afresh.
        self._peers.clear()
        self._timers.pop(key, None)
        if self._rejoining is None:
            self._perform(self._core.on_timeout(*key))

    def _serve_from_store(self, member: int, height: int) -> None:
        checkpoint, certificate = self._store.get_checkpoint(height)
        certified = CertifiedValue(checkpoint, decode(certificate, CommitCertificate))
        self._send(member, encode(certified))

    # ------------------------------------------------------------------ the application

    def propose(self, height: int) -> bytes:
        """This node leads `height`: a checkpoint of the mempool's next transactions."""
        timestamp_ms = max(int(time.time() * 1000), self._latest_timestamp_ms())
        checkpoint, changes, effects = self._build(self._next_entries(timestamp_ms), timestamp_ms)
        value = encode(checkpoint)
        # This replica just executed exactly these bytes on its committed state: `validate` and
        # `_commit` reuse the result instead of executing the proposal again.
        self._executed[value_digest(value)] = (changes, effects)
        return value

    def validate(self, height: int, value: bytes) -> bool:
        """Re-execute a proposed checkpoint on this replica; valid when it rebuilds identically."""
        try:
            checkpoint = decode(value, Checkpoint)
            if checkpoint.timestamp_ms > time.time() * 1000 + MAX_CLOCK_AHEAD_MS:
                return False  # a leader must not pull consensus time (and epochs) forward
            key = value_digest(value)
            if key not in self._executed:  # else this replica built it (propose) at this height
                self._executed[key] = self._execute(height, checkpoint)
        except (ProtocolError, InvalidCheckpoint):
            return False
        return True

    def _execute(self, height: int, checkpoint: Checkpoint) -> tuple:
        """(state changes, effects) of `checkpoint` on the committed state, which stays as it was.

        Raises InvalidCheckpoint when the checkpoint is not what this replica would build."""
        if checkpoint.sequence != height or checkpoint.timestamp_ms < self._latest_timestamp_ms():
            raise InvalidCheckpoint(f"sequence/timestamp out of order at height {height}")
        rebuilt, changes, effects = self._build(checkpoint.transactions, checkpoint.timestamp_ms)
        if rebuilt != checkpoint:
            raise InvalidCheckpoint(f"checkpoint {height} does not re-execute to the same state")
        return changes, effects

    def _build(self, entries: list[bytes], timestamp_ms: int) -> tuple:
        """(checkpoint, state changes, effects) of `entries` on the committed state, which is
        rolled back: only a certified checkpoint is applied (`_persist_and_apply`)."""
        self._state.begin()
        self._state.mark()
        try:
            checkpoint, effects = build_checkpoint(self._state, self._latest, entries,
                                                   timestamp_ms, self._verified)
            return checkpoint, self._state.changes(), effects
        finally:
            self._state.rollback()

    def _next_entries(self, timestamp_ms: int) -> list:
        """Mempool transactions in nonce order per sender, then a requested ChangeEpoch."""
        entries = self._ready_transactions()[:MAX_CHECKPOINT_TRANSACTIONS]
        if self._requested_epoch_due():
            next_epoch = self._state.system().epoch + 1
            entries.append(encode(ChangeEpoch(epoch=next_epoch, timestamp_ms=timestamp_ms)))
        return entries

    def _ready_transactions(self) -> list[bytes]:
        """Per sender, the mempool transactions whose nonces follow the account's without a gap
        (a later nonce that arrived first waits for its predecessor instead of failing)."""
        by_sender: dict[bytes, dict[int, bytes]] = {}
        for pending in self._mempool.values():
            by_sender.setdefault(pending.sender, {})[pending.nonce] = pending.data
        ready = []
        for sender in sorted(by_sender):
            nonce = self._state.account(sender).nonce
            while nonce in by_sender[sender]:
                ready.append(by_sender[sender][nonce])
                nonce += 1
        return ready

    def _stored_latest_checkpoint(self) -> Checkpoint | None:
        latest = self._store.latest_sequence()
        if latest is None:
            return None
        return decode(self._store.get_checkpoint(latest)[0], Checkpoint)

    def _latest_timestamp_ms(self) -> int:
        return 0 if self._latest is None else self._latest.timestamp_ms

    # ------------------------------------------------------------------ committing

    def _commit(self, height: int, value: bytes, certificate: CommitCertificate) -> None:
        """Apply a decided checkpoint, make it durable, then start the next height."""
        checkpoint = decode(value, Checkpoint)
        key = value_digest(value)
        changes, effects = self._executed.pop(key, None) or self._execute(height, checkpoint)
        self._executed.clear()
        epoch_before = self._state.system().epoch
        self._persist_and_apply(checkpoint, value, encode(certificate), changes, effects)
        self._cancel_timers()
        if self._state.system().epoch != epoch_before:  # a new committee runs the next heights
            self._peers.clear()
            self._core = self._new_core(None)
        self._report_to_clock(checkpoint)
        self._schedule_next_height()

    def _persist_and_apply(self, checkpoint: Checkpoint, value: bytes, certificate: bytes,
                           changes: list, effects: list) -> None:
        """Durably store a certified checkpoint with its state changes, then apply them here."""
        self._store.commit_checkpoint(checkpoint.sequence, value, certificate, changes,
                                      epoch=checkpoint.epoch)
        for key, item in changes:
            self._state.put_raw(key, item)
        self._latest = checkpoint
        self._finish_transactions(effects, checkpoint.sequence)

    def _schedule_next_height(self) -> None:
        """Start the next height now when there is work, else after the idle interval."""
        busy = self._requested_epoch_due() or self._ready_transactions()
        delay = 0.0 if busy else IDLE_CHECKPOINT_INTERVAL_S
        loop = asyncio.get_running_loop()
        self._next_height = loop.call_later(delay, self._start_height)

    def _start_height(self) -> None:
        if self._next_height is not None and self._rejoining is None:
            self._next_height.cancel()
            self._next_height = None
            self._perform(self._core.start_height())

    def _requested_epoch_due(self) -> bool:
        return self._requested_epoch == self._state.system().epoch + 1

    def _finish_transactions(self, effects: list, height: int) -> None:
        for effect in effects:
            self._drop(effect.transaction_digest, (height, effect))
            self._committed_txs += 1
        # Transactions whose nonce is now stale can never execute (another transaction of the
        # sender took the nonce): drop them and tell their submitters.
        nonces: dict[bytes, int] = {}  # by sender: the account's nonce, read once per sender
        for tx_digest, pending in list(self._mempool.items()):
            expected = nonces.get(pending.sender)
            if expected is None:
                expected = nonces[pending.sender] = self._state.account(pending.sender).nonce
            if pending.nonce < expected:
                self._drop(tx_digest, BadNonce(expected=expected, got=pending.nonce))

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _report_to_clock(self, checkpoint: Checkpoint) -> None:
        system = self._state.system()
        if self._clock is None:
            try:
                self._clock = ray.get_actor(self._network.clock_name, namespace=self._network.namespace)
            except ValueError:
                return
        self._clock.observe_checkpoint.remote(system.epoch, system.epoch_start_timestamp_ms,
                                        checkpoint.timestamp_ms)

    async def request_epoch_change(self, epoch: int) -> None:
        self._requested_epoch = epoch
        self._start_height()

    # ------------------------------------------------------------------ mempool and clients

    async def submit(self, data: bytes) -> dict:
        """Admit a signed transaction, share it with the peers, and wait for its certified effects.

        Returns {"sequence", "effects"} or {"error": (code, fields)} when admission refuses it
        (`MempoolFull`, `SenderPoolFull` and `NonceTooFarAhead` included: then nothing of it is
        kept, see `_admit`) or when it is still pooled `mempool_ttl_s` after its first admission
        (`TransactionExpired`: dropped, see `_expire`); an execution failure is in the effects'
        `error`."""
        return (await self.submit_batch([data]))[0]

    async def submit_batch(self, batch: list[bytes]) -> list[dict]:
        """`submit` for many transactions in one call: each is admitted on its own, all are shared
        with the peers in one call each, and the results (in `batch` order) come back once every
        admitted one is in a certified checkpoint."""
        await self.start_consensus()
        outcomes = [self._admit_and_share(data) for data in batch]
        self._start_height()  # after the waiters exist: a lone validator decides at once
        return [await self._result(outcome) for outcome in outcomes]

    def _admit_and_share(self, data: bytes) -> asyncio.Future | ProtocolError:
        """The waiter of an admitted transaction, queued for the peers; or why it was refused."""
        try:
            tx_digest = self._admit(data)
        except ProtocolError as error:
            return error
        self._share(data)
        waiter = self._waiters.get(tx_digest) or asyncio.get_running_loop().create_future()
        self._waiters[tx_digest] = waiter
        return waiter

    @staticmethod
    async def _result(outcome: asyncio.Future | ProtocolError) -> dict:
        if isinstance(outcome, asyncio.Future):
            outcome = await outcome
        if isinstance(outcome, ProtocolError):
            return {"error": (outcome.code, outcome.values())}
        # The effects struct itself: msgspec cannot build a decoder for ExecutionError's field
        # union, so canonical bytes would not decode on the client.
        sequence, effects = outcome
        return {"sequence": sequence, "effects": effects}

    def _share(self, data: bytes) -> None:
        """Queue an admitted transaction for the peers: what is admitted during one turn of the
        event loop goes out as one `add_transactions` call per peer."""
        self._gossip.append(data)
        if len(self._gossip) == 1:
            asyncio.get_running_loop().call_soon(self._flush_gossip)

    def _flush_gossip(self) -> None:
        batch, self._gossip = self._gossip, []
        for member in self._other_members():
            peer = self._peer(member)
            if peer is not None:
                peer.add_transactions.remote(batch)

    async def add_transactions(self, batch: list[bytes]) -> None:
        """Transactions a peer admitted: admit each here too so any leader can order them. One
        this validator refuses (its own limits included: a full pool, a sender at its limit
        here) is dropped here only; the validator that admitted it still holds it."""
        for data in batch:
            try:
                self._admit(data)
            except ProtocolError:
                continue
        self._start_height()

    async def request_faucet(self, recipient: bytes, amount: int) -> dict:
        """Localnet faucet: this validator signs a Faucet transaction from its own key (its
        genesis balance pays the fee; the coins come from the emission pool)."""
        await self.start_consensus()
        nonce = max(self._faucet_nonce, self._state.account(self._keypair.address).nonce)
        tx = Transaction(sender=self._keypair.address, nonce=nonce,
                         kind=Faucet(recipient=recipient, amount=amount),
                         max_fee=self._state.system().parameters.base_fee)
        outcome = self._admit_and_share(encode(sign_transaction(self._keypair, tx)))
        if not isinstance(outcome, ProtocolError):
            # Only an admitted one takes the nonce: one refused (MempoolFull, or SenderPoolFull
            # when this validator's key holds its limit of pooled faucet transactions) leaves no
            # gap that would hold every later faucet transaction back.
            self._faucet_nonce = nonce + 1
        self._start_height()
        return await self._result(outcome)

    def _admit(self, data: bytes) -> bytes:
        """Pool an admissible transaction; the digest its waiter is found under. A new one is
        refused when its sender holds `mempool_per_sender` pooled transactions already
        (`SenderPoolFull`; a second transaction with a pooled one's nonce counts too), when its
        nonce is that far or further past the account's (`NonceTooFarAhead`: it could not
        execute before the ones in between), or when the pool is full (`MempoolFull`); one the
        pool holds already is never refused: resubmitting it does not grow the pool."""
        data = bytes(data)
        signed = check_admission(data, self._state, self._state.system().parameters, self._verified)
        tx = signed.transaction
        tx_digest = transaction_digest(tx)
        replaced = self._mempool.get(tx_digest)
        if replaced is None:
            self._check_room(tx)
            self._mempool[tx_digest] = Pending(tx.sender, tx.nonce, data, time.monotonic())
            self._sender_pending[tx.sender] = self._sender_pending.get(tx.sender, 0) + 1
            self._schedule_expiry()
        else:  # resubmitted: its TTL still runs from the first admission, keeping the order
            self._verified.discard(replaced.data)
            self._mempool[tx_digest] = replaced._replace(data=data)
        self._verified.add(data)
        return tx_digest

    def _check_room(self, tx: Transaction) -> None:
        """Raise why the mempool has no room for `tx`, a transaction it does not hold."""
        limit = self._network.mempool_per_sender
        pending = self._sender_pending.get(tx.sender, 0)
        if pending >= limit:
            raise SenderPoolFull(sender_pending=pending, limit=limit)
        account_nonce = self._state.account(tx.sender).nonce
        if tx.nonce >= account_nonce + limit:
            raise NonceTooFarAhead(account_nonce=account_nonce, max=account_nonce + limit - 1,
                                   got=tx.nonce)
        if len(self._mempool) >= self._network.mempool_capacity:
            raise MempoolFull(capacity=self._network.mempool_capacity)

    def _schedule_expiry(self) -> None:
        """Wake up when the oldest pooled transaction reaches the TTL (one timer for the pool)."""
        if self._expiry is None and self._mempool:
            oldest = next(iter(self._mempool.values()))
            delay = oldest.admitted_at + self._network.mempool_ttl_s - time.monotonic()
            self._expiry = asyncio.get_running_loop().call_later(max(delay, 0), self._expire)

    def _expire(self) -> None:
        """Drop the transactions pooled for the TTL and fail their submitters: one whose earlier
        nonce never comes would otherwise hold its sender's slot forever."""
        self._expiry = None
        deadline = time.monotonic() - self._network.mempool_ttl_s
        expired = []
        for tx_digest, pending in self._mempool.items():
            if pending.admitted_at > deadline:
                break
            expired.append((tx_digest, pending))
        for tx_digest, pending in expired:
            self._drop(tx_digest, TransactionExpired(ttl_s=self._network.mempool_ttl_s))
            if pending.sender == self._keypair.address:
                # The faucet's next transaction takes this nonce again: later ones would
                # otherwise all wait behind the gap it leaves.
                self._faucet_nonce = min(self._faucet_nonce, pending.nonce)
        self._schedule_expiry()

    def _drop(self, tx_digest: bytes, outcome) -> None:
        """Take a transaction out of the mempool and answer its submitter with `outcome`
        ((sequence, effects) or the error why it will never execute)."""
        self._unpool(tx_digest)
        waiter = self._waiters.pop(tx_digest, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def _unpool(self, tx_digest: bytes) -> None:
        """Take a transaction out of the mempool (nothing when it is not there)."""
        pending = self._mempool.pop(tx_digest, None)
        if pending is None:
            return
        self._verified.discard(pending.data)
        left = self._sender_pending[pending.sender] - 1
        if left:
            self._sender_pending[pending.sender] = left
        else:
            del self._sender_pending[pending.sender]

    # ------------------------------------------------------------------ catch-up

    async def checkpoints(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes, bytes]]:
        """Certified checkpoints [from_seq, to_seq] for a peer that is catching up."""
        return self._store.checkpoints(from_seq, to_seq)

    async def _catch_up(self) -> None:
        """Fetch, verify and apply what the peers committed beyond this replica's disk."""
        for i in range(self._network.validators):
            if i == self._index:
                continue
            try:
                peer = ray.get_actor(self._network.validator_name(i), namespace=self._network.namespace)
                while True:
                    start = self._store.next_sequence()
                    batch = await peer.checkpoints.remote(start, start + CATCH_UP_BATCH - 1)
                    if not batch:
                        break
                    for sequence, value, certificate in batch:
                        self._apply_certified(sequence, value, certificate)
            except (ValueError, ray.exceptions.RayActorError):
                continue  # that peer is down; try the next
            except (ProtocolError, InvalidCheckpoint):
                continue  # it served something that does not verify: nothing of it was applied

    def _rejoin_soon(self) -> None:
        if self._rejoining is None and self._store.next_sequence() != self._rejoined_at:
            self._rejoining = asyncio.get_running_loop().create_task(self._rejoin())

    async def _rejoin(self) -> None:
        """Peers are two or more heights ahead: the core alone would learn one height per round
        trip and never catch up. Pause it, fetch and verify the certified checkpoints in bulk,
        then run consensus again from the new height (with the committee of the new state)."""
        self._cancel_timers()
        if self._next_height is not None:
            self._next_height.cancel()
            self._next_height = None
        self._executed.clear()
        try:
            await self._catch_up()
        finally:
            self._rejoined_at = self._store.next_sequence()
            self._peers.clear()
            self._rejoining = None
            self._restart_core()

    def _apply_certified(self, sequence: int, value: bytes, certificate: bytes) -> None:
        """Verify a peer's checkpoint against our own committee and state, then commit it."""
        cert = decode(certificate, CommitCertificate)
        verify_checkpoint_chain(self._state.system().committee, [(value, cert)], sequence)
        checkpoint = decode(value, Checkpoint)
        changes, effects = self._execute(sequence, checkpoint)
        self._persist_and_apply(checkpoint, value, certificate, changes, effects)

    # ------------------------------------------------------------------ reads

    def status(self) -> dict:
        system = self._state.system()
        latest = self._store.latest_sequence()
        return {"index": self._index, "pid": os.getpid(), "epoch": system.epoch,
                "sequence": latest, "state_root": self._state.state_root().hex(),
                "mempool": len(self._mempool), "committed_transactions": self._committed_txs,
                "timestamp_ms": self._latest_timestamp_ms(), "evidence": self._store.evidence_count()}

    def evidence(self, from_index: int = 0, limit: int = 100) -> list[dict]:
        """Kept equivocations from `from_index` on, oldest first: dicts of `StoredEvidence`'s
        fields plus their `index` (decode `evidence` as the type named by `kind`)."""
        return [{"index": index, **msgspec.structs.asdict(decode(record, StoredEvidence))}
                for index, record in self._store.evidence(from_index, limit)]

    def get_account(self, address: bytes) -> bytes:
        return encode(self._state.account(address))

    def get_object(self, key: bytes) -> bytes | None:
        """Canonical bytes of the state entry `tag || id` (None when absent)."""
        return self._state.get_raw(key)

    def object_ids(self, tag: bytes) -> list[bytes]:
        """Ids of one state namespace (e.g. every target), ascending."""
        return self._state.ids(tag)

    def get_checkpoint(self, sequence: int | None = None) -> tuple[bytes, bytes] | None:
        """(checkpoint, certificate) at `sequence` (the latest when None); None when absent."""
        if sequence is None:
            sequence = self._store.latest_sequence()
        if sequence is None or sequence > (self._store.latest_sequence() or -1):
            return None
        return self._store.get_checkpoint(sequence)

    def system_state(self) -> bytes:
        return encode(self._state.system())


def _in_byte_order(evidence: Evidence) -> Evidence:
    """`evidence` with its two messages in canonical byte order: a replica that saw them the
    other way round (or again after a restart) reports the same equivocation."""
    first, second = sorted((evidence.first, evidence.second), key=encode)
    return type(evidence)(first=first, second=second)
