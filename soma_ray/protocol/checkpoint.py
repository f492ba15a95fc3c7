"""Checkpoints: execute an ordered list of entries and seal the result (spec §6).

An entry is the canonical bytes of a `SignedTransaction` or a `ChangeEpoch`. Consensus rule
(issue 18): every entry of a checkpoint executes — a transaction passes the envelope checks
(`execution.check_envelope`: a proposer may include anything, so every executor checks them
again), takes its sender's nonce and pays its fee (its kind may still fail, after the fee);
a ChangeEpoch changes the epoch. And the signed transactions take at most
`Parameters.max_checkpoint_bytes`. So a transaction that cannot pay never costs a checkpoint
anything, and no bytes are included twice (a second copy finds its nonce taken).

- `build_checkpoint` is the rule: validators re-execute a proposal with it, followers a
  certified checkpoint; an entry that breaks it raises `UnexecutableEntry` (or
  `CheckpointTooLarge`), with the state partly changed (callers run it in a savepoint).
- `propose_checkpoint` is the proposer's build: it leaves out every candidate that would break
  it and says why (`LeftOut`): a later nonce or a full checkpoint may still execute later
  (`retry`), the rest never will (its submitters are told).

Targets generated in a checkpoint are seeded from `checkpoint_seed(previous_digest, sequence)`:
known to no one before the previous checkpoint is final, and different for every checkpoint.
"""
from __future__ import annotations

from typing import Container, Iterator, NamedTuple, Sequence

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.encoding import (
    DOMAIN_CHECKPOINT, DOMAIN_EFFECTS, DOMAIN_TARGET_SEED, decode, digest, encode, u64_le,
)
from soma_ray.protocol.epoch import change_epoch
from soma_ray.protocol.errors import (
    BadNonce, CheckpointTooLarge, DuplicateEpochChange, ProtocolError, TimestampOutOfRange,
    TimestampRegression, UnexecutableEntry,
)
from soma_ray.protocol.execution import (
    check_decoded_admission, check_size, execute_transaction, recorded_error, transaction_digest,
)
from soma_ray.protocol.state import State
from soma_ray.protocol.types import (
    ChangeEpoch, Checkpoint, CheckpointEntry, SignedTransaction, Transaction, TransactionEffects,
)

GENESIS_PREVIOUS_DIGEST = bytes(32)
MAX_TIMESTAMP_MS = 2**63 - 1  # every timestamp must fit the signed 64-bit fields derived from it


def checkpoint_digest(checkpoint: Checkpoint) -> bytes:
    return digest(DOMAIN_CHECKPOINT, checkpoint)


def executed_transactions(checkpoint: Checkpoint, effects: Sequence[TransactionEffects]
                          ) -> Iterator[tuple[Transaction, TransactionEffects]]:
    """The signed transactions of a certified checkpoint that executed without error, in order,
    each with its effects (what a reader of the feed counts: a failed kind changed nothing but
    its fee)."""
    for raw, effect in zip(checkpoint.transactions, effects):
        if effect.error is None:
            entry = decode(raw, CheckpointEntry)
            if isinstance(entry, SignedTransaction):
                yield entry.transaction, effect


def checkpoint_seed(previous_digest: bytes, sequence: int) -> bytes:
    return digest(DOMAIN_TARGET_SEED, previous_digest + u64_le(sequence))


def effects_digest(effects: list[TransactionEffects]) -> bytes:
    return digest(DOMAIN_EFFECTS, effects)


class LeftOut(NamedTuple):
    """A candidate entry the proposer left out of its checkpoint, and why."""

    entry: bytes
    error: ProtocolError
    tx_digest: bytes | None  # a transaction's digest (what its submitters wait on); else None
    retry: bool  # it may execute later (a nonce ahead of the account's, or no room left)


class Proposed(NamedTuple):
    checkpoint: Checkpoint
    effects: list[TransactionEffects]
    left_out: list[LeftOut]


class _Unexecutable(Exception):
    """An entry that cannot be in a checkpoint: the error, and the transaction's digest if any."""

    def __init__(self, error: ProtocolError, tx_digest: bytes | None, retry: bool = False) -> None:
        super().__init__(error)
        self.error, self.tx_digest, self.retry = error, tx_digest, retry


def execute_change_epoch(
    state: State, entry: ChangeEpoch, ctx: ExecutionContext, checkpoint_epoch: int
) -> TransactionEffects:
    """Run ChangeEpoch all or nothing; at most one per checkpoint (only it moves the epoch)."""
    if ctx.epoch != checkpoint_epoch:
        raise DuplicateEpochChange(epoch=ctx.epoch)
    state.begin()
    try:
        effects = change_epoch(state, entry.epoch, entry.timestamp_ms, ctx)
    except BaseException:
        state.rollback()
        raise
    state.commit()
    return effects


