"""The network's public surface, declared once: every HTTP route, with the method of
`soma_ray.transport.Transport` it carries, its arguments, its body and the body's limit, its reply,
who may call it and its rate-limit class.

The Serve applications dispatch from this table (serve/router.py) and the SDK's HTTP methods are
made from it (soma_ray/http_transport.py), so a route, its limit and its client method cannot
disagree. A route cannot be declared without a limit on what it reads: a body needs
`body_limit`, a URL argument is parsed by a bounded `Codec`, and a route names its rate class.

    route = ROUTES["list_targets"]          # by the Transport method it carries
    route.url_path({"target_id": b"..."})   # "/targets/0x..."

Paths are below their application's prefix (`APP_PREFIX`, itself below the gateway's URL): the
blob store answers `{gateway}/blobs/{checksum}`. Arguments travel as: path segments, query
parameters (left out: None, the method's own default), or the body: canonical msgpack of the
`body` type (JSON too, with bytes as 0x-hex), whose fields are the method's arguments when it is
a request struct, else the one argument `body_arg`; RAW bodies and replies are bytes as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable

import msgspec

from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.state import (
    ACCOUNT, CHALLENGE, MODEL, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET, VALIDATOR,
)
from soma_ray.protocol.types import (
    Account, Challenge, Checkpoint, Model, StakedSoma, StakingPool, Submission, SystemState, Target,
    Validator,
)
from soma_ray.wire import (
    MAX_BATCH, MAX_PAGE, MAX_WAIT_S, STATUSES, Uploaded, CheckpointReply, EpochInfo, EpochReply,
    FaucetRequest, Health, IndexStatus, Leaderboard, ModelManifest, ModelView, NearbyTarget,
    NearestRequest, ScoreRequest, ScoreResponse, TargetPage, TargetView, json_view, parse_hex,
)

RAW = "raw"  # a body or reply of bytes as they are

# Who may call a route.
PUBLIC = "public"  # anyone
LOCALNET = "localnet"  # anyone, on a localnet only (LocalnetOnly elsewhere)

# Rate-limit classes: what a route costs the network, so that limits apply per class.
READ = "read"  # a read of state or of the index
SUBMIT = "submit"  # transactions into the mempools
FAUCET = "faucet"  # coins out of the emission pool
LONG_POLL = "long_poll"  # holds a request slot until an event (or its timeout)
UPLOAD = "upload"  # bytes into the blob store
DOWNLOAD = "download"  # bytes out of the blob store
SCORE = "score"  # forward passes on the scoring service
RATE_CLASSES = (READ, SUBMIT, FAUCET, LONG_POLL, UPLOAD, DOWNLOAD, SCORE)

APPS = ("gateway", "blobs", "scoring")
# Where each application's routes live, below the gateway's URL.
APP_PREFIX = {"gateway": "", "blobs": "/blobs", "scoring": "/scoring"}
_MAX_TOKEN = 64  # longest page token or path segment of text accepted
U63 = 2**63 - 1


# ----------------------------------------------------------------------------- URL arguments


@dataclass(frozen=True)
class Codec:
    """How one argument travels in a URL: `parse` (the server; MalformedInput on bad text) and
    `show` (the client)."""

    parse: Callable[[str], Any]
    show: Callable[[Any], str]


def hex_bytes(what: str, length: int | None = None, max_length: int | None = None) -> Codec:
    """Bytes as 0x-hex (bare hex accepted): exactly `length` bytes, or 1 to `max_length`."""

    def parse(text: str) -> bytes:
        value = parse_hex(text, what, length)
        if max_length is not None and not 1 <= len(value) <= max_length:
            raise errors.MalformedInput(reason=f"{what} is 1 to {max_length} bytes, got {len(value)}")
        return value

    return Codec(parse, lambda value: "0x" + bytes(value).hex())


def integer(what: str, low: int, high: int) -> Codec:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise errors.MalformedInput(reason=f"{what} must be a whole number")
        return _within(int(text), what, low, high)

    return Codec(parse, str)


def number(what: str, low: float, high: float) -> Codec:
    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 32 else None
        except ValueError:
            value = None
        if value is None or value != value:  # NaN
            raise errors.MalformedInput(reason=f"{what} must be a number")
        return _within(value, what, low, high)

    return Codec(parse, repr)


def choice(what: str, options: tuple[str, ...]) -> Codec:
    def parse(text: str) -> str:
        if text not in options:
            raise errors.MalformedInput(reason=f"{what} is one of {', '.join(options)}")
        return text

    return Codec(parse, str)


def short_text(what: str) -> Codec:
    def parse(text: str) -> str:
        if len(text) > _MAX_TOKEN:
            raise errors.MalformedInput(reason=f"{what} is at most {_MAX_TOKEN} characters")
        return text

    return Codec(parse, str)


def _within(value, what: str, low, high):
    if not low <= value <= high:
        raise errors.MalformedInput(reason=f"{what} must be in [{low}, {high}]")
    return value


def parse_checksum(text: str) -> bytes:
    """A blob's checksum from 64 hex digits (either case); InvalidChecksum otherwise."""
    shown = text[:80]
    if len(text) != 2 * ID:
        raise errors.InvalidChecksum(checksum=shown, reason=f"{len(text)} characters, not {2 * ID} hex digits")
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise errors.InvalidChecksum(checksum=shown, reason="not hex digits")
    return bytes.fromhex(text)


