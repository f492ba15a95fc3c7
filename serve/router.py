"""HTTP dispatch from the route table (soma_ray/routes.py), shared by the gateway, the blob store
and the scoring service: one way to match a route, parse its arguments, read its body within its
limit, call its handler and write the reply or the typed error.

    router = Router("gateway", handlers, localnet=True)
    response = await router.handle(request)     # a starlette Request, from a deployment's __call__

Every request is counted against the limits of its route's rate class (soma_ray/routes.py
`RATE_LIMITS`, soma_ray/limits.py) for its client, before anything else is done: over a limit it
is refused with 429 `RateLimited` and a `Retry-After`, and it holds its class's slot (per client
and for all) until its answer is written. The client is the HTTP client's address; behind a
reverse proxy named in `trusted_proxies`, the address that proxy puts last in X-Forwarded-For.

`handlers` has one async method per route of the application, named as the route (the Transport
method), taking the route's arguments by name (a streamed body arrives as the request itself,
with its `limit`); a method `head_<name>` answers HEAD for a GET route (otherwise HEAD is
MethodNotAllowed). A handler may return a starlette Response (a stream);
anything else is the reply, encoded as the route says. `handlers.body_limit(name)` gives the
limits routes declare by name. Every failure a request causes is a 4xx with its typed error (one
encoder, one status table: soma_ray/wire.py); a bug is a 500 `InternalError`, logged.

Replies are msgpack unless the client asks for JSON (`Accept: application/json`, `?format=json`,
or a JSON request body); errors are JSON unless it asks for msgpack. Bytes in JSON are 0x-hex.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from soma_ray import wire
from soma_ray.limits import Limit, Limiter
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.routes import LOCALNET, RAW, RATE_LIMITS, ROUTES, Route

log = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "text/json")


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in _JSON_TYPES


class Router:
    def __init__(self, app: str, handlers: Any, localnet: bool = False, on_answer=None,
                 limits: dict[str, Limit] | None = None, trusted_proxies: tuple[str, ...] = ()):
        """`on_answer(route_path, status)`, if given, is told of every answer (metrics);
        `limits`: each rate class's (default soma_ray.routes.RATE_LIMITS)."""
        self.routes = [route for route in ROUTES.values() if route.app == app]
        # Literal segments before parameters, so /models/active is not /models/{model_id}.
        self.routes.sort(key=lambda route: [s.startswith("{") for s in route.segments])
        self.handlers = handlers
        self.localnet = localnet
        self.on_answer = on_answer
        self.limiter = Limiter(RATE_LIMITS if limits is None else limits)
        self.trusted_proxies = frozenset(trusted_proxies)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for `method` and `path` (below the app's prefix) and its path texts."""
        parts = tuple(part for part in path.split("/") if part)
        allowed = False
        for route in self.routes:
            found = _segments_match(route.segments, parts)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found
            allowed = True
        if allowed:
            raise errors.MethodNotAllowed(method=method, path=path)
        raise errors.RouteNotFound(method=method, path=path)

    async def handle(self, request: Request) -> Response:
        route = None
        try:
            route, texts = self.match(request.method, _app_path(request))
            slot = _Slot(self.limiter, route.rate, client_of(request, self.trusted_proxies))
            try:
                response = await self._answer(request, route, texts)
                if isinstance(response, StreamingResponse):  # its body is sent after this returns
                    response.body_iterator = slot.held_by(response.body_iterator)
            finally:
                slot.release_unless_held()
        except errors.ProtocolError as error:
            response = refusal(request, error)
        except Exception:  # noqa: BLE001 - a bug here, not the request's fault
            log.exception("%s %s failed", request.method, request.url.path)
            response = refusal(request, errors.InternalError(reason="the service failed; see its logs"))
        if self.on_answer is not None:
            self.on_answer(route.path if route is not None else "unmatched", response.status_code)
        return response

    async def _answer(self, request: Request, route: Route, texts: dict[str, str]) -> Response:
        if route.access == LOCALNET and not self.localnet:
            raise errors.LocalnetOnly(operation=route.name)
        arguments = {p.name: p.codec.parse(texts[p.name]) for p in route.params if p.in_path}
        for param in route.params:
            if param.in_path:
                continue
            text = (request.query_params.get(param.name) if param.header is None
                    else request.headers.get(param.header))
            if text is None and param.required:
                raise errors.MalformedInput(reason=f"query parameter {param.name} is required")
            arguments[param.name] = None if text is None else param.codec.parse(text)
        if request.method == "HEAD":
            head = getattr(self.handlers, "head_" + route.name, None)
            if head is None:
                raise errors.MethodNotAllowed(method="HEAD", path=route.path)
            return await head(**arguments)
        if route.body is not None:
            limit = route.limit_name(texts)
            if isinstance(limit, str):
                limit = await self.handlers.body_limit(limit)
            if route.stream:  # the handler reads it, within the limit
                arguments.update({route.body_arg: request, "limit": limit})
            else:
                arguments.update(body_arguments(route, await read_body(request, limit),
                                                request.headers.get("content-type")))
        result = await getattr(self.handlers, route.name)(**arguments)
        if isinstance(result, Response):
            return result
        if result is None and route.missing_ok:
            raise errors.NotFound(what=f"{route.path} {' '.join(texts.values())}".strip())
        return reply(request, route, result, arguments)


def client_of(request: Request, trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The address limits are counted for: the HTTP client's, or behind a trusted proxy the
    last address in X-Forwarded-For that is not itself a trusted proxy."""
    host = request.client.host if request.client is not None else "unknown"
    if host in trusted_proxies:
        for hop in reversed(request.headers.get("x-forwarded-for", "").split(",")):
            hop = hop.strip()
            if hop and hop not in trusted_proxies:
                return hop[:64]
    return host


class _Slot:
    """One request's place in its rate class (admitted now, or RateLimited), released once: when
    its handler returns, or, for a streamed answer, when the body is sent, cut or dropped."""

    def __init__(self, limiter: Limiter, rate_class: str, client: str):
        limiter.admit(rate_class, client)
        self._release = lambda: limiter.release(rate_class, client)
        self._held = False

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def release_unless_held(self) -> None:
        if not self._held:
            self.release()

    def held_by(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self._held = True
        return _Holding(body, self)


class _Holding:
    """A streamed body that releases its slot when it ends (or is closed, or dropped unread)."""

    def __init__(self, body: AsyncIterator[bytes], slot: _Slot):
        self._body, self._slot = body, slot

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except BaseException:
            self._slot.release()
            raise

    async def aclose(self) -> None:
        self._slot.release()
        close = getattr(self._body, "aclose", None)
        if close is not None:
            await close()

    def __del__(self) -> None:
        self._slot.release()


def _segments_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    found = {}
    for expected, part in zip(pattern, parts):
        if expected.startswith("{"):
            found[expected[1:-1]] = part
        elif expected != part:
            return None
    return found


def _app_path(request: Request) -> str:
    """The path below the application's route prefix."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused once it passes `limit` bytes (a declared Content-Length over it at once;
    the declared length is not trusted otherwise)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.RequestTooLarge(size=int(declared), max=limit)
    received = bytearray()
    async for chunk in body_chunks(request):
        received += chunk
        if len(received) > limit:
            raise errors.RequestTooLarge(size=len(received), max=limit)
    return bytes(received)


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def body_arguments(route: Route, body: bytes, content_type: str | None) -> dict[str, Any]:
    """The arguments a body carries (MalformedInput when it does not decode as the route's type)."""
    if route.body is RAW:
        return {route.body_arg: body}
    value = wire.from_json(body, route.body) if is_json(content_type) else decode(body, route.body)
    if route.body_arg is not None:
        return {route.body_arg: value}
    return {name: getattr(value, name) for name in route.body.__struct_fields__}


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    if wire.MSGPACK in accept:
        return False
    return wire.JSON in accept or is_json(request.headers.get("content-type"))


def reply(request: Request, route: Route, value: Any, arguments: dict) -> Response:
    if wants_json(request):
        shown = route.shown(value, arguments) if route.shown is not None else wire.json_view(value)
        return JSONResponse(shown)
    return Response(value if route.reply is RAW else encode(value), media_type=wire.MSGPACK)


def refusal(request: Request, error: errors.ProtocolError | errors.ExecutionError) -> Response:
    """The typed error, with its status: msgpack when the client asks for it, else JSON."""
    status = wire.http_status(error)
    headers = {"Retry-After": str(error.retry_after_s)} if getattr(error, "retry_after_s", None) else None
    if wire.MSGPACK in request.headers.get("accept", ""):
        return Response(encode(wire.error_struct(error)), status_code=status, media_type=wire.MSGPACK,
                        headers=headers)
    return JSONResponse(wire.error_json(error), status_code=status, headers=headers)
