"""When the epoch clock asks for a ChangeEpoch, and how subscribers wait for the next epoch.

The schedule functions are pure: they read only consensus time (checkpoint timestamps, ms),
never a local clock, so every validator answers the same for the same checkpoint.
"""

from __future__ import annotations

import asyncio

from soma_ray.picklable import PicklesWithFields
from soma_ray.protocol import epoch as protocol_epoch


class InvalidEpochDuration(ValueError):
    def __init__(self, epoch_duration_ms: int):
        self.epoch_duration_ms = epoch_duration_ms
        super().__init__(f"epoch duration must be positive, got {epoch_duration_ms} ms")


class EpochWaitTimeout(PicklesWithFields, TimeoutError):
    """The awaited epoch did not begin in time."""

    def __init__(self, epoch: int, current: int, timeout_s: float):
        self.epoch = epoch
        self.current = current
        self.timeout_s = timeout_s
        super().__init__(f"epoch {epoch} did not begin within {timeout_s} s (still {current})")


def epoch_end_ms(epoch_start_ms: int, epoch_duration_ms: int) -> int:
    """The protocol's epoch end (the rule ChangeEpoch itself checks), for a valid duration."""
    if epoch_duration_ms <= 0:
        raise InvalidEpochDuration(epoch_duration_ms)
    return protocol_epoch.epoch_end_ms(epoch_start_ms, epoch_duration_ms)


def change_epoch_due(
    epoch_start_ms: int, epoch_duration_ms: int, consensus_timestamp_ms: int
) -> bool:
    """True once the latest consensus timestamp has reached the end of the current epoch.

    One ChangeEpoch is due however far time has run past the end (after an outage): the next
    epoch starts at that ChangeEpoch's timestamp, so missed epochs are not replayed.
    """
    return consensus_timestamp_ms >= epoch_end_ms(epoch_start_ms, epoch_duration_ms)


def ms_until_change_epoch(
    epoch_start_ms: int, epoch_duration_ms: int, consensus_timestamp_ms: int
) -> int:
    """Consensus milliseconds left in the epoch (0 when a ChangeEpoch is due)."""
    return max(0, epoch_end_ms(epoch_start_ms, epoch_duration_ms) - consensus_timestamp_ms)


class EpochWaiter:
    """Lets coroutines await an epoch number; `advance` wakes everyone it reached.

    One asyncio.Event per awaited epoch, created on demand and dropped when set, so waiting on
    a far epoch costs nothing until something awaits it. Use from one event loop.
    """

    def __init__(self, epoch: int = 0):
        self._current = epoch
        self._events: dict[int, asyncio.Event] = {}

    @property
    def current(self) -> int:
        return self._current

    def advance(self, epoch: int) -> None:
        """The network is now in `epoch`; an older epoch (a late report) changes nothing."""
        if epoch <= self._current:
            return
        self._current = epoch
        for awaited in [e for e in self._events if e <= epoch]:
            self._events.pop(awaited).set()

    async def wait_for(self, epoch: int, timeout_s: float | None = None) -> int:
        """Return the current epoch once it is at least `epoch`."""
        if self._current >= epoch:
            return self._current
        event = self._events.setdefault(epoch, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            raise EpochWaitTimeout(epoch, self._current, timeout_s) from None
        return self._current
