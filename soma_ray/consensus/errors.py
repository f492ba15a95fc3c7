"""Typed errors of the consensus core (same base and style as `soma_ray.protocol.errors`)."""
from __future__ import annotations

from soma_ray.protocol.errors import InvalidCertificate, ProtocolError


class SafetyStateAhead(ProtocolError):
    """The persisted safety state is for a later height than the one the core is asked to run.

    Starting anyway could sign a vote at a height the node already voted in; the store lost
    decisions that the node had acted on, so the operator must restore it first.
    """

    fields = ("state_height", "height")
    template = "the safety state is for height {state_height}, later than the requested height {height}"


class CheckpointChainBroken(ProtocolError):
    """A certified chain does not verify: `index` is the position of the first bad entry."""

    fields = ("index", "height", "reason")
    template = "certified value {index} (height {height}) does not verify: {reason}"


class ValueNotCertified(InvalidCertificate):
    """The value does not hash to the digest its certificate names (whatever the signatures)."""
