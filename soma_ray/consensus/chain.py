"""Verify certified decisions from genesis with nothing but the committees."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from soma_ray.consensus.errors import CheckpointChainBroken
from soma_ray.consensus.messages import CertifiedValue, verify_certified_value
from soma_ray.protocol.crypto import Committee
from soma_ray.protocol.errors import InvalidCertificate


def verify_checkpoint_chain(
    committee_at: Committee | Callable[[int], Committee],
    chain: Iterable[CertifiedValue | tuple[bytes, object]],
    first_height: int = 0,
    *,
    chain_id: bytes,
) -> int:
    """Check that `chain` holds consecutive heights from `first_height`, each value certified by
    ≥ quorum precommits of its committee on the network `chain_id` (its `SystemState.chain_id`);
    return the next height. Raise `CheckpointChainBroken`
    (index, height, reason) at the first entry that fails.

    `committee_at` is one committee, or a function height -> committee for chains that cross
    epochs (the application reads the next committee from the last checkpoint of an epoch).
    """
    committee_for = committee_at if callable(committee_at) else (lambda _height: committee_at)
    height = first_height
    for index, entry in enumerate(chain):
        value, certificate = (entry.value, entry.certificate) if isinstance(entry, CertifiedValue) else entry
        if certificate.height != height:
            raise CheckpointChainBroken(index=index, height=certificate.height, reason=f"expected height {height}")
        try:
            verify_certified_value(committee_for(height), value, certificate, chain_id=chain_id)
        except InvalidCertificate as exc:
            raise CheckpointChainBroken(index=index, height=height, reason=exc.reason) from None
        height += 1
    return height
