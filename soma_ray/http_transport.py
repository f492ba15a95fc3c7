"""The SDK's path to a network from outside its Ray cluster: `HttpTransport`, the `Transport`
methods over the gateway's HTTP routes. Imports no Ray.

Its route methods are made from the route table (soma_ray/routes.py), one per route, each with
the signature of its `Transport` method: the arguments go where the route says (path, query,
body), the reply decodes as the route's type. A refused request raises its typed error; a
gateway that cannot be reached raises `GatewayUnavailable`; a fault on its side (a 5xx that
carries no typed error) `GatewayError`. A `RateLimited` refusal (429: this client asked too often,
or holds too many requests of the route's class) is retried after its Retry-After, for at most
`RATE_LIMIT_PATIENCE_S` in all; then it is raised.

    transport = HttpTransport("http://127.0.0.1:8000")
    page = await transport.list_targets("open", 10, None, None, None, None)
"""
from __future__ import annotations

import asyncio
import inspect
import time

import aiohttp
import msgspec

from soma_ray import wire
from soma_ray.fetch import fetch_bytes
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.routes import APP_PREFIX, RAW, ROUTES, Route
from soma_ray.transport import Transport

# A submit waits for finality (up to a minute) before the gateway answers.
REQUEST_TIMEOUT_S = 180.0
# How long a request refused with RateLimited is retried (after each Retry-After) before the
# refusal is raised.
RATE_LIMIT_PATIENCE_S = 60.0
OCTETS = "application/octet-stream"


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
    """The Transport over HTTP. `scoring_url`: a scoring service of one's own (`soma start
    scoring`), used for the scoring routes instead of the network's."""

    def __init__(self, rpc_url: str, scoring_url: str | None = None):
        self.url = rpc_url.rstrip("/")
        self.scoring_url = scoring_url.rstrip("/") if scoring_url else None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, max_bytes: int, timeout_s: float) -> bytes:
        """The network's blob store (the gateway's origin) and public addresses only."""
        return await fetch_bytes(url, max_bytes, timeout_s, allowed_origins=(self.url,))

    def route_url(self, route: Route, arguments: dict) -> str:
        path = route.url_path(arguments)
        if route.app == "scoring" and self.scoring_url is not None:
            return self.scoring_url + path.removeprefix(APP_PREFIX["scoring"])
        return self.url + path

    async def call(self, route: Route, arguments: dict):
        """`route` with `arguments` (its Transport method's, by name): the decoded reply."""
        body, content_type = _body(route, arguments)
        url, query, headers = self.route_url(route, arguments), route.query(arguments), route.headers(arguments)
        give_up = time.monotonic() + RATE_LIMIT_PATIENCE_S
        while True:
            try:
                content = await self._request(route.method, url, body, query, route.missing_ok,
                                              content_type, headers)
                break
            except errors.RateLimited as limited:
                wait = max(1, int(limited.retry_after_s))
                if time.monotonic() + wait > give_up:
                    raise
                await asyncio.sleep(wait)
        if content is None or route.reply is RAW:
            return content
        return decode(content, route.reply)

    async def _request(self, method: str, url: str, body: bytes | None, params: dict,
                       missing_ok: bool, content_type: str, extra_headers: dict | None = None
                       ) -> bytes | None:
        """The reply body; None for a NotFound when `missing_ok`; raises the typed error of a 4xx."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        headers = {"Accept": wire.MSGPACK, "Content-Type": content_type, **(extra_headers or {})}
        try:
            async with self._session.request(method, url, data=body, params=params,
                                             headers=headers) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise GatewayUnavailable(self.url, str(error) or type(error).__name__) from None
        if status < 400:
            return content
        typed = _typed_error(status, content)
        if missing_ok and isinstance(typed, errors.NotFound):
            return None
        if status < 500 or not isinstance(typed, errors.UnknownProtocolError):
            raise typed
        raise GatewayError(status, content.decode(errors="replace"))


def _body(route: Route, arguments: dict) -> tuple[bytes | None, str]:
    if route.body is None:
        return None, wire.MSGPACK
    if route.body is RAW:
        return bytes(arguments[route.body_arg]), OCTETS
    if route.body_arg is not None:
        return encode(arguments[route.body_arg]), wire.MSGPACK
    return encode(route.body(**{name: arguments[name] for name in route.body.__struct_fields__})), wire.MSGPACK


def _typed_error(status: int, content: bytes) -> errors.ProtocolError:
    """The typed error a refusal carries, in msgpack or in JSON (an undecodable body still says
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


def _route_method(route: Route):
    """The Transport method `route` carries, with that method's signature."""
    signature = inspect.signature(getattr(Transport, route.name))

    async def method(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        del arguments["self"]
        return await self.call(route, arguments)

    method.__name__ = method.__qualname__ = route.name
    method.__signature__ = signature
    method.__doc__ = f"{route.method} {APP_PREFIX[route.app]}{route.path}"
    return method


for _route in ROUTES.values():
    setattr(HttpTransport, _route.name, _route_method(_route))
