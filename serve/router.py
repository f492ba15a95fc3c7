"""HTTP dispatch from the route table (soma_ray/routes.py), shared by the gateway, the blob store
and the scoring service: one way to match a route, parse its arguments, read its body within its
limit, call its handler and write the reply or the typed error.

    router = Router("gateway", handlers, localnet=True)
    response = await router.handle(request)     # a starlette Request, from a deployment's __call__

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
from starlette.responses import JSONResponse, Response

from soma_ray import wire
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.routes import LOCALNET, RAW, ROUTES, Route

log = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "text/json")


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in _JSON_TYPES


class Router:
    def __init__(self, app: str, handlers: Any, localnet: bool = False, on_answer=None):
        """`on_answer(route_path, status)`, if given, is told of every answer (metrics)."""
        self.routes = [route for route in ROUTES.values() if route.app == app]
        # Literal segments before parameters, so /models/active is not /models/{model_id}.
        self.routes.sort(key=lambda route: [s.startswith("{") for s in route.segments])
        self.handlers = handlers
        self.localnet = localnet
        self.on_answer = on_answer

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
            response = await self._answer(request, route, texts)
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
            text = request.query_params.get(param.name)
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
