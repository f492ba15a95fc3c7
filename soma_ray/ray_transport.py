"""The in-cluster path to a network: `RayTransport`, the `Transport` methods as Ray calls on its
named actors. The gateway serves the public HTTP surface through it, and `SomaClient` uses it for
callers inside the cluster (tests, scripted participants, audit workers); participants outside
use `soma_ray.http_transport` instead. The blob store and the scoring service it reaches through
their Serve deployment handles, never through their public HTTP routes: in-cluster callers (the
audit workers above all) do not queue behind the public's requests nor count against its rate
limits (soma_ray/routes.py RATE_LIMITS), and the scoring service serves their requests first
(docs/scoring.md). Blobs of the network's own store are read the same way (`fetch`); any other
URL is downloaded by the fetcher that refuses inward addresses (soma_ray/fetch.py).

Every handle is found once and kept (an actor relaunched under its name is found again when the
kept handle's actor is gone); lookups run off the event loop.

Reads go to one validator (another if it is down), so they see the caller's own transactions
(the replica answered `submit_batch` only once it had committed them). When no validator
answers, the network's actors are looked up again once (validators relaunched since are new
actors under the same names).
"""
from __future__ import annotations

import asyncio
import bisect
import random
import re

import ray
from ray.exceptions import RayTaskError

from soma_ray import cluster
from soma_ray.epoch_schedule import EpochWaitTimeout
from soma_ray.fetch import FETCH_FAILED, fetch_bytes
from soma_ray.handles import NetworkHandles, connect, find_actor
from soma_ray.http_transport import HttpTransport
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.types import SystemState
from soma_ray.wire import (
    DEFAULT_LEADERBOARD, DEFAULT_PAGE, MAX_PAGE, CheckpointReply, EpochInfo, EpochReply, Health,
    epoch_info,
)

# Longest a query waits for the target index to reach the caller's checkpoint.
INDEX_WAIT_S = 30.0
_ACTOR_GONE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class NoValidatorAvailable(RuntimeError):
    def __init__(self, tried: int):
        self.tried = tried
        super().__init__(f"none of the {tried} validators answered")


