"""Typed errors of spec §8, and the one registry that decodes them.

Every failure that can reach a client or another participant is a `ProtocolError` subclass with
named fields carrying the numbers that explain it, a stable `code` (the class name) and a
`message` in plain words. `to_struct()` turns it into an `ExecutionError` that is stored in
transaction effects (fields as sorted pairs, no dicts) or sent as a validator's refusal, and
`error_from_struct` turns such a struct back into the typed error.

The registry is explicit and lives here: every error class that can reach another process is
registered by code, and decoding never depends on which other modules a process imported.
Protocol errors (the rules', the consensus core's, a validator's mempool refusals) are defined
in this module and registered by `_error` or `@register`; the modules that raise them re-export
them (`targets.ZeroEmbedding` is `errors.ZeroEmbedding`). The services' errors (the gateway's,
the blob store's, the scoring service's, downloads') are defined here too. A code taken twice is
a TypeError. To add an error: define it below, never anywhere else, since a client that does not
import that other module could not decode it (tests/unit/protocol/test_error_registry.py fails
on any `ProtocolError` subclass defined outside this module).

Errors that never leave the process that raises them keep their own bases and are not in the
registry: `soma_ray.storage.errors.StorageError` (a validator's own disk; its fields are paths
and lengths that mean nothing to a peer) and `soma_ray.model.errors.ModelError` (a weights file
or decryption key the caller holds; fields like tensor shapes that `ExecutionError` cannot
carry). A rule that refuses a transaction because of them raises a `ProtocolError` instead.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, TypeVar

import msgspec

FieldValue = int | str | bytes | bool | None


class ExecutionError(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    code: str
    # Any, not FieldValue: msgspec cannot decode a union of str and bytes, while msgpack keeps
    # str and bin apart, so values decode back to exactly what was encoded (ints, str, bytes,
    # bool, None; `decode(data, TransactionEffects)` builds this struct like any other).
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
        """The registered class's name: an error Ray re-raised is an instance of a class it made
        on top (`RayTaskError(Code)`), which must still encode as `Code`."""
        for cls in type(self).__mro__:
            if registry().get(cls.__name__) is cls:
                return cls.__name__
        return type(self).__name__

    @property
    def message(self) -> str:
        shown = {name: _show(getattr(self, name)) for name in self.fields}
        return self.template.format(**shown)

    def values(self) -> dict[str, FieldValue]:
        return {name: getattr(self, name) for name in self.fields}

    def to_struct(self) -> ExecutionError:
        return ExecutionError(code=self.code, fields=sorted(self.values().items()))

    def __reduce__(self):
        # Rebuilt from its fields: Exception's default would pass the message as the first field.
        return _rebuild, (type(self), self.values())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values() == self.values()

    def __hash__(self) -> int:
        return hash((self.code, tuple(sorted(self.values().items()))))


_P = TypeVar("_P", bound=ProtocolError)

_registry: dict[str, type[ProtocolError]] = {}


def register(cls: type[_P]) -> type[_P]:
    """Add `cls` to the registry under its code (its name); a code already taken is a TypeError.

    For this module only: a class registered from any other module would decode only where that
    module was imported.
    """
    if not (isinstance(cls, type) and issubclass(cls, ProtocolError)):
        raise TypeError(f"only ProtocolError subclasses are registered, not {cls!r}")
    taken = _registry.get(cls.__name__)
    if taken is not None and taken is not cls:
        raise TypeError(
            f"error code {cls.__name__} is taken by {taken.__module__}.{taken.__qualname__}"
        )
    _registry[cls.__name__] = cls
    return cls


def registry() -> Mapping[str, type[ProtocolError]]:
    """Every registered error class by code (read-only)."""
    return MappingProxyType(_registry)


def error_from_struct(error: ExecutionError) -> ProtocolError:
    """The typed error an `ExecutionError` (from effects or a refusal) stands for.

    Looked up by code in the registry; a code this version does not know, or a field set other
    than that code's, becomes `UnknownProtocolError` with the details.
    """
    values = dict(error.fields)
    cls = registry().get(error.code)
    if cls is not None and set(cls.fields) == set(values):
        return cls(**values)
    return UnknownProtocolError(error_code=error.code, detail=repr(sorted(values.items())))


def _rebuild(cls: type[ProtocolError], values: dict[str, FieldValue]) -> ProtocolError:
    return cls(**values)


def _show(value: FieldValue) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def _error(
    name: str, fields: tuple[str, ...], template: str, base: type[ProtocolError] = ProtocolError
) -> type[ProtocolError]:
    return register(type(name, (base,), {"fields": fields, "template": template}))


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
# A validator's mempool refusal.
NonceAlreadyPooled = _error(
    "NonceAlreadyPooled", ("nonce",),
    "a transaction with nonce {nonce} from this sender is already pooled; wait for it or let it expire",
)
BadNonce = _error("BadNonce", ("expected", "got"), "nonce {got} is wrong, the account expects {expected}")
InsufficientFee = _error(
    "InsufficientFee", ("required", "available"),
    "the fee is {required} shannons but only {available} are available (balance or max_fee)",
)
# Fee solvency at admission (a transaction that cannot pay its fee costs the network nothing
# beyond its signature check, and never enters a checkpoint).
FeeBelowBaseFee = _error(
    "FeeBelowBaseFee", ("max_fee", "base_fee"),
    "max_fee {max_fee} is below the base fee of {base_fee} shannons: the transaction could never pay its fee",
)
InsufficientBalanceForFees = _error(
    "InsufficientBalanceForFees", ("required", "available", "pooled"),
    "the sender's balance of {available} shannons cannot pay the fees of its {pooled} pooled"
    " transaction(s) and this one ({required} shannons): fund the account first",
)
MempoolBytesFull = _error(
    "MempoolBytesFull", ("size", "pooled_bytes", "limit"),
    "the validator's mempool holds {pooled_bytes} bytes, a transaction of {size} bytes would pass its limit"
    " of {limit}: nothing was admitted, resubmit later",
)
SenderBytesFull = _error(
    "SenderBytesFull", ("size", "sender_bytes", "limit"),
    "the sender's transactions waiting in this validator's mempool take {sender_bytes} bytes, one of {size}"
    " bytes more would pass the per-sender limit of {limit}: resubmit once some of them have committed",
)
NotFaucetAuthority = _error(
    "NotFaucetAuthority", ("sender",),
    "{sender} is not a faucet authority of this network: only the keys its genesis names send Faucet"
    " (ask the gateway's faucet instead)",
)
# Variable-length fields of transaction kinds, bounded on chain (soma_ray/protocol/bounds.py).
FieldLengthMismatch = _error(
    "FieldLengthMismatch", ("field", "length", "expected"), "{field} is {length} bytes, it must be exactly {expected}"
)
FieldTooLong = _error("FieldTooLong", ("field", "length", "max"), "{field} is {length} bytes, at most {max} allowed")
TooManyItems = _error("TooManyItems", ("field", "count", "max"), "{field} has {count} items, at most {max} allowed")
InvalidUrl = _error("InvalidUrl", ("field", "reason"), "{field} is not a usable URL: {reason}")
ValueOutOfRange = _error(
    "ValueOutOfRange", ("field", "value", "min", "max"), "{field} is {value}, it must be within {min}..{max}"
)
# Consensus rules on a checkpoint's entries (soma_ray/protocol/checkpoint.py): a validator refuses
# a proposal, and a follower a checkpoint, that breaks them.
UnexecutableEntry = _error(
    "UnexecutableEntry", ("index", "error", "reason"),
    "entry {index} of the checkpoint cannot execute ({error}: {reason}): every entry must pay its fee"
    " and take its sender's nonce, or change the epoch",
)
CheckpointTooLarge = _error(
    "CheckpointTooLarge", ("size", "max"),
    "the checkpoint's transactions take {size} bytes, more than max_checkpoint_bytes = {max}",
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

# Targets (raised by targets.py, re-exported there).
ZeroEmbedding = _error(
    "ZeroEmbedding", (), "the embedding is the zero vector: its cosine distance is undefined"
)
ModelSetMismatch = _error(
    "ModelSetMismatch", ("model_ids", "embeddings", "stakes"),
    "{model_ids} model ids, {embeddings} embeddings and {stakes} stakes: counts must match",
)
# Submissions (raised by submissions.py, re-exported there).
TargetNotFilled = _error(
    "TargetNotFilled", ("status",),
    "the target is {status}: only a Filled target can be challenged or claimed "
    "(or an Open target once its epoch has ended)",
)

# Off-chain reads of what the chain names (the SDK, the target index).
ModelHasNoWeights = _error(
    "ModelHasNoWeights", ("model_id",),
    "model {model_id} has no revealed weights (no manifest or decryption key on chain yet)",
)
NoRevealedSubmission = _error(
    "NoRevealedSubmission", ("target_id",), "target {target_id} has no revealed submission",
)

# The public services' refusals of a request (serve/router.py and the gateway).
RouteNotFound = _error("RouteNotFound", ("method", "path"), "no route {method} {path}")
MethodNotAllowed = _error("MethodNotAllowed", ("method", "path"), "{path} does not answer {method}")
NotFound = _error("NotFound", ("what",), "{what} not found")
LocalnetOnly = _error("LocalnetOnly", ("operation",), "{operation} is only available on a localnet")
FaucetRateLimited = _error(
    "FaucetRateLimited", ("retry_after_s",),
    "this address used the faucet too often; try again in {retry_after_s} s",
)
EpochNotReached = _error(
    "EpochNotReached", ("epoch", "current", "timeout_s"),
    "epoch {epoch} did not begin within {timeout_s} s (still {current})",
)

# The blob store (serve/blobs.py) and downloads (soma_ray/fetch.py), re-exported there.
BlobTooLarge = _error(
    "BlobTooLarge", ("size_at_least", "max"),
    "the blob is at least {size_at_least} bytes, the limit is {max}: nothing was stored",
)
BlobNotFound = _error("BlobNotFound", ("checksum",), "no blob with checksum {checksum}")
BlobCorrupted = _error(
    "BlobCorrupted", ("checksum",),
    "the stored copy of blob {checksum} is corrupted and was quarantined: it is not served;"
    " uploading the same content again repairs it",
)
InvalidChecksum = _error("InvalidChecksum", ("checksum", "reason"), "{checksum} is not a blob checksum: {reason}")
FetchError = _error("FetchError", ("url", "reason"), "could not fetch {url}: {reason}")
FetchTooLarge = _error("FetchTooLarge", ("url", "size", "max"), "{url} is at least {size} bytes, the limit is {max}")

# The scoring service (serve/scoring.py). Errors of the request's own making are the ones above:
# MalformedInput, DataTooLarge, EmbeddingDimensionMismatch, NonFiniteEmbedding, ZeroEmbedding.
# Stages at which one model's weights can fail, in the order a load meets them.
MODEL_STAGES = ("download", "size", "checksum", "decrypt", "load")
ModelUnavailable = _error(
    "ModelUnavailable", ("model_id", "stage", "reason"),
    "model {model_id} is unavailable ({stage}): {reason}",
)
DataUnavailable = _error("DataUnavailable", ("url", "reason"), "could not get the data at {url}: {reason}")
ScoringTimeout = _error("ScoringTimeout", ("timeout_s",), "scoring did not finish within {timeout_s} s")
RequestTooLarge = _error(
    "RequestTooLarge", ("size", "max"), "the request body is at least {size} bytes, the limit is {max}",
)
ScoringUnavailable = _error(
    "ScoringUnavailable", ("reason",), "the scoring service is unavailable: {reason}",
)
# Limits of the public surface (soma_ray/limits.py: per client and for all clients, by the route
# table's rate classes) and the blob store's signed uploads (soma_ray/tickets.py, serve/blobs.py).
RateLimited = _error(
    "RateLimited", ("rate_class", "scope", "retry_after_s"),
    "too many {rate_class} requests ({scope}): nothing was done, try again in {retry_after_s} s",
)
UploadUnauthorized = _error(
    "UploadUnauthorized", ("reason",),
    "the upload is not authorized: {reason} (an upload carries a ticket from POST /blobs/ticket,"
    " signed for by a funded account; the SDK gets one for you)",
)
AccountUnderfunded = _error(
    "AccountUnderfunded", ("address", "balance", "required"),
    "{address} holds {balance} shannons, an upload of this kind and size needs at least {required}",
)
UploadQuotaExceeded = _error(
    "UploadQuotaExceeded", ("address", "size", "quota", "window_s", "retry_after_s"),
    "{address} may upload {quota} bytes per {window_s} s, {size} more do not fit now:"
    " try again in {retry_after_s} s",
)
UploadTooSlow = _error(
    "UploadTooSlow", ("received", "deadline_s"),
    "the upload was cut after {received} bytes: its body must arrive within {deadline_s} s (nothing was stored)",
)


# Consensus core (raised by soma_ray.consensus, re-exported by soma_ray.consensus.errors).
@register
class SafetyStateAhead(ProtocolError):
    """The persisted safety state is for a later height than the one the core is asked to run.

    Starting anyway could sign a vote at a height the node already voted in; the store lost
    decisions that the node had acted on, so the operator must restore it first.
    """

    fields = ("state_height", "height")
    template = "the safety state is for height {state_height}, later than the requested height {height}"


@register
class CheckpointChainBroken(ProtocolError):
    """A certified chain does not verify: `index` is the position of the first bad entry."""

    fields = ("index", "height", "reason")
    template = "certified value {index} (height {height}) does not verify: {reason}"


@register
class ValueNotCertified(InvalidCertificate):
    """The value does not hash to the digest its certificate names (whatever the signatures)."""