# A blob's name in its URL: bare hex, as the chain's manifests and data URLs write it.
BLOB_CHECKSUM = Codec(parse_checksum, lambda value: bytes(value).hex())


def _sequence_or_latest(text: str) -> int | None:
    return None if text == "latest" else integer("a checkpoint sequence", 0, U63).parse(text)


SEQUENCE_OR_LATEST = Codec(_sequence_or_latest, lambda value: "latest" if value is None else str(value))


@dataclass(frozen=True)
class Param:
    name: str  # the Transport method's parameter
    codec: Codec
    in_path: bool = False
    required: bool = False  # a query parameter that may not be left out


def _path(name: str, codec: Codec) -> Param:
    return Param(name, codec, in_path=True)


ID = 32  # ids and addresses are 32 bytes
MIN_SEQUENCE = Param("min_sequence", integer("min_sequence", 0, U63))


# ----------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    name: str  # the Transport method it carries
    method: str  # GET, POST or PUT (a GET route answers HEAD too where its app says how)
    path: str  # below its app's prefix; "{name}" segments are path parameters
    reply: Any  # the reply's type (msgspec), or RAW
    params: tuple[Param, ...] = ()
    body: Any = None  # None (no body), RAW, a request struct (its fields are arguments) or a type
    body_arg: str | None = None  # the argument a RAW or non-struct body carries
    # Most bytes of the body: an int, or the name of a limit its application supplies (with
    # "{param}" taken from the path: "upload_{kind}").
    body_limit: int | str = 0
    app: str = "gateway"
    access: str = PUBLIC
    rate: str = READ
    missing_ok: bool = False  # "not there" is an answer: 404 NotFound, None for the SDK
    # The body is streamed to the handler (RAW bodies too large to hold: blob uploads) rather
    # than read first; the handler then enforces the limit as the bytes arrive.
    stream: bool = False
    shown: Callable[[Any, dict], Any] | None = None  # a RAW reply's JSON view (reply, arguments)

    def __post_init__(self) -> None:
        if self.app not in APPS or self.access not in (PUBLIC, LOCALNET) or self.rate not in RATE_CLASSES:
            raise ValueError(f"route {self.name}: unknown app, access or rate class")
        if self.body is not None and not self.body_limit:
            raise ValueError(f"route {self.name}: a body needs a declared body_limit")
        if self.body is None and self.body_limit:
            raise ValueError(f"route {self.name}: a body_limit without a body")
        if self.body is not None and self.body_arg is None and not _is_struct(self.body):
            raise ValueError(f"route {self.name}: a body other than a request struct needs body_arg")
        in_path = {segment[1:-1] for segment in self.segments if segment.startswith("{")}
        if in_path != {p.name for p in self.params if p.in_path}:
            raise ValueError(f"route {self.name}: path parameters and the path disagree")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(part for part in self.path.split("/") if part)

    @property
    def arguments(self) -> tuple[str, ...]:
        """The Transport method's parameters this route carries: URL parameters, then the body's."""
        body = (self.body_arg,) if self.body_arg else (
            tuple(self.body.__struct_fields__) if self.body is not None else ())
        return tuple(p.name for p in self.params) + body

    def url_path(self, arguments: dict) -> str:
        """The path (below the gateway's URL) with the path parameters in it."""
        shown = {p.name: p.codec.show(arguments[p.name]) for p in self.params if p.in_path}
        return APP_PREFIX[self.app] + "/" + "/".join(
            shown[s[1:-1]] if s.startswith("{") else s for s in self.segments)

    def query(self, arguments: dict) -> dict[str, str]:
        return {p.name: p.codec.show(arguments[p.name]) for p in self.params
                if not p.in_path and arguments.get(p.name) is not None}

    def limit_name(self, path_arguments: dict) -> str | int:
        return self.body_limit.format(**path_arguments) if isinstance(self.body_limit, str) else self.body_limit


def _is_struct(body: Any) -> bool:
    return isinstance(body, type) and issubclass(body, msgspec.Struct)


# JSON views of the canonical bytes validators answer.
_OBJECT_TYPES = {ACCOUNT: Account, VALIDATOR: Validator, STAKING_POOL: StakingPool,
                 STAKED_SOMA: StakedSoma, MODEL: Model, TARGET: Target, SUBMISSION: Submission,
                 CHALLENGE: Challenge}