class RayTransport:
    def __init__(self, network: NetworkHandles):
        self.network = network
        self._home = random.randrange(len(network.validators))  # spread callers out
        self._target_index = None  # its handle, found once
        self._services: HttpTransport | None = None
        self._deployments: dict[tuple[str, str], object] = {}  # (deployment, app) -> its handle

    @classmethod
    def connect(cls, namespace: str, prefix: str = "", address: str | None = None) -> "RayTransport":
        """Join the Ray cluster (`address`, else RAY_ADDRESS, else the one `soma start`
        recorded) unless this process already has, and find the network's actors."""
        if not ray.is_initialized():  # the same way every command finds its cluster, never `auto`
            cluster.connect(address, namespace=namespace)
        return cls(connect(namespace, prefix))

    async def close(self) -> None:
        if self._services is not None:
            await self._services.close()

    async def fetch(self, url: str, max_bytes: int, timeout_s: float) -> bytes:
        """A blob of the network's own store is read through the store's deployment handle (an
        audit's download never waits behind the public's); any other URL is downloaded by the
        fetcher, which refuses inward addresses."""
        checksum = self.own_blob(url)
        if checksum is None:
            return await fetch_bytes(url, max_bytes, timeout_s, allowed_origins=(self.network.config.public_url,))
        store = await self._deployment("BlobService", "blobs")
        try:
            async with asyncio.timeout(timeout_s):
                return await _unwrapped(store.read.remote(checksum, max_bytes))
        except errors.BlobTooLarge:
            raise errors.FetchTooLarge(url=url, size=max_bytes + 1, max=max_bytes) from None
        except (errors.ProtocolError, TimeoutError):
            raise errors.FetchError(url=url, reason=FETCH_FAILED) from None

    def own_blob(self, url: str) -> bytes | None:
        """The checksum of `url` when it names a blob of this network's store, else None."""
        prefix = self.network.config.public_url.rstrip("/") + "/blobs/"
        rest = url[len(prefix):] if url.startswith(prefix) else ""
        return bytes.fromhex(rest) if _HEX64.fullmatch(rest) else None

    async def _deployment(self, deployment: str, service: str):
        """The handle of `deployment` in the network's application `service`, found once."""
        key = (deployment, self.network.config.app_name(service))
        found = self._deployments.get(key)
        if found is None:
            from ray import serve

            found = self._deployments[key] = await asyncio.to_thread(serve.get_deployment_handle, *key)
        return found

    # ------------------------------------------------------------------ validators

    async def _call(self, method: str, *args):
        """`method` on this caller's validator, or on the next that answers if it is down; when
        none does, the network is found again by name once."""
        try:
            return await self._on_a_validator(method, *args)
        except NoValidatorAvailable:
            config = self.network.config
            self.network = await asyncio.to_thread(connect, config.namespace, config.prefix)
            return await self._on_a_validator(method, *args)

    async def _on_a_validator(self, method: str, *args):
        validators = self.network.validators
        for offset in range(len(validators)):
            index = (self._home + offset) % len(validators)
            if validators[index] is None:
                continue
            try:
                result = await getattr(validators[index], method).remote(*args)
            except _ACTOR_GONE:
                continue
            self._home = index
            return result
        raise NoValidatorAvailable(len(validators))

    async def submit(self, tx: bytes) -> SubmitReply:
        [reply] = await self._call("submit_batch", [tx])
        return reply

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        return await self._call("submit_batch", batch)

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        return await self._call("request_faucet", recipient, amount)

    async def get_account(self, address: bytes) -> bytes:
        return await self._call("get_account", address)

    async def get_object(self, key: bytes) -> bytes | None:
        return await self._call("get_object", key)

    async def object_ids(self, tag: bytes, limit: int | None, after: bytes | None) -> list[bytes]:
        # The validator answers the whole namespace (ascending); the page is cut here.
        ids = await self._call("object_ids", tag)
        start = 0 if after is None else _first_above(ids, bytes(after))
        return ids[start:start + (limit or MAX_PAGE)]

    async def system_state(self) -> bytes:
        return await self._call("system_state")

    async def epoch_info(self) -> EpochInfo:
        return epoch_info(decode(await self.system_state(), SystemState))

    async def get_checkpoint(self, sequence: int | None) -> CheckpointReply | None:
        found = await self._call("get_checkpoint", sequence)
        return None if found is None else CheckpointReply(*found)

    async def status(self) -> list[ValidatorStatus | None]:
        """Each validator's status, None for one that does not answer."""
        out = []
        for handle in self.network.validators:
            try:
                out.append(None if handle is None else await handle.status.remote())
            except _ACTOR_GONE:
                out.append(None)
        return out

    async def health(self) -> Health:
        found = await self.status()
        up = sum(s is not None for s in found)
        return Health(ok=up > 0, validators=len(found), validators_up=up, localnet=self.network.config.localnet)

    # ------------------------------------------------------------------ the epoch clock

    async def advance_epoch(self) -> EpochReply:
        return EpochReply(await self.network.clock.advance_epoch.remote())

    async def wait_for_epoch(self, epoch: int, timeout_s: float) -> EpochReply:
        try:
            return EpochReply(await self.network.clock.wait_for_epoch.remote(epoch, timeout_s))
        except EpochWaitTimeout as late:
            raise errors.EpochNotReached(epoch=late.epoch, current=late.current, timeout_s=late.timeout_s) from None

    # ------------------------------------------------------------------ the target index

    async def _index(self, min_sequence: int | None):
        """The target index's handle, found once (again when its actor is gone: relaunched)."""
        if self._target_index is None:
            config = self.network.config
            self._target_index = await asyncio.to_thread(find_actor, config.target_state_name, config.namespace)
            if self._target_index is None:
                raise errors.NotFound(what="the target index")
        if min_sequence is not None:
            try:
                await self._target_index.wait_synced.remote(min_sequence, INDEX_WAIT_S)
            except _ACTOR_GONE:
                self._target_index = None
                return await self._index(min_sequence)
        return self._target_index

    async def list_targets(self, status, limit, page_token, submitter, model_id, min_sequence):
        index = await self._index(min_sequence)
        return await index.list_targets.remote(status, limit or DEFAULT_PAGE, page_token, submitter, model_id)

    async def get_target(self, target_id, min_sequence):
        return await (await self._index(min_sequence)).get_target.remote(target_id)

    async def nearest_targets(self, embedding, k):
        return await (await self._index(None)).nearest_open_targets.remote(embedding, k)

    async def model_manifests(self, model_ids, min_sequence):
        return await (await self._index(min_sequence)).model_manifests.remote(model_ids)

    async def active_models(self, min_sequence):
        return await (await self._index(min_sequence)).active_models.remote()

    async def get_model(self, model_id):
        return await (await self._index(None)).get_model.remote(model_id)

    async def leaderboard(self, limit):
        return await (await self._index(None)).leaderboard.remote(limit or DEFAULT_LEADERBOARD)

    async def index_status(self):
        return await (await self._index(None)).status.remote()

    async def list_submissions(self, miner, target_id, status, limit, page_token, min_sequence):
        index = await self._index(min_sequence)
        return await index.list_submissions.remote(miner, target_id, status, limit or DEFAULT_PAGE, page_token)

    async def get_submission(self, submission_id, min_sequence):
        return await (await self._index(min_sequence)).get_submission.remote(submission_id)

    async def list_challenges(self, submission_id, challenger, target_id, status, limit, page_token, min_sequence):
        index = await self._index(min_sequence)
        return await index.list_challenges.remote(submission_id, challenger, target_id, status,
                                                  limit or DEFAULT_PAGE, page_token)

    async def get_challenge(self, challenge_id, min_sequence):
        return await (await self._index(min_sequence)).get_challenge.remote(challenge_id)

    # ------------------------------------------------------------------ public services (HTTP)

    def _public(self) -> HttpTransport:
        if self._services is None:
            self._services = HttpTransport(self.network.config.public_url)
        return self._services

    async def upload_ticket(self, request):
        return await _unwrapped((await self._deployment("BlobService", "blobs")).upload_ticket.remote(request))

    async def upload(self, kind, data, ticket):
        return await _unwrapped((await self._deployment("BlobService", "blobs")).upload_bytes.remote(
            kind, bytes(data), ticket))

    async def get_blob(self, checksum):
        return await self._public().get_blob(checksum)

    async def score(self, request):
        """The in-cluster lane of the scoring service (its ingress's `score` method)."""
        return await _unwrapped((await self._deployment("ScoringIngress", "scoring")).score.remote(request))

    async def scoring_health(self):
        return await _unwrapped((await self._deployment("ScoringIngress", "scoring")).scoring_health.remote())


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _first_above(ids: list[bytes], after: bytes) -> int:
    return bisect.bisect_right(ids, after)


async def _unwrapped(response):
    """A deployment handle's answer; a typed error raised in the replica as itself."""
    try:
        return await response
    except RayTaskError as error:
        if isinstance(error.cause, errors.ProtocolError):
            raise error.cause from None
        raise
