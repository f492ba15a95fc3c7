"""The SDK's path to a network from outside its Ray cluster: the gateway's HTTP routes
(soma_ray/wire.py), with the same methods as the in-cluster `actors.ray_transport.RayTransport`.
Imports no Ray. A refused request raises its typed error; a gateway that cannot be reached
raises `GatewayUnavailable`."""
from __future__ import annotations

import aiohttp
import msgspec

from soma_ray import wire
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.node.target_index import (
    Leaderboard, ManifestView, ModelView, NearbyTarget, TargetPage, TargetView,
)
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode

# A submit waits for finality (up to a minute) before the gateway answers.
REQUEST_TIMEOUT_S = 180.0


class GatewayUnavailable(ConnectionError):
    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"the gateway at {url} cannot be reached: {reason}")


class GatewayError(RuntimeError):
    """The gateway failed on its side (a 5xx)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"the gateway answered {status}: {body[:200]}")


class HttpTransport:
    def __init__(self, rpc_url: str):
        self.url = rpc_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: bytes | None = None,
                       params: dict | None = None, missing_ok: bool = False,
                       content_type: str = wire.MSGPACK) -> bytes | None:
        """The reply body; None for a 404 when `missing_ok`; raises the typed error of a 4xx."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        headers = {"Accept": wire.MSGPACK, "Content-Type": content_type}
        try:
            async with self._session.request(method, self.url + path, data=body, params=params,
                                             headers=headers) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise GatewayUnavailable(self.url, str(error) or type(error).__name__) from None
        if status == 404 and missing_ok:
            return None
        if 400 <= status < 500:
            raise _typed_error(status, content)
        if status >= 500:
            raise GatewayError(status, content.decode(errors="replace"))
        return content

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]:
        return decode(await self._request("POST", "/tx/batch", encode(batch)), list[SubmitReply])

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply:
        body = encode(wire.FaucetRequest(recipient=recipient, amount=amount))
        return decode(await self._request("POST", "/faucet", body), SubmitReply)

    async def get_account(self, address: bytes) -> bytes:
        return await self._request("GET", f"/accounts/0x{address.hex()}")

    async def system_state(self) -> bytes:
        return await self._request("GET", "/system")

    async def get_checkpoint(self, sequence: int | None) -> tuple[bytes, bytes] | None:
        found = await self._request("GET", f"/checkpoints/{'latest' if sequence is None else sequence}",
                                    missing_ok=True)
        if found is None:
            return None
        reply = decode(found, wire.CheckpointReply)
        return reply.checkpoint, reply.certificate

    async def get_object(self, key: bytes) -> bytes | None:
        return await self._request("GET", f"/objects/0x{key.hex()}", missing_ok=True)

    async def object_ids(self, tag: bytes) -> list[bytes]:
        return decode(await self._request("GET", f"/ids/0x{tag.hex()}"), list[bytes])

    async def status(self) -> list[ValidatorStatus | None]:
        return decode(await self._request("GET", "/status"), list[ValidatorStatus | None])

    async def health(self) -> wire.Health:
        return decode(await self._request("GET", "/health"), wire.Health)

    async def upload(self, data: bytes, kind: str) -> dict:
        """PUT `data` into the blob store (`kind` "data" or "weights"): {url, checksum, size}."""
        return msgspec.json.decode(await self._request("PUT", f"/blobs/{kind}", data,
                                                       content_type="application/octet-stream"))

    # The target index (min_sequence: answer once it has applied that checkpoint).

    async def list_targets(self, status, limit, page_token, submitter, model_id, min_sequence) -> TargetPage:
        params = {name: value for name, value in (
            ("status", status), ("limit", None if limit is None else str(limit)), ("page_token", page_token),
            ("submitter", _hex(submitter)), ("model_id", _hex(model_id)),
            ("min_sequence", None if min_sequence is None else str(min_sequence))) if value is not None}
        return decode(await self._request("GET", "/targets", params=params), TargetPage)

    async def get_target(self, target_id: bytes, min_sequence: int | None) -> TargetView:
        return decode(await self._request("GET", f"/targets/0x{target_id.hex()}",
                                          params=_at_least(min_sequence)), TargetView)

    async def nearest_targets(self, embedding: bytes, k: int) -> list[NearbyTarget]:
        body = encode(wire.NearestRequest(embedding=embedding, k=k))
        return decode(await self._request("POST", "/targets/nearest", body), list[NearbyTarget])

    async def model_manifests(self, model_ids: list[bytes], min_sequence: int | None) -> list[ManifestView]:
        return decode(await self._request("POST", "/models/manifests", encode(model_ids),
                                          params=_at_least(min_sequence)), list[ManifestView])

    async def active_models(self, min_sequence: int | None) -> list[ModelView]:
        return decode(await self._request("GET", "/models/active", params=_at_least(min_sequence)),
                      list[ModelView])

    async def leaderboard(self, limit: int) -> Leaderboard:
        return decode(await self._request("GET", "/leaderboard", params={"limit": str(limit)}), Leaderboard)

    # The scoring service.

    async def score(self, request: wire.ScoreRequest) -> wire.ScoreResponse:
        return decode(await self._request("POST", "/scoring/score", msgspec.msgpack.encode(request)),
                      wire.ScoreResponse)

    async def scoring_health(self) -> dict:
        return msgspec.json.decode(await self._request("GET", "/scoring/health"))

    async def advance_epoch(self) -> int:
        return decode(await self._request("POST", "/epoch/advance"), wire.EpochReply).epoch

    async def wait_for_epoch(self, epoch: int, timeout_s: float) -> int:
        params = {"epoch": str(epoch), "timeout_s": str(timeout_s)}
        return decode(await self._request("GET", "/epoch/wait", params=params), wire.EpochReply).epoch


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def _at_least(min_sequence: int | None) -> dict:
    return {} if min_sequence is None else {"min_sequence": str(min_sequence)}


def _typed_error(status: int, content: bytes) -> errors.ProtocolError:
    """The typed error a 4xx carries, in msgpack or in JSON (an undecodable body still says
    what happened)."""
    try:
        return errors.error_from_struct(decode(content, errors.ExecutionError))
    except errors.ProtocolError:
        pass
    try:
        body = msgspec.json.decode(content, type=_JsonError)
        return errors.error_from_struct(errors.ExecutionError(body.error, sorted(body.fields.items())))
    except msgspec.DecodeError:
        return errors.UnknownProtocolError(error_code=f"HTTP {status}",
                                           detail=content[:200].decode(errors="replace"))


class _JsonError(msgspec.Struct):
    error: str
    fields: dict[str, object] = {}
