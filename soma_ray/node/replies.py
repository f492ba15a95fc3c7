"""What a validator answers: msgspec structs, so every reply has one schema and canonical bytes
(the gateway sends them on as they are; nothing needs pickling to be read)."""
from __future__ import annotations

from soma_ray.protocol.encoding import Struct, decode
from soma_ray.protocol.errors import ExecutionError, ProtocolError
from soma_ray.protocol.types import TransactionEffects


class SubmitReply(Struct):
    """A submitted transaction's outcome: certified (`sequence`, `effects`, whose `error` is an
    execution failure) or refused or dropped unexecuted (`error`: admission, expiry)."""

    sequence: int | None = None
    effects: TransactionEffects | None = None
    error: ExecutionError | None = None

    @classmethod
    def refused(cls, error: ProtocolError) -> "SubmitReply":
        return cls(error=error.to_struct())

    def failure(self) -> ExecutionError | None:
        """Why the transaction did not do what it asked (refused, dropped or failed), if so."""
        return self.error if self.error is not None else self.effects.error


class ValidatorStatus(Struct):
    index: int
    pid: int
    epoch: int
    sequence: int | None  # the latest committed checkpoint (None before the first)
    state_root: str  # hex
    mempool: int
    committed_transactions: int
    timestamp_ms: int  # the latest checkpoint's consensus time
    evidence: int  # equivocation records kept
    height: int | None  # the height consensus works on (None while it is not running)
    round: int | None  # its round at that height
    committee_index: int | None  # this validator's index in the current committee
    consensus: dict[str, int]  # consensus counters since start (messages dropped by reason, equivocations)


class StoredEvidence(Struct, frozen=True):
    """What the store keeps of one equivocation: who signed twice where, and the evidence."""

    kind: str  # "ProposalEquivocation" or "VoteEquivocation", the type `evidence` decodes as
    epoch: int  # whose committee `signer` indexes
    height: int
    round: int
    signer: int
    evidence: bytes  # canonical encoding, its two messages in byte order


class EvidenceRecord(Struct, frozen=True):
    index: int  # its place in the store (oldest first)
    record: StoredEvidence


class FeedItem(Struct):
    """One certified checkpoint as the checkpoint feed delivers it."""

    sequence: int
    checkpoint: bytes  # canonical Checkpoint
    certificate: bytes  # canonical CommitCertificate
    effects: bytes | None  # canonical list[TransactionEffects]; None if stored by an older version

    def decoded_effects(self) -> list[TransactionEffects] | None:
        return None if self.effects is None else decode(self.effects, list[TransactionEffects])
