"""The epoch clock: asks the validators for a ChangeEpoch when the consensus time says so.

Validators report every checkpoint they commit (epoch, epoch start, consensus timestamp). When
the consensus timestamp passes the epoch's end — or at once on `advance_epoch` in a localnet —
the clock asks every validator to put a ChangeEpoch into its next proposal; the validators still
check on their own that the change is allowed. Subscribers wait with `wait_for_epoch`.

The clock holds no state that matters for safety: after a restart it relearns everything from
the next checkpoint report.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict

from soma_ray import metrics
from soma_ray.handles import find_actor
from soma_ray.config import NetworkConfig
from soma_ray.epoch_schedule import EpochWaiter, change_epoch_due

# While a requested change has not committed, ask again this often: a validator that restarted
# in between lost the request, and any one proposer holding it is enough.
RESEND_INTERVAL_S = 1.0


class EpochClock:
    def __init__(self, config: dict):
        self._network = NetworkConfig(**config)
        self._waiter = EpochWaiter(0)
        self._epoch_start_ms: int | None = None
        self._latest_timestamp_ms = 0
        self._requested_epoch = 0
        self._resender: asyncio.Task | None = None
        self._observed = asyncio.Event()  # set by the first checkpoint report
        self._metric_tags = metrics.network_tags(self._network)

    def ready(self) -> bool:
        return True

    def config(self) -> dict:
        return asdict(self._network)

    async def observe_checkpoint(self, epoch: int, epoch_start_ms: int, timestamp_ms: int) -> None:
        """A validator committed a checkpoint: move the clock forward, wake the waiters."""
        self._latest_timestamp_ms = max(self._latest_timestamp_ms, timestamp_ms)
        if epoch >= self._waiter.current:
            self._epoch_start_ms = epoch_start_ms
            self._waiter.advance(epoch)
            metrics.EPOCH.record(epoch, self._metric_tags)
        self._observed.set()
        if self._epoch_due():
            self._request_change()

    async def advance_epoch(self, timeout_s: float = 60.0) -> int:
        """Localnet only: change the epoch now and return the new epoch once it is committed."""
        if not self._network.localnet:
            raise PermissionError("advance_epoch is only available on a localnet")
        # A freshly (re)started clock learns the current epoch from the next report first.
        await asyncio.wait_for(self._observed.wait(), timeout_s)
        target = self._waiter.current + 1
        self._request_change()
        return await self._waiter.wait_for(target, timeout_s)

    async def wait_for_epoch(self, epoch: int, timeout_s: float = 60.0) -> int:
        """Return the current epoch as soon as it is at least `epoch`."""
        return await self._waiter.wait_for(epoch, timeout_s)

    def _epoch_due(self) -> bool:
        if self._epoch_start_ms is None:
            return False
        return change_epoch_due(self._epoch_start_ms, self._network.epoch_duration_ms,
                                self._latest_timestamp_ms)

    def _request_change(self) -> None:
        self._requested_epoch = self._waiter.current + 1
        if self._resender is None or self._resender.done():
            self._resender = asyncio.get_running_loop().create_task(self._send_until_changed())

    async def _send_until_changed(self) -> None:
        while self._waiter.current < self._requested_epoch:
            for i in range(self._network.validators):
                handle = find_actor(self._network.validator_name(i), self._network.namespace)
                if handle is not None:  # else stopped: the others are enough
                    handle.request_epoch_change.remote(self._requested_epoch)
            await asyncio.sleep(RESEND_INTERVAL_S)
