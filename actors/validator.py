"""The validator actor: a thin shell wiring the pure parts to Ray, timers and LMDB.

- consensus: `soma_ray/consensus` (the core decides; this shell performs its outputs);
- execution: `soma_ray/node/executor.py` (trial builds, re-execution, catch-up verification);
- intake: `actors/intake.py` over `soma_ray/node/mempool.py` (admission, limits, TTL, waiters);
- transport: `actors/peers.py` (bytes to peers by name, gossip batching).

Every handler runs on the actor's one event loop, so no part is ever entered concurrently.

Durability: the safety state is written before any vote it allows is sent, and a decided
checkpoint with its certificate, effects and state changes is committed to LMDB in one
transaction before the next height starts, i.e. before this validator votes past it. Every
equivocation the core reports is kept in the store once (the core keeps only its latest 256).

Recovery: a restarted validator reloads state from its store; one that is behind (or lost its
disk) fetches certified checkpoints from peers, verifies each against the committee its own
state holds, re-executes it and checks the state root.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

from soma_ray import metrics
from actors.catch_up import catch_up
from soma_ray.handles import find_actor
from actors.intake import Intake
from actors.peers import Peers
from actors.validator_reads import ValidatorReads
from soma_ray.config import NetworkConfig
from soma_ray.consensus.core import ConsensusCore
from soma_ray.consensus.messages import (
    Broadcast, CertifiedValue, CommitCertificate, Decide, Evidence, EvidenceFound, FallenBehind,
    Message, PeerBehind, PersistSafetyState, Send, SetTimer,
)
from soma_ray.node.evidence import evidence_record
from soma_ray.node.executor import Executed, Executor
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.genesis import genesis
from soma_ray.protocol.state import State
from soma_ray.protocol.types import ChangeEpoch, Checkpoint
from soma_ray.storage import ValidatorStore

# An idle network still cuts a checkpoint this often, so the consensus clock (and with it the
# epoch clock) advances without traffic.
IDLE_CHECKPOINT_INTERVAL_S = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class ValidatorActor(ValidatorReads):
    def __init__(self, config: dict, index: int):
        self._network = NetworkConfig(**config)
        self._index = index
        self._keypair = self._network.validator_keypair(index)
        initial = genesis(self._network.genesis_config())
        root = initial.state_root()
        self._store = ValidatorStore(self._network.validator_dir(index) / "db", genesis_digest=root)
        self._store.write_genesis(root, initial.items())
        latest = self._store.latest_sequence()
        self._state = State.from_items(self._store.state_items())
        self._peers = Peers(self._network)
        self._metric_tags = metrics.validator_tags(self._network, index)
        self._intake = Intake(self._network, self._state, self._peers, self._metric_tags)
        self._executor = Executor(self._state, None if latest is None else decode(
            self._store.get_checkpoint(latest)[0], Checkpoint), self._intake.mempool.verified)
        self._committed = asyncio.Event()  # set (and replaced) at every commit: feed readers wait
        self._requested_epoch: int | None = None
        self._clock = None  # the epoch clock's handle
        self._timers: dict[tuple, asyncio.TimerHandle] = {}
        self._core: ConsensusCore | None = None
        self._next_height: asyncio.TimerHandle | None = None
        self._starting = asyncio.Lock()
        self._rejoining: asyncio.Task | None = None  # catching up after falling behind
        # The height a rejoin last reached: a member's far-ahead message at that same height
        # again (a Byzantine one may sign any height) does not pause the core a second time.
        self._rejoined_at = -1
        self._committed_txs = 0
        self._past_stats: Counter[str] = Counter()  # the counters of the cores replaced so far

    # ------------------------------------------------------------------ lifecycle

    def ready(self) -> bool:
        return True

    async def start_consensus(self) -> None:
        """Catch up with the peers, then join consensus at the next height (idempotent).

        The launcher calls it; after Ray restarts a crashed validator, the first peer message
        or client call does."""
        async with self._starting:
            if self._core is None:
                await self._catch_up()
                self._restart_core()

    def _restart_core(self, new_committee: bool = False) -> None:
        """A new core at the next height to decide: resuming from the safety state on disk and
        starting that height now, or, when an epoch change brought a new committee, fresh (the
        next height starts on schedule)."""
        system = self._state.system()
        committee = system.committee
        safety_state = None if new_committee else self._store.safety_state()
        if self._core is not None:  # its counters live on in status()
            self._past_stats.update(self._core.stats)
        self._core = ConsensusCore(committee, self._keypair, self, self._store.next_sequence(),
                                   chain_id=system.chain_id, safety_state=safety_state)
        self._peers.follow(committee, self._core.index)
        if not new_committee:
            self._perform(self._core.start_height())

    # ------------------------------------------------------------------ consensus transport

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
                key = (output.height, output.round, output.step)
                self._timers[key] = asyncio.get_running_loop().call_later(
                    output.duration_ms / 1000, self._fire_timer, key)
            elif isinstance(output, Decide):
                self._commit(output.height, output.value, output.certificate)
            elif isinstance(output, PeerBehind):
                checkpoint, certificate = self._store.get_checkpoint(output.height)
                self._send(output.peer, encode(CertifiedValue(checkpoint, decode(certificate, CommitCertificate))))
            elif isinstance(output, FallenBehind):
                self._rejoin_soon()
            elif isinstance(output, EvidenceFound):
                self._keep_evidence(output.evidence)

    def _keep_evidence(self, evidence: Evidence) -> None:
        """Durably keep an equivocation; one reported again (in either order) is kept once."""
        self._store.add_evidence(*evidence_record(evidence, self._state.system().epoch))

    def _other_members(self) -> list[int]:
        return self._peers.others()

    def _broadcast(self, message: bytes) -> None:
        for member in self._other_members():
            self._send(member, message)

    def _send(self, member: int, message: bytes) -> None:
        self._peers.send(member, message)

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire_timer(self, key: tuple) -> None:
        # A timeout means a peer may be missing: look the handles up afresh.
        self._peers.forget()
        self._timers.pop(key, None)
        if self._rejoining is None:
            self._perform(self._core.on_timeout(*key))

    # ------------------------------------------------------------------ the application (the core calls these)

    def propose(self, height: int) -> bytes:
        """This node leads `height`: a checkpoint of the mempool's next transactions, less those
        that cannot execute (their submitters are told; a later nonce waits)."""
        now_ms = _now_ms()
        value, left_out = self._executor.propose(
            self._next_entries(max(now_ms, self._executor.latest_timestamp_ms)), now_ms)
        self._intake.left_out(left_out)
        return value

    def validate(self, height: int, value: bytes) -> bool:
        return self._executor.validate(height, value, _now_ms())

    def _next_entries(self, timestamp_ms: int) -> list:
        """Mempool transactions in nonce order per sender, then a requested ChangeEpoch."""
        entries = self._intake.ready()
        if self._requested_epoch_due():
            entries.append(encode(ChangeEpoch(epoch=self._state.system().epoch + 1, timestamp_ms=timestamp_ms)))
        return entries

    def _requested_epoch_due(self) -> bool:
        return self._requested_epoch == self._state.system().epoch + 1

    # ------------------------------------------------------------------ committing

    def _commit(self, height: int, value: bytes, certificate: CommitCertificate) -> None:
        """Apply a decided checkpoint, make it durable, then start the next height."""
        epoch_before = self._state.system().epoch
        self._persist_and_apply(self._executor.decided(height, value), value, encode(certificate))
        self._cancel_timers()
        if self._state.system().epoch != epoch_before:  # a new committee runs the next heights
            self._restart_core(new_committee=True)
        self._report_to_clock()
        busy = self._requested_epoch_due() or self._intake.ready(1)
        self._next_height = asyncio.get_running_loop().call_later(
            0.0 if busy else IDLE_CHECKPOINT_INTERVAL_S, self._start_height)

    def _persist_and_apply(self, executed: Executed, value: bytes, certificate: bytes) -> None:
        """Durably store a certified checkpoint with its effects and state changes, then apply
        them here and answer the submitters."""
        checkpoint = executed.checkpoint
        self._store.commit_checkpoint(checkpoint.sequence, value, certificate, executed.changes,
                                      epoch=checkpoint.epoch, effects=encode(executed.effects))
        self._executor.apply(executed)
        self._intake.committed(checkpoint.sequence, executed.effects)
        self._committed_txs += len(executed.effects)
        metrics.CHECKPOINTS.record(1, self._metric_tags)
        metrics.FINALIZED_TRANSACTIONS.record(len(executed.effects), self._metric_tags)
        self._intake.record_mempool_size()
        self._committed.set()
        self._committed = asyncio.Event()

    def _start_height(self) -> None:
        if self._next_height is not None and self._rejoining is None:
            self._next_height.cancel()
            self._next_height = None
            self._perform(self._core.start_height())

    def _report_to_clock(self) -> None:
        # Looked up once (a name lookup is a blocking call to Ray's GCS), again while it is down.
        if self._clock is None:
            self._clock = find_actor(self._network.clock_name, self._network.namespace)
        if self._clock is not None:
            system = self._state.system()
            self._clock.observe_checkpoint.remote(system.epoch, system.epoch_start_timestamp_ms,
                                                  self._executor.latest_timestamp_ms)

    async def request_epoch_change(self, epoch: int) -> None:
        self._requested_epoch = epoch
        self._start_height()

    # ------------------------------------------------------------------ clients

    async def submit(self, data: bytes) -> SubmitReply:
        """Admit a signed transaction, share it with the peers, and wait for its certified
        effects; refused at admission (nothing of it kept) or dropped unexecuted after
        `mempool_ttl_s`, the reply's `error` says why."""
        return (await self.submit_batch([data]))[0]

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        """`submit` for many transactions: each is admitted on its own, all are shared with the
        peers in one call each, and the replies (in `batch` order) come once all are final."""
        await self.start_consensus()
        outcomes = [self._intake.admit_and_share(bytes(data)) for data in batch]
        self._intake.record_mempool_size()
        self._start_height()  # after the waiters exist: a lone validator decides at once
        return [outcome if isinstance(outcome, SubmitReply) else await outcome for outcome in outcomes]

    async def add_transactions(self, batch: list[bytes]) -> None:
        """Transactions a peer admitted: admit each here too so any leader can order them. One
        this validator refuses (its own limits included) is dropped here only."""
        for data in batch:
            try:
                self._intake.admit(bytes(data))
            except ProtocolError:
                continue
        self._intake.record_mempool_size()
        self._start_height()

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        """Localnet faucet: a Faucet transaction signed by this validator's key (the coins come
        from the emission pool)."""
        await self.start_consensus()
        outcome = self._intake.faucet(self._keypair, recipient, amount)
        self._start_height()
        return outcome if isinstance(outcome, SubmitReply) else await outcome

    # ------------------------------------------------------------------ catch-up

    async def _catch_up(self) -> None:
        """Fetch, verify and apply what the peers committed beyond this replica's disk."""
        await catch_up(self._peers.every_other(self._network.validator_name(self._index)),
                       self._store.next_sequence, self._apply_certified)

    def _apply_certified(self, sequence: int, value: bytes, certificate: bytes) -> None:
        self._persist_and_apply(self._executor.certified(sequence, value, certificate), value, certificate)

    def _rejoin_soon(self) -> None:
        if self._rejoining is None and self._store.next_sequence() != self._rejoined_at:
            self._rejoining = asyncio.get_running_loop().create_task(self._rejoin())

    async def _rejoin(self) -> None:
        """Peers are two or more heights ahead: the core alone would learn one height per round
        trip and never catch up. Pause it, fetch the certified checkpoints in bulk, then run
        consensus again from the new height (with the committee of the new state)."""
        self._cancel_timers()
        if self._next_height is not None:
            self._next_height.cancel()
            self._next_height = None
        self._executor.forget_trials()
        try:
            await self._catch_up()
        finally:
            self._rejoined_at = self._store.next_sequence()
            self._rejoining = None
            self._restart_core()

    # ------------------------------------------------------------------ reads

    def status(self) -> ValidatorStatus:
        core = None if self._rejoining else self._core  # a rejoining core is being replaced
        return ValidatorStatus(
            index=self._index, pid=os.getpid(), epoch=self._state.system().epoch,
            sequence=self._store.latest_sequence(), state_root=self._state.state_root().hex(),
            mempool=len(self._intake.mempool), committed_transactions=self._committed_txs,
            timestamp_ms=self._executor.latest_timestamp_ms, evidence=self._store.evidence_count(),
            height=None if core is None else core.height, round=None if core is None else core.round,
            committee_index=None if self._core is None else self._core.index,
            consensus=dict(self._past_stats + (Counter() if self._core is None else self._core.stats)))

    def pooled_nonces(self, sender: bytes) -> list[int]:
        """Nonces of `sender`'s pooled transactions, ascending. A public read that production
        does not call: tests/e2e/test_mempool_ttl.py watches a pool with it."""
        return self._intake.mempool.nonces_of(sender)
