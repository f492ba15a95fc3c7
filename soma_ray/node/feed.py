"""What a checkpoint-feed subscriber checks of each item before it is delivered (pure): the
sequence it expects, the hash link to the checkpoint before, and effects that are the ones the
checkpoint commits to (`effects_digest`)."""
from __future__ import annotations

from typing import NamedTuple

from soma_ray.node.replies import FeedItem
from soma_ray.protocol.checkpoint import effects_digest
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.types import Checkpoint, TransactionEffects


class FeedBroken(Exception):
    """A validator served a feed item that does not follow from what was delivered before."""

    def __init__(self, sequence: int, reason: str):
        self.sequence = sequence
        self.reason = reason
        super().__init__(f"feed item {sequence}: {reason}")


class Followed(NamedTuple):
    """A certified checkpoint as a subscriber receives it."""

    sequence: int
    checkpoint: Checkpoint
    effects: list[TransactionEffects]
    certificate: bytes  # canonical CommitCertificate


def follow(item: FeedItem, expected: int, previous_digest: bytes | None) -> Followed:
    """`item` decoded, if it is checkpoint `expected` and links to `previous_digest` (None: the
    first item since the subscriber started, nothing to link to). Raises FeedBroken."""
    checkpoint = decode(item.checkpoint, Checkpoint)
    if item.sequence != expected or checkpoint.sequence != expected:
        raise FeedBroken(item.sequence, f"expected checkpoint {expected}, got {checkpoint.sequence}")
    if previous_digest is not None and checkpoint.previous_digest != previous_digest:
        raise FeedBroken(expected, "does not link to the checkpoint before it")
    effects = item.decoded_effects()
    if effects is None:
        raise FeedBroken(expected, "no effects stored with it (committed by an older version)")
    if effects_digest(effects) != checkpoint.effects_digest:
        raise FeedBroken(expected, "its effects are not the ones the checkpoint commits to")
    return Followed(expected, checkpoint, effects, item.certificate)

