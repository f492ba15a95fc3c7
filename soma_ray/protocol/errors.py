"""Typed errors of spec §8.

Every failure is a `ProtocolError` subclass with named fields carrying the numbers that explain it,
a stable `code` (the class name) and a `message` in plain words. `to_struct()` turns it into an
`ExecutionError` that is stored in transaction effects (fields as sorted pairs, no dicts).
"""
from __future__ import annotations

from typing import Any

import msgspec

FieldValue = int | str | bytes | bool | None


class ExecutionError(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    code: str
    # Any, not FieldValue: msgspec cannot decode a union of str and bytes, while msgpack keeps
    # str and bin apart, so values decode back to exactly what was encoded.
    fields: list[tuple[str, Any]]


class ProtocolError(Exception):
    """Base of every typed protocol error. Subclasses set `fields` and `template`."""

    fields: tuple[str, ...] = ()
    template: str = "protocol error"

    def __init__(self, *args: FieldValue, **kwargs: FieldValue) -> None:
        if len(args) > len(self.fields):
            raise TypeError(f"{type(self).__name__} takes fields {self.fields}, got {args!r}")
        values = dict(zip(self.fields, args))
        values.update(kwargs)
        missing = [name for name in self.fields if name not in values]
        unknown = [name for name in values if name not in self.fields]
        if missing or unknown:
            raise TypeError(f"{type(self).__name__}: missing {missing}, unknown {unknown}")
        for name, value in values.items():
            setattr(self, name, value)
        super().__init__(self.message)

    @property
    def code(self) -> str:
        return type(self).__name__

    @property
    def message(self) -> str:
        shown = {name: _show(getattr(self, name)) for name in self.fields}
        return self.template.format(**shown)

    def values(self) -> dict[str, FieldValue]:
        return {name: getattr(self, name) for name in self.fields}

    def to_struct(self) -> ExecutionError:
        return ExecutionError(code=self.code, fields=sorted(self.values().items()))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values() == self.values()

    def __hash__(self) -> int:
        return hash((self.code, tuple(sorted(self.values().items()))))


def error_from_struct(error: ExecutionError) -> ProtocolError:
    """The typed error an `ExecutionError` in effects stands for (for clients and the CLI).

    Looks up every loaded `ProtocolError` subclass by code, including those defined next to the
    rules that raise them; a code this process does not know becomes `UnknownProtocolError`.
    """
    values = dict(error.fields)
    for cls in _subclasses(ProtocolError):
        if cls.__name__ == error.code and set(cls.fields) == set(values):
            return cls(**values)
    return UnknownProtocolError(error_code=error.code, detail=repr(sorted(values.items())))


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _show(value: FieldValue) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def _error(name: str, fields: tuple[str, ...], template: str) -> type[ProtocolError]:
    return type(name, (ProtocolError,), {"fields": fields, "template": template})


UnknownProtocolError = _error("UnknownProtocolError", ("error_code", "detail"), "error {error_code}: {detail}")

# Admission and transaction envelope.
MalformedInput = _error("MalformedInput", ("reason",), "malformed input: {reason}")
NonCanonicalEncoding = _error(
    "NonCanonicalEncoding", (), "the transaction bytes are not in canonical encoding"
)
TransactionTooLarge = _error(
    "TransactionTooLarge", ("size", "max"), "transaction is {size} bytes, the limit is {max}"
)
InvalidSignature = _error("InvalidSignature", ("reason",), "invalid signature: {reason}")
MempoolFull = _error(
    "MempoolFull", ("capacity",),
    "the validator's mempool holds its limit of {capacity} transactions: nothing was admitted, resubmit later",
)
SenderPoolFull = _error(
    "SenderPoolFull", ("sender_pending", "limit"),
    "the sender already has {sender_pending} transactions waiting in this validator's mempool, the limit"
    " per sender is {limit}: nothing was admitted, resubmit once some of them have committed",
)
NonceTooFarAhead = _error(
    "NonceTooFarAhead", ("account_nonce", "max", "got"),
    "nonce {got} is too far ahead: the account is at nonce {account_nonce} and a validator pools nonces"
    " up to {max} only; submit the missing earlier nonces first, then resubmit this one",
)
TransactionExpired = _error(
    "TransactionExpired", ("ttl_s",),
    "the transaction waited {ttl_s} s in the validator's mempool without being committed (an earlier"
    " nonce of the sender missing, or no quorum) and was dropped there: submit the missing earlier"
    " nonces first, or resubmit it",
)
BadNonce = _error("BadNonce", ("expected", "got"), "nonce {got} is wrong, the account expects {expected}")
InsufficientFee = _error(
    "InsufficientFee", ("required", "available"),
    "the fee is {required} shannons but only {available} are available (balance or max_fee)",
)
InsufficientBalance = _error(
    "InsufficientBalance", ("required", "available"),
    "needs {required} shannons, the account has {available}",
)
InvalidAmount = _error("InvalidAmount", ("amount",), "amount {amount} must be a positive integer")
InvalidAddress = _error("InvalidAddress", ("field", "length"), "{field} is {length} bytes, an address is 32")
FaucetDisabled = _error("FaucetDisabled", (), "the faucet is off unless the genesis enables it (localnet)")
FaucetLimitExceeded = _error(
    "FaucetLimitExceeded", ("amount", "max"), "the faucet pays at most {max} shannons per transaction, not {amount}"
)
ObjectNotFound = _error("ObjectNotFound", ("kind", "id"), "no {kind} with id {id}")
NotOwner = _error("NotOwner", ("owner", "sender"), "only the owner {owner} may do this, not {sender}")

# Validators and staking.
NotAValidator = _error("NotAValidator", ("address",), "{address} is not an active validator")
AlreadyValidator = _error("AlreadyValidator", ("address",), "{address} is already a validator")
InvalidProofOfPossession = _error(
    "InvalidProofOfPossession", ("reason",), "invalid proof of possession: {reason}"
)
LastValidator = _error(
    "LastValidator", ("remaining",), "cannot remove: only {remaining} validator(s) would remain"
)
CommissionTooHigh = _error(
    "CommissionTooHigh", ("bps", "max"), "commission {bps} bps is above the maximum {max} bps"
)
StakeLocked = _error(
    "StakeLocked", ("model_id", "status"),
    "the owner's stake in model {model_id} ({status}) is locked until the epoch change after deactivation",
)
WithdrawalPending = _error(
    "WithdrawalPending", ("staked_id",), "staked {staked_id} is already queued to withdraw at the epoch change"
)
StakeTooSmall = _error(
    "StakeTooSmall", ("amount", "minimum"), "a stake of {amount} would mint no pool tokens; stake at least {minimum}"
)
PoolInactive = _error("PoolInactive", ("pool_id",), "staking pool {pool_id} no longer accepts stake")

# Models.
StakeBelowMinimum = _error(
    "StakeBelowMinimum", ("required", "provided"), "stake {provided} is below the minimum {required}"
)
ArchitectureMismatch = _error(
    "ArchitectureMismatch", ("expected", "got"), "architecture version {got}, the network runs {expected}"
)
InvalidModelStatus = _error(
    "InvalidModelStatus", ("status", "expected"), "model is {status}, this needs {expected}"
)
ModelRevealEpochMismatch = _error(
    "ModelRevealEpochMismatch", ("commit_epoch", "current_epoch"),
    "reveal allowed only in epoch commit_epoch + 1 (committed in {commit_epoch}, now {current_epoch})",
)
CommitmentMismatch = _error("CommitmentMismatch", ("field",), "the revealed {field} does not match its commitment")
EmbeddingDimensionMismatch = _error(
    "EmbeddingDimensionMismatch", ("expected", "got"), "embedding has {got} dimensions, expected {expected}"
)
NonFiniteEmbedding = _error("NonFiniteEmbedding", ("index",), "embedding value at index {index} is not finite")
DataTooLarge = _error("DataTooLarge", ("size", "max"), "size {size} bytes exceeds the limit {max}")
AlreadyReported = _error("AlreadyReported", ("reporter",), "{reporter} has already reported this model")
NotReported = _error("NotReported", ("reporter",), "{reporter} has not reported this model")

# Targets, submissions, challenges, claims (used by targets.py / submissions.py).
TargetNotOpen = _error("TargetNotOpen", ("status",), "the target is {status}, not Open")
TargetExpired = _error(
    "TargetExpired", ("generation_epoch", "current_epoch"),
    "the target was generated in epoch {generation_epoch} and expired (now {current_epoch})",
)
RevealWindowExpired = _error(
    "RevealWindowExpired", ("deadline_ms", "now_ms"), "the reveal window closed at {deadline_ms} ms (now {now_ms} ms)"
)
ModelNotInTarget = _error("ModelNotInTarget", ("model_id",), "model {model_id} is not one of the target's models")
ModelNotActive = _error("ModelNotActive", ("model_id",), "model {model_id} is not Active")
DistanceExceedsThreshold = _error(
    "DistanceExceedsThreshold", ("distance", "threshold"),
    "distance {distance} exceeds the threshold {threshold} (fixed point, 1e-9 units)",
)
InsufficientBond = _error(
    "InsufficientBond", ("required", "provided"), "bond {provided} is below the required {required}"
)
ChallengeWindowClosed = _error(
    "ChallengeWindowClosed", ("fill_epoch", "current_epoch"),
    "challenges close after epoch fill_epoch + 1 (filled in {fill_epoch}, now {current_epoch})",
)
ChallengeAlreadyOpen = _error("ChallengeAlreadyOpen", ("challenge_id",), "challenge {challenge_id} is already open")
InvalidCertificate = _error("InvalidCertificate", ("reason",), "invalid certificate: {reason}")
AuditWindowOpen = _error(
    "AuditWindowOpen", ("claimable_epoch", "current_epoch"),
    "rewards can be claimed from epoch {claimable_epoch} (now {current_epoch})",
)
EpochMismatch = _error("EpochMismatch", ("expected", "got"), "the next epoch is {expected}, not {got}")
TimestampRegression = _error(
    "TimestampRegression", ("previous_ms", "got_ms"), "timestamp {got_ms} ms is before {previous_ms} ms"
)
TimestampOutOfRange = _error(
    "TimestampOutOfRange", ("timestamp_ms", "max_ms"), "timestamp {timestamp_ms} ms is outside 0..{max_ms} ms"
)
EpochChangeNotDue = _error(
    "EpochChangeNotDue", ("due_at_ms", "timestamp_ms"),
    "the epoch ends at {due_at_ms} ms, the checkpoint is at {timestamp_ms} ms",
)
EpochChangeTimestampMismatch = _error(
    "EpochChangeTimestampMismatch", ("checkpoint_ms", "got_ms"),
    "ChangeEpoch carries {got_ms} ms, its checkpoint is at {checkpoint_ms} ms",
)
DuplicateEpochChange = _error(
    "DuplicateEpochChange", ("epoch",), "this checkpoint already changed the epoch (to {epoch})"
)
InternalError = _error("InternalError", ("reason",), "internal error: {reason}")
