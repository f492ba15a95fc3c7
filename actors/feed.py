"""The committed-checkpoint feed, subscriber side: any actor (the target index, audit workers,
metrics) follows every certified checkpoint with its effects, in order, exactly once.

    feed = CheckpointFeed(config, "target-index")
    async for followed in feed.items():      # from the sequence after the last acknowledged
        ...                                  # process followed.checkpoint / .effects
        feed.ack(followed.sequence)          # durable: a restarted subscriber resumes after it

Items come from any running validator by long poll (`ValidatorActor.feed`); when the one read
from is down, restarting or replaced, the next is asked, and the position is this subscriber's,
so a change of validator neither skips nor repeats an item. Each item is checked before it is
delivered (`soma_ray.node.feed.follow`: sequence, hash link, effects digest); a validator that
serves one that does not check is passed over for the next.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import ray

from soma_ray.handles import find_actor
from soma_ray.config import NetworkConfig
from soma_ray.files import write_atomic
from soma_ray.node.feed import FeedBroken, Followed, follow
from soma_ray.protocol.checkpoint import checkpoint_digest

# How long one read waits for a new checkpoint, and how many it returns at most.
POLL_WAIT_S = 2.0
BATCH = 64
# Pause before trying again when no validator answers.
RETRY_S = 0.5


class CheckpointFeed:
    def __init__(self, config: NetworkConfig, subscriber: str, start: int = 0):
        """Follow from checkpoint `start`, or from after the last sequence `subscriber`
        acknowledged (kept under the data dir, `NetworkConfig.feed_cursor_path`)."""
        self._config = config
        self._cursor = config.feed_cursor_path(subscriber)
        acked = self.acknowledged()
        self.next_sequence = start if acked is None else max(start, acked + 1)
        self._previous: bytes | None = None  # digest of the last checkpoint delivered
        self._source = 0  # index of the validator read from

    def acknowledged(self) -> int | None:
        """The last sequence this subscriber acknowledged, if any."""
        try:
            return int(self._cursor.read_text())
        except FileNotFoundError:
            return None

    def ack(self, sequence: int) -> None:
        """Durably record that everything up to `sequence` is processed (atomic replace)."""
        self._cursor.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._cursor, str(sequence).encode(), durable=True)

    async def items(self) -> AsyncIterator[Followed]:
        """Every certified checkpoint from `next_sequence` on, forever, in order, once each."""
        while True:
            for item in await self._read():
                try:
                    followed = follow(item, self.next_sequence, self._previous)
                except FeedBroken:
                    self._source += 1  # that validator serves something else: ask the next
                    break
                self._previous = checkpoint_digest(followed.checkpoint)
                self.next_sequence += 1
                yield followed

    async def _read(self) -> list:
        """The next items from a validator that answers (waiting while none does)."""
        for _ in range(self._config.validators):
            name = self._config.validator_name(self._source % self._config.validators)
            validator = find_actor(name, self._config.namespace)
            if validator is not None:
                try:
                    return await validator.feed.remote(self.next_sequence, BATCH, POLL_WAIT_S)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    pass
            self._source += 1
        await asyncio.sleep(RETRY_S)
        return []
