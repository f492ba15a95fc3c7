"""The route table (soma_ray/routes.py), the Transport interface its three implementations share,
and the dispatch every Serve application does from it (serve/router.py), without Ray or Serve."""
import asyncio
import inspect

import msgspec
import pytest
from starlette.requests import Request

from serve.router import Router
from soma_ray.http_transport import HttpTransport
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.ray_transport import RayTransport
from soma_ray.routes import RAW, ROUTES, Route
from soma_ray.strategies.simulated import SimTransport
from soma_ray.transport import Transport
from soma_ray.wire import MSGPACK, EpochReply, FaucetRequest, TargetPage

PROTOCOL_METHODS = sorted(name for name, value in vars(Transport).items()
                          if inspect.iscoroutinefunction(value))


def shape(function) -> list[tuple]:
    """A signature as its parameters' names, kinds and defaults (annotations aside)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("transport", [HttpTransport, RayTransport, SimTransport])
def test_every_transport_has_every_method_of_the_protocol_with_its_signature(transport):
    for name in PROTOCOL_METHODS:
        method = getattr(transport, name, None)
        assert method is not None, f"{transport.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(method), f"{transport.__name__}.{name} is not async"
        assert shape(method) == shape(getattr(Transport, name)), f"{transport.__name__}.{name}"


def test_every_route_carries_one_protocol_method_and_all_of_its_arguments():
    assert set(ROUTES) == set(PROTOCOL_METHODS) - {"fetch", "close"}
    for route in ROUTES.values():
        parameters = [p for p, _, _ in shape(getattr(Transport, route.name))][1:]
        assert sorted(route.arguments) == sorted(parameters), route.name


def test_a_route_that_reads_a_body_must_declare_a_limit():
    with pytest.raises(ValueError, match="body_limit"):
        Route("submit", "POST", "/tx", RAW, body=RAW, body_arg="tx")
    with pytest.raises(ValueError, match="rate"):
        Route("status", "GET", "/status", list, rate="whatever")
    with pytest.raises(ValueError, match="path parameters"):
        Route("get_target", "GET", "/targets/{id}", RAW)


def test_the_sdk_writes_each_route_as_the_router_reads_it():
    route = ROUTES["list_targets"]
    arguments = {"status": "open", "limit": 7, "page_token": None, "submitter": b"\x01" * 32,
                 "model_id": None, "min_sequence": 3}
    query = route.query(arguments)
    assert query == {"status": "open", "limit": "7", "submitter": "0x" + "01" * 32, "min_sequence": "3"}
    assert {p.name: p.codec.parse(query[p.name]) for p in route.params if p.name in query} == {
        k: v for k, v in arguments.items() if v is not None}
    get = ROUTES["get_checkpoint"]
    assert get.url_path({"sequence": None}) == "/checkpoints/latest"
    assert get.params[0].codec.parse("latest") is None and get.url_path({"sequence": 12}) == "/checkpoints/12"
    assert ROUTES["upload"].url_path({"kind": "weights"}) == "/blobs/weights"
    assert ROUTES["score"].url_path({}) == "/scoring/score"


# ----------------------------------------------------------------------------- the router


class Handlers:
    """A gateway's handlers for the test: records calls, answers canned replies."""

    def __init__(self):
        self.calls = []

    async def body_limit(self, name):
        return {"max_tx_bytes": 100}[name]

    async def list_targets(self, **arguments):
        self.calls.append(("list_targets", arguments))
        return TargetPage(targets=[], next_page_token=None)

    async def get_object(self, key):
        self.calls.append(("get_object", key))
        return None

    async def advance_epoch(self):
        self.calls.append(("advance_epoch",))
        return EpochReply(5)

    async def request_faucet(self, recipient, amount):
        self.calls.append(("request_faucet", recipient, amount))
        raise errors.FaucetRateLimited(retry_after_s=9)

    async def submit(self, tx):
        self.calls.append(("submit", tx))
        raise AssertionError("a bug in a handler")


def request(method: str, path: str, body: bytes = b"", query: str = "", **headers: str) -> Request:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": query.encode(),
             "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(scope, receive)


def answer(router: Router, *args, **kwargs):
    response = asyncio.run(router.handle(request(*args, **kwargs)))
    return response.status_code, response


def error_of(response) -> str:
    if response.media_type == MSGPACK:
        return decode(response.body, errors.ExecutionError).code
    return msgspec.json.decode(response.body)["error"]


def test_the_router_parses_arguments_and_answers_in_the_format_asked():
    handlers = Handlers()
    router = Router("gateway", handlers, localnet=False)
    status, response = answer(router, "GET", "/targets", query="status=open&limit=3")
    assert status == 200 and response.media_type == MSGPACK
    assert decode(response.body, TargetPage) == TargetPage(targets=[], next_page_token=None)
    assert handlers.calls == [("list_targets", {"status": "open", "limit": 3, "page_token": None,
                                                "submitter": None, "model_id": None, "min_sequence": None})]
    status, response = answer(router, "GET", "/targets", query="format=json")
    assert status == 200 and msgspec.json.decode(response.body) == {"targets": [], "next_page_token": None}


@pytest.mark.parametrize("method,path,query,body,code,status", [
    ("GET", "/nowhere", "", b"", "RouteNotFound", 404),
    ("DELETE", "/targets", "", b"", "MethodNotAllowed", 405),
    ("GET", "/targets", "limit=0", b"", "MalformedInput", 400),
    ("GET", "/targets", "status=gone", b"", "MalformedInput", 400),
    ("GET", "/targets", "submitter=0x12", b"", "MalformedInput", 400),
    ("GET", "/objects/0x01" + "00" * 40, "", b"", "MalformedInput", 400),
    ("GET", "/objects/0x0100", "", b"", "NotFound", 404),
    ("POST", "/epoch/advance", "", b"", "LocalnetOnly", 403),
    ("POST", "/tx", "", b"x" * 101, "RequestTooLarge", 413),
    ("POST", "/faucet", "", b"\xc1", "MalformedInput", 400),
    ("POST", "/faucet", "", encode(FaucetRequest(b"\x02" * 32, 1)), "FaucetRateLimited", 429),
    ("POST", "/tx", "", b"x", "InternalError", 500),
])
def test_every_refusal_is_a_typed_error_with_its_status(method, path, query, body, code, status):
    router = Router("gateway", Handlers(), localnet=False)
    for accept in ("", MSGPACK):
        got, response = answer(router, method, path, body, query, accept=accept)
        assert (got, error_of(response)) == (status, code)
        assert (response.media_type == MSGPACK) == (accept == MSGPACK)
    if status == 429:
        assert response.headers["retry-after"] == "9"


def test_a_localnet_route_answers_on_a_localnet():
    status, response = answer(Router("gateway", Handlers(), localnet=True), "POST", "/epoch/advance")
    assert status == 200 and decode(response.body, EpochReply) == EpochReply(5)
