"""The in-cluster path to a network: Ray calls on its named actors. The gateway serves the
public HTTP surface through it, and `SomaClient` uses it for callers inside the cluster (tests,
scripted participants); participants outside use `soma_ray.http_transport` instead, with the
same methods.

Reads go to one validator (another if it is down), so they see the caller's own transactions
(the replica answered `submit_batch` only once it had committed them).
"""
from __future__ import annotations

import random

import ray

from actors.handles import NetworkHandles, connect, find_actor
from soma_ray import cluster
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.protocol import errors

# Longest a query waits for the target index to reach the caller's checkpoint.
INDEX_WAIT_S = 30.0


class NoValidatorAvailable(RuntimeError):
    def __init__(self, tried: int):
        self.tried = tried
        super().__init__(f"none of the {tried} validators answered")


class RayTransport:
    def __init__(self, network: NetworkHandles):
        self.network = network
        self._home = random.randrange(len(network.validators))  # spread callers out

    @classmethod
    def connect(cls, namespace: str, prefix: str = "", address: str | None = None) -> "RayTransport":
        """Join the Ray cluster (`address`, else RAY_ADDRESS, else the one `soma start`
        recorded) unless this process already has, and find the network's actors."""
        if not ray.is_initialized():  # the same way every command finds its cluster, never `auto`
            cluster.connect(address, namespace=namespace)
        return cls(connect(namespace, prefix))

    async def _call(self, method: str, *args):
        """`method` on this caller's validator, or on the next that answers if it is down."""
        validators = self.network.validators
        for offset in range(len(validators)):
            index = (self._home + offset) % len(validators)
            if validators[index] is None:
                continue
            try:
                result = await getattr(validators[index], method).remote(*args)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                continue
            self._home = index
            return result
        raise NoValidatorAvailable(len(validators))

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        return await self._call("submit_batch", batch)

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        return await self._call("request_faucet", recipient, amount)

    async def get_account(self, address: bytes) -> bytes:
        return await self._call("get_account", address)

    async def system_state(self) -> bytes:
        return await self._call("system_state")

    async def get_checkpoint(self, sequence: int | None) -> tuple[bytes, bytes] | None:
        return await self._call("get_checkpoint", sequence)

    async def get_object(self, key: bytes) -> bytes | None:
        return await self._call("get_object", key)

    async def object_ids(self, tag: bytes) -> list[bytes]:
        return await self._call("object_ids", tag)

    async def status(self) -> list[ValidatorStatus | None]:
        """Each validator's status, None for one that does not answer."""
        out = []
        for handle in self.network.validators:
            try:
                out.append(None if handle is None else await handle.status.remote())
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                out.append(None)
        return out

    # The target index (min_sequence: answer once it has applied that checkpoint).

    async def _index(self, min_sequence: int | None):
        config = self.network.config
        index = find_actor(config.target_state_name, config.namespace)
        if index is None:
            raise errors.NotFound(what="the target index")
        if min_sequence is not None:
            await index.wait_synced.remote(min_sequence, INDEX_WAIT_S)
        return index

    async def list_targets(self, status, limit, page_token, submitter, model_id, min_sequence):
        index = await self._index(min_sequence)
        return await index.list_targets.remote(status, limit or 50, page_token, submitter, model_id)

    async def get_target(self, target_id: bytes, min_sequence: int | None):
        return await (await self._index(min_sequence)).get_target.remote(target_id)

    async def nearest_targets(self, embedding: bytes, k: int):
        return await (await self._index(None)).nearest_open_targets.remote(embedding, k)

    async def model_manifests(self, model_ids: list[bytes], min_sequence: int | None):
        return await (await self._index(min_sequence)).model_manifests.remote(model_ids)

    async def leaderboard(self, limit: int):
        return await (await self._index(None)).leaderboard.remote(limit)

    async def active_models(self, min_sequence: int | None = None):
        return await (await self._index(min_sequence)).active_models.remote()

    async def get_model(self, model_id: bytes):
        return await (await self._index(None)).get_model.remote(model_id)

    async def index_status(self):
        return await (await self._index(None)).status.remote()

    async def advance_epoch(self) -> int:
        return await self.network.clock.advance_epoch.remote()

    async def wait_for_epoch(self, epoch: int, timeout_s: float) -> int:
        return await self.network.clock.wait_for_epoch.remote(epoch, timeout_s)
