"""Checkpoints: execute an ordered list of entries and seal the result (spec §6).

An entry is the canonical bytes of a `SignedTransaction` or a `ChangeEpoch`. Every executor
re-checks admission, because a proposer may include anything; an entry that fails admission is
recorded with its error and changes nothing. Targets generated in a checkpoint are seeded from
`checkpoint_seed(previous_digest, sequence)`: known to no one before the previous checkpoint is
final, and different for every checkpoint.
"""
from __future__ import annotations

from typing import Container

from soma_ray.protocol.context import ExecutionContext
from soma_ray.protocol.encoding import (
    DOMAIN_CHECKPOINT, DOMAIN_EFFECTS, DOMAIN_TARGET_SEED, DOMAIN_TX, decode, digest, encode, u64_le,
)
from soma_ray.protocol.epoch import SYSTEM_SENDER, change_epoch
from soma_ray.protocol.errors import (
    DuplicateEpochChange, ProtocolError, TimestampOutOfRange, TimestampRegression,
)
from soma_ray.protocol.execution import (
    check_decoded_admission, check_size, execute_transaction, recorded_error, transaction_digest,
)
from soma_ray.protocol.state import State
from soma_ray.protocol.types import ChangeEpoch, Checkpoint, CheckpointEntry, TransactionEffects

GENESIS_PREVIOUS_DIGEST = bytes(32)
MAX_TIMESTAMP_MS = 2**63 - 1  # every timestamp must fit the signed 64-bit fields derived from it


def checkpoint_digest(checkpoint: Checkpoint) -> bytes:
    return digest(DOMAIN_CHECKPOINT, checkpoint)


def checkpoint_seed(previous_digest: bytes, sequence: int) -> bytes:
    return digest(DOMAIN_TARGET_SEED, previous_digest + u64_le(sequence))


def effects_digest(effects: list[TransactionEffects]) -> bytes:
    return digest(DOMAIN_EFFECTS, effects)


def failed_entry(raw: bytes, error: ProtocolError) -> TransactionEffects:
    return TransactionEffects(
        transaction_digest=digest(DOMAIN_TX, raw), sender=SYSTEM_SENDER, nonce=0, fee_charged=0,
        error=error.to_struct(),
    )


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


def execute_entry(state: State, raw: bytes, timestamp_ms: int, seed: bytes, checkpoint_epoch: int,
                  verified: Container[bytes] = ()) -> TransactionEffects:
    """Effects of one entry; every failure, even a bug's exception, becomes a typed error.
    `verified`: entry bytes whose signature the caller already checked (see check_admission).
    The SystemState is decoded here, once, from the state as earlier entries left it, and
    handed on to the fee charge, which updates it."""
    system = state.system()
    ctx = ExecutionContext(system.parameters, system.epoch, timestamp_ms, seed)
    try:
        entry = decode(raw, CheckpointEntry)
        if isinstance(entry, ChangeEpoch):
            return execute_change_epoch(state, entry, ctx, checkpoint_epoch)
        # check_admission's checks on the entry decoded above; unlike admission, an entry is
        # decoded before its size is checked, so which error a bad one records stays as it was.
        check_size(raw, ctx.params)
        tx_bytes = encode(entry.transaction)  # signed over and hashed: encoded once for both
        check_decoded_admission(raw, entry, state, ctx.params, verified, tx_bytes)
    except Exception as error:
        return failed_entry(raw, recorded_error(error))  # or re-raises it
    return execute_transaction(state, entry, ctx, transaction_digest(tx_bytes), system)


def build_checkpoint(
    state: State, previous: Checkpoint | None, transactions: list[bytes], timestamp_ms: int,
    verified: Container[bytes] = (),
) -> tuple[Checkpoint, list[TransactionEffects]]:
    """Execute `transactions` in order on `state` and return the sealed checkpoint and effects."""
    previous_digest = GENESIS_PREVIOUS_DIGEST if previous is None else checkpoint_digest(previous)
    sequence = 0 if previous is None else previous.sequence + 1
    if previous is not None and timestamp_ms < previous.timestamp_ms:
        raise TimestampRegression(previous_ms=previous.timestamp_ms, got_ms=timestamp_ms)
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise TimestampOutOfRange(timestamp_ms=timestamp_ms, max_ms=MAX_TIMESTAMP_MS)
    epoch = state.system().epoch
    seed = checkpoint_seed(previous_digest, sequence)
    effects = [execute_entry(state, raw, timestamp_ms, seed, epoch, verified)
               for raw in transactions]
    checkpoint = Checkpoint(
        epoch=epoch, sequence=sequence, previous_digest=previous_digest, timestamp_ms=timestamp_ms,
        transactions=list(transactions), effects_digest=effects_digest(effects), state_root=state.state_root(),
    )
    return checkpoint, effects
