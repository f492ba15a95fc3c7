"""Equivocation evidence as a validator keeps it: one record per equivocation, whichever order
its two messages came in (pure)."""
from __future__ import annotations

from soma_ray.consensus.messages import Evidence
from soma_ray.node.replies import StoredEvidence
from soma_ray.protocol.encoding import blake2b256, encode


def in_byte_order(evidence: Evidence) -> Evidence:
    """`evidence` with its two messages in canonical byte order: a replica that saw them the
    other way round (or again after a restart) reports the same equivocation."""
    first, second = sorted((evidence.first, evidence.second), key=encode)
    return type(evidence)(first=first, second=second)


def evidence_record(evidence: Evidence, epoch: int) -> tuple[bytes, bytes]:
    """(evidence id, encoded StoredEvidence) of an equivocation seen in `epoch`."""
    evidence = in_byte_order(evidence)
    data = encode(evidence)
    first = evidence.first
    record = StoredEvidence(type(evidence).__name__, epoch, first.height, first.round, first.signer, data)
    return blake2b256(data), encode(record)