def _object_view(raw: bytes, arguments: dict) -> Any:
    type_ = _OBJECT_TYPES.get(arguments["key"][:1])
    if type_ is None:
        return {"key": "0x" + arguments["key"].hex(), "bytes": "0x" + raw.hex()}
    return json_view(decode(raw, type_))


def _checkpoint_view(reply: CheckpointReply, arguments: dict) -> Any:
    return {"checkpoint": json_view(decode(reply.checkpoint, Checkpoint)),
            "certificate": "0x" + reply.certificate.hex()}


def _as(type_) -> Callable[[bytes, dict], Any]:
    return lambda raw, arguments: json_view(decode(raw, type_))


ModelIds = list[Annotated[bytes, msgspec.Meta(min_length=ID, max_length=ID)]]
Batch = Annotated[list[bytes], msgspec.Meta(max_length=MAX_BATCH)]

_ROUTES = (
    # ---- transactions
    Route("submit", "POST", "/tx", SubmitReply, body=RAW, body_arg="tx", body_limit="max_tx_bytes",
          rate=SUBMIT),
    Route("submit_batch", "POST", "/tx/batch", list[SubmitReply], body=Batch, body_arg="batch",
          body_limit=16 * 1024 * 1024, rate=SUBMIT),
    Route("request_faucet", "POST", "/faucet", SubmitReply, body=FaucetRequest, body_limit=1_024,
          rate=FAUCET),
    # ---- chain state (a validator's latest)
    Route("get_account", "GET", "/accounts/{address}", RAW,
          (_path("address", hex_bytes("an address", ID)),), shown=_as(Account)),
    Route("get_object", "GET", "/objects/{key}", RAW,
          (_path("key", hex_bytes("an object key", max_length=ID + 1)),), missing_ok=True,
          shown=_object_view),
    Route("object_ids", "GET", "/ids/{tag}", list[bytes], (_path("tag", hex_bytes("a tag", 1)),)),
    Route("system_state", "GET", "/system", RAW, shown=_as(SystemState)),
    Route("epoch_info", "GET", "/epoch", EpochInfo),
    Route("wait_for_epoch", "GET", "/epoch/wait", EpochReply,
          (Param("epoch", integer("epoch", 0, U63), required=True),
           Param("timeout_s", number("timeout_s", 0, MAX_WAIT_S), required=True)), rate=LONG_POLL),
    Route("advance_epoch", "POST", "/epoch/advance", EpochReply, access=LOCALNET, rate=SUBMIT),
    Route("get_checkpoint", "GET", "/checkpoints/{sequence}", CheckpointReply,
          (_path("sequence", SEQUENCE_OR_LATEST),), missing_ok=True, shown=_checkpoint_view),
    Route("status", "GET", "/status", list[ValidatorStatus | None]),
    Route("health", "GET", "/health", Health),
    # ---- the target index (`min_sequence`: answered once it applied that checkpoint)
    Route("list_targets", "GET", "/targets", TargetPage,
          (Param("status", choice("status", STATUSES)), Param("limit", integer("limit", 1, MAX_PAGE)),
           Param("page_token", short_text("page_token")),
           Param("submitter", hex_bytes("submitter", ID)), Param("model_id", hex_bytes("model_id", ID)),
           MIN_SEQUENCE)),
    Route("get_target", "GET", "/targets/{target_id}", TargetView,
          (_path("target_id", hex_bytes("a target id", ID)), MIN_SEQUENCE)),
    Route("nearest_targets", "POST", "/targets/nearest", list[NearbyTarget], body=NearestRequest,
          body_limit=1 << 20),
    Route("model_manifests", "POST", "/models/manifests", list[ModelManifest], (MIN_SEQUENCE,),
          body=ModelIds, body_arg="model_ids", body_limit=64 * 1024),
    Route("active_models", "GET", "/models/active", list[ModelView], (MIN_SEQUENCE,)),
    Route("get_model", "GET", "/models/{model_id}", ModelView,
          (_path("model_id", hex_bytes("a model id", ID)),)),
    Route("leaderboard", "GET", "/leaderboard", Leaderboard,
          (Param("limit", integer("limit", 1, MAX_PAGE)),)),
    Route("index_status", "GET", "/index/status", IndexStatus),
    # ---- the blob store
    Route("upload", "PUT", "/{kind}", Uploaded, (_path("kind", choice("a blob kind", ("data", "weights"))),),
          body=RAW, body_arg="data", body_limit="upload_{kind}", app="blobs", rate=UPLOAD, stream=True),
    Route("get_blob", "GET", "/{checksum}", RAW, (_path("checksum", BLOB_CHECKSUM),),
          app="blobs", rate=DOWNLOAD),
    # ---- the scoring service
    Route("score", "POST", "/score", ScoreResponse, body=ScoreRequest, body_arg="request",
          body_limit="score_request", app="scoring", rate=SCORE),
    Route("scoring_health", "GET", "/health", dict, app="scoring"),
)

ROUTES: dict[str, Route] = {route.name: route for route in _ROUTES}
