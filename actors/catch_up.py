"""Catch-up transport: fetch certified checkpoints from the peers in batches. The verification
and re-execution are the executor's (`Executor.certified`); the caller persists each one."""
from __future__ import annotations

from collections.abc import Callable

import ray

from soma_ray.node.executor import InvalidCheckpoint
from soma_ray.protocol.errors import ProtocolError

# How many certified checkpoints one catch-up request fetches.
CATCH_UP_BATCH = 64


async def catch_up(peers: list, next_sequence: Callable[[], int],
                   apply: Callable[[int, bytes, bytes], None]) -> None:
    """Ask each peer in turn for what follows `next_sequence()` and `apply` it, until the peer
    has nothing more. A peer that is down, or serves something that does not verify (`apply`
    raises; nothing of that checkpoint was applied), is left for the next."""
    for peer in peers:
        try:
            while True:
                start = next_sequence()
                batch = await peer.checkpoints.remote(start, start + CATCH_UP_BATCH - 1)
                if not batch:
                    break
                for sequence, value, certificate in batch:
                    apply(sequence, value, certificate)
        except (ray.exceptions.RayActorError, ProtocolError, InvalidCheckpoint):
            continue
