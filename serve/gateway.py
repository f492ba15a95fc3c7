"""The network's public HTTP gateway on Ray Serve: the routes of soma_ray/wire.py over the
validators, reached inside the cluster through `actors.ray_transport.RayTransport`.

Every byte from outside is bounded and validated before anything acts on it: bodies are read
with a byte limit (the HTTP proxy sets none), transactions go through the validators' admission
checks, ids are parsed and length-checked. A bad request gets a 4xx carrying its typed error and
changes nothing; only a fault of the network itself is a 5xx.

    serve.run(gateway_app(namespace, prefix, localnet=True), name="gateway", route_prefix="/")
"""
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException

from actors import metrics
from actors.ray_transport import NoValidatorAvailable, RayTransport
from soma_ray.node.target_index import STATUSES
from soma_ray import wire
from soma_ray.epoch_schedule import EpochWaitTimeout
from soma_ray.node.replies import SubmitReply
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.state import ACCOUNT, CHALLENGE, MODEL, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET, VALIDATOR
from soma_ray.protocol.types import (
    Account, Challenge, Checkpoint, Model, StakedSoma, StakingPool, Submission, SystemState, Target,
    Validator,
)

# A batch body is at most this long (a single transaction: the chain's max_tx_bytes).
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Faucet requests one recipient may make per FAUCET_WINDOW_S.
FAUCET_PER_WINDOW = 10
FAUCET_WINDOW_S = 60.0
# JSON views of state objects by their key's tag.
_OBJECT_TYPES = {ACCOUNT: Account, VALIDATOR: Validator, STAKING_POOL: StakingPool,
                 STAKED_SOMA: StakedSoma, MODEL: Model, TARGET: Target, SUBMISSION: Submission,
                 CHALLENGE: Challenge}

app = FastAPI(title="soma-ray gateway", docs_url=None, redoc_url=None, openapi_url=None)
app.add_middleware(metrics.CountRequests)


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return wire.JSON in accept and wire.MSGPACK not in accept