class _Build:
    """Executes entries in order for one checkpoint; keeps the byte count of its transactions."""

    def __init__(self, state: State, previous: Checkpoint | None, timestamp_ms: int,
                 verified: Container[bytes]) -> None:
        self.previous_digest = GENESIS_PREVIOUS_DIGEST if previous is None else checkpoint_digest(previous)
        self.sequence = 0 if previous is None else previous.sequence + 1
        if previous is not None and timestamp_ms < previous.timestamp_ms:
            raise TimestampRegression(previous_ms=previous.timestamp_ms, got_ms=timestamp_ms)
        if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
            raise TimestampOutOfRange(timestamp_ms=timestamp_ms, max_ms=MAX_TIMESTAMP_MS)
        self.state, self.timestamp_ms, self.verified = state, timestamp_ms, verified
        self.epoch = state.system().epoch
        self.seed = checkpoint_seed(self.previous_digest, self.sequence)
        self.entries: list[bytes] = []
        self.effects: list[TransactionEffects] = []
        self.transaction_bytes = 0

    def add(self, raw: bytes) -> None:
        """Execute `raw` next and keep it; raises _Unexecutable, changing nothing, when it
        cannot be in this checkpoint."""
        raw = bytes(raw)
        state = self.state
        system = state.system()  # decoded once per entry, as earlier entries left it
        ctx = ExecutionContext(system.parameters, system.epoch, self.timestamp_ms, self.seed)
        tx_digest = None
        try:
            entry = decode(raw, CheckpointEntry)
            if isinstance(entry, ChangeEpoch):
                effects = execute_change_epoch(state, entry, ctx, self.epoch)
            else:
                # The envelope checks on the entry decoded above, then the fee and nonce.
                check_size(raw, ctx.params)
                tx_bytes = encode(entry.transaction)  # signed over and hashed: encoded once for both
                tx_digest = transaction_digest(tx_bytes)
                size = self.transaction_bytes + len(raw)
                if size > ctx.params.max_checkpoint_bytes:
                    raise _Unexecutable(CheckpointTooLarge(size=size, max=ctx.params.max_checkpoint_bytes),
                                        tx_digest, retry=True)
                check_decoded_admission(raw, entry, state, ctx.params, system.chain_id, self.verified, tx_bytes)
                effects = execute_transaction(state, entry, ctx, tx_digest, system)
                self.transaction_bytes = size
        except _Unexecutable:
            raise
        except Exception as error:
            error = recorded_error(error)  # a bug's exception is InternalError (or re-raised)
            ahead = isinstance(error, BadNonce) and error.got > error.expected
            raise _Unexecutable(error, tx_digest, retry=ahead) from None
        self.entries.append(raw)
        self.effects.append(effects)

    def seal(self) -> Checkpoint:
        return Checkpoint(
            epoch=self.epoch, sequence=self.sequence, previous_digest=self.previous_digest,
            timestamp_ms=self.timestamp_ms, transactions=self.entries,
            effects_digest=effects_digest(self.effects), state_root=self.state.state_root(),
        )


def build_checkpoint(
    state: State, previous: Checkpoint | None, transactions: list[bytes], timestamp_ms: int,
    verified: Container[bytes] = (),
) -> tuple[Checkpoint, list[TransactionEffects]]:
    """Execute `transactions` in order on `state` and return the sealed checkpoint and effects.

    The consensus rule: raises `UnexecutableEntry{index, error, reason}` at the first entry that
    cannot execute (`CheckpointTooLarge` past the byte cap), leaving `state` changed by the
    entries before it. `verified`: entry bytes whose signatures the caller already checked."""
    build = _Build(state, previous, timestamp_ms, verified)
    for index, raw in enumerate(transactions):
        try:
            build.add(raw)
        except _Unexecutable as failed:
            if isinstance(failed.error, CheckpointTooLarge):
                raise failed.error from None
            raise UnexecutableEntry(index=index, error=failed.error.code, reason=failed.error.message) from None
    return build.seal(), build.effects


def propose_checkpoint(
    state: State, previous: Checkpoint | None, candidates: list[bytes], timestamp_ms: int,
    verified: Container[bytes] = (),
) -> Proposed:
    """The proposer's build: `candidates` executed in order on `state`, each that cannot execute
    where it stands left out (changing nothing) and listed with its error, so the checkpoint
    obeys `build_checkpoint`'s rule. Its transactions fill up to max_checkpoint_bytes; one that
    does not fit is left out to retry."""
    build = _Build(state, previous, timestamp_ms, verified)
    left_out: list[LeftOut] = []
    for raw in candidates:
        try:
            build.add(raw)
        except _Unexecutable as failed:
            left_out.append(LeftOut(bytes(raw), failed.error, failed.tx_digest, failed.retry))
    return Proposed(build.seal(), build.effects, left_out)