def _reply(request: Request, value, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(wire.json_view(value), status_code=status)
    return Response(encode(value), status_code=status, media_type=wire.MSGPACK)


def _raw_reply(request: Request, raw: bytes, type_) -> Response:
    """Canonical bytes a validator answered, as they are (or their JSON view)."""
    if _wants_json(request):
        return JSONResponse(wire.json_view(decode(raw, type_)))
    return Response(raw, media_type=wire.MSGPACK)


def _refusal(request: Request, error: errors.ProtocolError | errors.ExecutionError) -> Response:
    struct = error if isinstance(error, errors.ExecutionError) else error.to_struct()
    if _wants_json(request):
        return JSONResponse(wire.error_json(struct), status_code=wire.http_status(struct))
    return Response(encode(struct), status_code=wire.http_status(struct), media_type=wire.MSGPACK)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes `limit` bytes (Content-Length is not trusted)."""
    received = bytearray()
    async for chunk in _chunks(request):
        received += chunk
        if len(received) > limit:
            raise errors.TransactionTooLarge(size=len(received), max=limit)
    return bytes(received)


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _min_sequence(request: Request) -> int | None:
    if "min_sequence" not in request.query_params:
        return None
    return _int_param(request, "min_sequence", 0, 2**63 - 1)


def _optional_id(request: Request, name: str) -> bytes | None:
    text = request.query_params.get(name)
    return None if text is None else wire.parse_hex(text, name, 32)


def _int_param(request: Request, name: str, low: float, high: float, kind=int):
    text = request.query_params.get(name)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise errors.MalformedInput(reason=f"query parameter {name} must be a number") from None
    if not low <= value <= high:
        raise errors.MalformedInput(reason=f"query parameter {name} must be in [{low}, {high}]")
    return value


@app.exception_handler(HTTPException)
async def _no_route(request: Request, error: HTTPException) -> Response:
    """Unknown routes and methods answer the typed RouteNotFound, never FastAPI's own body."""
    return _refusal(request, wire.RouteNotFound(method=request.method, path=request.url.path))


@app.exception_handler(RequestValidationError)
async def _bad_parameters(request: Request, error: RequestValidationError) -> Response:
    return _refusal(request, errors.MalformedInput(reason="the request's parameters do not parse"))


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=2_000)
@serve.ingress(app)
class Gateway:
    def __init__(self, namespace: str, prefix: str, localnet: bool,
                 faucet_per_window: int = FAUCET_PER_WINDOW):
        self._where = (namespace, prefix)
        app.state.metric_tags = {"network": metrics.network_label(namespace, prefix)}
        self._transport = RayTransport.connect(namespace, prefix)
        self._localnet = localnet
        self._faucet_per_window = faucet_per_window
        self._faucet_uses: dict[bytes, list[float]] = {}
        self._parameters: Parameters | None = None  # the genesis' (no transaction changes them)

    async def _call(self, method: str, *args):
        """A transport call; when no validator answers, find the network's actors again once
        (validators relaunched since are new actors under the same names)."""
        try:
            return await getattr(self._transport, method)(*args)
        except NoValidatorAvailable:
            self._transport = RayTransport.connect(*self._where)
            return await getattr(self._transport, method)(*args)

    async def _system(self) -> SystemState:
        return decode(await self._call("system_state"), SystemState)

    async def _chain_parameters(self) -> Parameters:
        if self._parameters is None:
            self._parameters = (await self._system()).parameters
        return self._parameters

    async def _tx_limit(self) -> int:
        return (await self._chain_parameters()).max_tx_bytes

    # ------------------------------------------------------------------ transactions

    @app.post("/tx")
    async def submit(self, request: Request) -> Response:
        try:
            data = await _body(request, await self._tx_limit())
            [reply] = await self._call("submit_batch", [data])
        except errors.ProtocolError as error:
            return _refusal(request, error)
        if reply.error is not None:  # refused at admission or dropped unexecuted: nothing happened
            return _refusal(request, reply.error)
        return _reply(request, reply)

    @app.post("/tx/batch")
    async def submit_batch(self, request: Request) -> Response:
        try:
            batch = decode(await _body(request, MAX_BATCH_BYTES), list[bytes])
            if len(batch) > wire.MAX_BATCH:
                raise errors.MalformedInput(reason=f"a batch holds at most {wire.MAX_BATCH} transactions")
            limit = await self._tx_limit()
            # One over the size limit is refused here; the others go on (each has its own reply).
            replies: list[SubmitReply | None] = [
                SubmitReply.refused(errors.TransactionTooLarge(size=len(data), max=limit))
                if len(data) > limit else None for data in batch]
            sent = await self._call("submit_batch", [d for d, r in zip(batch, replies) if r is None])
        except errors.ProtocolError as error:
            return _refusal(request, error)
        answers = iter(sent)
        return _reply(request, [reply if reply is not None else next(answers) for reply in replies])

    @app.post("/faucet")
    async def faucet(self, request: Request) -> Response:
        try:
            # The chain's own switch (a localnet's genesis, or a testnet's `faucet = true`).
            if not (await self._chain_parameters()).faucet_enabled:
                raise errors.FaucetDisabled()
            asked = decode(await _body(request, 1_024), wire.FaucetRequest)
            if len(asked.recipient) != 32 or asked.amount <= 0:
                raise errors.MalformedInput(reason="a faucet request names a 32-byte address and a positive amount")
            self._take_faucet_turn(asked.recipient)
            reply = await self._call("request_faucet", asked.recipient, asked.amount)
        except errors.ProtocolError as error:
            return _refusal(request, error)
        if reply.error is not None:
            return _refusal(request, reply.error)
        return _reply(request, reply)

    def _take_faucet_turn(self, recipient: bytes) -> None:
        """At most `faucet_per_window` requests per recipient in any FAUCET_WINDOW_S."""
        now = time.monotonic()
        recent = [t for t in self._faucet_uses.get(recipient, []) if t > now - FAUCET_WINDOW_S]
        if len(recent) >= self._faucet_per_window:
            raise wire.FaucetRateLimited(retry_after_s=int(recent[0] + FAUCET_WINDOW_S - now) + 1)
        self._faucet_uses[recipient] = [*recent, now]

    # ------------------------------------------------------------------ the target index
    # (every route takes `?min_sequence=`: answered once the index applied that checkpoint, so a
    # client reads what its own transactions did)

    @app.get("/targets")
    async def targets(self, request: Request) -> Response:
        try:
            status = request.query_params.get("status")
            if status is not None and status not in STATUSES:
                raise errors.MalformedInput(reason=f"status is one of {', '.join(STATUSES)}")
            limit = _int_param(request, "limit", 1, wire.MAX_PAGE) if "limit" in request.query_params else 50
            return _reply(request, await self._call(
                "list_targets", status, limit, request.query_params.get("page_token"),
                _optional_id(request, "submitter"), _optional_id(request, "model_id"), _min_sequence(request)))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.get("/targets/{target_id}")
    async def target(self, target_id: str, request: Request) -> Response:
        try:
            found = await self._call("get_target", wire.parse_hex(target_id, "a target id", 32),
                                     _min_sequence(request))
        except errors.ProtocolError as error:
            return _refusal(request, error)
        return _reply(request, found)

    @app.post("/targets/nearest")
    async def nearest(self, request: Request) -> Response:
        try:
            asked = decode(await _body(request, 1 << 20), wire.NearestRequest)
            if not 1 <= asked.k <= wire.MAX_PAGE:
                raise errors.MalformedInput(reason=f"k is 1 to {wire.MAX_PAGE}")
            return _reply(request, await self._call("nearest_targets", asked.embedding, asked.k))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.post("/models/manifests")
    async def manifests(self, request: Request) -> Response:
        try:
            ids = decode(await _body(request, 64 * 1024), list[bytes])
            if any(len(i) != 32 for i in ids):
                raise errors.MalformedInput(reason="model ids are 32 bytes")
            return _reply(request, await self._call("model_manifests", ids, _min_sequence(request)))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.get("/models/active")
    async def active_models(self, request: Request) -> Response:
        try:
            return _reply(request, await self._call("active_models", _min_sequence(request)))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.get("/models/{model_id}")
    async def model(self, model_id: str, request: Request) -> Response:
        try:
            found = await self._call("get_model", wire.parse_hex(model_id, "a model id", 32))
        except errors.ProtocolError as error:
            return _refusal(request, error)
        return _reply(request, found)

    @app.get("/leaderboard")
    async def leaderboard(self, request: Request) -> Response:
        try:
            limit = _int_param(request, "limit", 1, wire.MAX_PAGE) if "limit" in request.query_params else 100
            return _reply(request, await self._call("leaderboard", limit))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.get("/index/status")
    async def index_status(self, request: Request) -> Response:
        try:
            return _reply(request, await self._call("index_status"))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    # ------------------------------------------------------------------ reads

    @app.get("/accounts/{address}")
    async def account(self, address: str, request: Request) -> Response:
        try:
            raw = await self._call("get_account", wire.parse_hex(address, "an address", 32))
        except errors.ProtocolError as error:
            return _refusal(request, error)
        return _raw_reply(request, raw, Account)

    @app.get("/objects/{key}")
    async def object(self, key: str, request: Request) -> Response:
        try:
            parsed = wire.parse_hex(key, "an object key")
            if not 1 <= len(parsed) <= 33:
                raise errors.MalformedInput(reason="an object key is a tag and at most a 32-byte id")
            raw = await self._call("get_object", parsed)
            if raw is None:
                raise wire.NotFound(what=f"object {key}")
        except errors.ProtocolError as error:
            return _refusal(request, error)
        type_ = _OBJECT_TYPES.get(parsed[:1])
        if _wants_json(request) and type_ is None:
            return JSONResponse({"key": key, "bytes": "0x" + raw.hex()})
        return _raw_reply(request, raw, type_)

    @app.get("/ids/{tag}")
    async def ids(self, tag: str, request: Request) -> Response:
        try:
            return _reply(request, await self._call("object_ids", wire.parse_hex(tag, "a tag", 1)))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.get("/system")
    async def system(self, request: Request) -> Response:
        return _raw_reply(request, await self._call("system_state"), SystemState)

    @app.get("/epoch")
    async def epoch(self, request: Request) -> Response:
        return _reply(request, wire.epoch_info(await self._system()))

    @app.get("/epoch/wait")
    async def wait_for_epoch(self, request: Request) -> Response:
        try:
            epoch = _int_param(request, "epoch", 0, 2**63 - 1)
            timeout_s = _int_param(request, "timeout_s", 0, wire.MAX_WAIT_S, kind=float)
            return _reply(request, wire.EpochReply(await self._call("wait_for_epoch", epoch, timeout_s)))
        except EpochWaitTimeout as late:
            return _refusal(request, wire.EpochNotReached(epoch=late.epoch, current=late.current,
                                                          timeout_s=late.timeout_s))
        except errors.ProtocolError as error:
            return _refusal(request, error)

    @app.post("/epoch/advance")
    async def advance_epoch(self, request: Request) -> Response:
        if not self._localnet:
            return _refusal(request, wire.LocalnetOnly(operation="advancing the epoch"))
        return _reply(request, wire.EpochReply(await self._call("advance_epoch")))

    @app.get("/checkpoints/{sequence}")
    async def checkpoint(self, sequence: str, request: Request) -> Response:
        try:
            if sequence != "latest" and not (sequence.isdigit() and len(sequence) <= 19):
                raise errors.MalformedInput(reason="a checkpoint is `latest` or a sequence number")
            found = await self._call("get_checkpoint", None if sequence == "latest" else int(sequence))
            if found is None:
                raise wire.NotFound(what=f"checkpoint {sequence}")
        except errors.ProtocolError as error:
            return _refusal(request, error)
        if _wants_json(request):
            return JSONResponse({"checkpoint": wire.json_view(decode(found[0], Checkpoint)),
                                 "certificate": "0x" + found[1].hex()})
        return _reply(request, wire.CheckpointReply(*found))

    @app.get("/status")
    async def status(self, request: Request) -> Response:
        return _reply(request, await self._call("status"))

    @app.get("/health")
    async def health(self, request: Request) -> Response:
        found = await self._call("status")
        up = sum(s is not None for s in found)
        return _reply(request, wire.Health(ok=up > 0, validators=len(found), validators_up=up,
                                           localnet=self._localnet))


def gateway_app(namespace: str, prefix: str = "", localnet: bool = True,
                faucet_per_window: int = FAUCET_PER_WINDOW):
    """The gateway application: `serve.run(gateway_app(...), name=..., route_prefix="/")`."""
    return Gateway.bind(namespace, prefix, localnet, faucet_per_window)
