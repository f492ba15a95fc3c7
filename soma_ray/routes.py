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

from soma_ray.limits import Limit
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode
from soma_ray.protocol.state import (
    ACCOUNT, CHALLENGE, MODEL, STAKED_SOMA, STAKING_POOL, SUBMISSION, TARGET, VALIDATOR,
)
from soma_ray.tickets import TICKET_HEADER, parse_ticket, show_ticket
from soma_ray.protocol.types import (
    Account, Challenge, Checkpoint, Model, StakedSoma, StakingPool, Submission, SystemState, Target,
    Validator,
)
from soma_ray.wire import (
    CHALLENGE_STATUSES, SUBMISSION_STATUSES, ChallengePage, ChallengeView, SubmissionPage, SubmissionView,
    MAX_BATCH, MAX_PAGE, MAX_WAIT_S, STATUSES, Uploaded, CheckpointReply, EpochInfo, EpochReply,
    FaucetRequest, Health, IndexStatus, Leaderboard, ModelManifest, ModelView, NearbyTarget,
    NearestRequest, ScoreRequest, ScoreResponse, TargetPage, TargetView, TicketRequest, UploadTicket,
    json_view, parse_hex,
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

# The limits of each class (soma_ray/limits.py; enforced by serve/router.py for every route of
# the class, per application replica: one replica each, so "all" is every client of the
# network). Per client (the HTTP client's address): requests per window (the burst; refilled
# evenly) and requests in flight; for all clients: requests in flight, and for the faucet
# requests per window too. Over a bound: 429 RateLimited with Retry-After, nothing done.
# The in-flight bounds of all clients keep each application's capacity for what must not
# wait: the gateway's 2,000 request slots are never all long polls (256); the blob store's 64
# hold at most 8 uploads and 32 downloads, the rest left to the in-cluster callers (audits read
# through the deployment handle); public score requests hold at most 8 of the scoring ingress's
# slots, i.e. at most 8 x 16 models = 128 sub-calls, half a model replica's 256 (the in-cluster
# lane, which audits use, has the rest and goes first: docs/scoring.md).
RATE_LIMITS: dict[str, Limit] = {
    READ: Limit(per_client=600, window_s=60, client_concurrent=32, concurrent=1_000),
    SUBMIT: Limit(per_client=300, window_s=60, client_concurrent=16, concurrent=512),
    FAUCET: Limit(per_client=10, window_s=60, client_concurrent=2, concurrent=8, per_window=120),
    LONG_POLL: Limit(per_client=60, window_s=60, client_concurrent=4, concurrent=256),
    UPLOAD: Limit(per_client=60, window_s=60, client_concurrent=4, concurrent=8),
    DOWNLOAD: Limit(per_client=1_200, window_s=60, client_concurrent=16, concurrent=32),
    SCORE: Limit(per_client=60, window_s=60, client_concurrent=2, concurrent=8),
}
# A localnet's: one developer's scripts and tests from one address, so each client may ask ten
# times as often and hold eight times as many requests; the bounds for all clients stay.
LOCALNET_RATE_LIMITS: dict[str, Limit] = {
    name: limit.scaled(rate=10, concurrency=8) for name, limit in RATE_LIMITS.items()}

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
    header: str | None = None  # travels in this request header instead (left out: None)


def _path(name: str, codec: Codec) -> Param:
    return Param(name, codec, in_path=True)


# An upload's ticket, in its header.
TICKET = Codec(parse_ticket, show_ticket)


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
                if not p.in_path and p.header is None and arguments.get(p.name) is not None}

    def headers(self, arguments: dict) -> dict[str, str]:
        return {p.header: p.codec.show(arguments[p.name]) for p in self.params
                if p.header is not None and arguments.get(p.name) is not None}

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
    # One page of a namespace's ids, ascending, after `after` (the SDK follows the pages).
    Route("object_ids", "GET", "/ids/{tag}", list[bytes],
          (_path("tag", hex_bytes("a tag", 1)), Param("limit", integer("limit", 1, MAX_PAGE)),
           Param("after", hex_bytes("after", ID)))),
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
    # Every submission and challenge the chain has held, the closed ones too (the chain deletes
    # them): by miner, target, submission or challenger, in creation order.
    Route("list_submissions", "GET", "/submissions", SubmissionPage,
          (Param("miner", hex_bytes("miner", ID)), Param("target_id", hex_bytes("target_id", ID)),
           Param("status", choice("status", SUBMISSION_STATUSES)), Param("limit", integer("limit", 1, MAX_PAGE)),
           Param("page_token", short_text("page_token")), MIN_SEQUENCE)),
    Route("get_submission", "GET", "/submissions/{submission_id}", SubmissionView,
          (_path("submission_id", hex_bytes("a submission id", ID)), MIN_SEQUENCE)),
    Route("list_challenges", "GET", "/challenges", ChallengePage,
          (Param("submission_id", hex_bytes("submission_id", ID)), Param("challenger", hex_bytes("challenger", ID)),
           Param("target_id", hex_bytes("target_id", ID)), Param("status", choice("status", CHALLENGE_STATUSES)),
           Param("limit", integer("limit", 1, MAX_PAGE)), Param("page_token", short_text("page_token")),
           MIN_SEQUENCE)),
    Route("get_challenge", "GET", "/challenges/{challenge_id}", ChallengeView,
          (_path("challenge_id", hex_bytes("a challenge id", ID)), MIN_SEQUENCE)),
    # ---- the blob store (uploads: soma_ray/tickets.py)
    Route("upload_ticket", "POST", "/ticket", UploadTicket, body=TicketRequest, body_arg="request",
          body_limit=1_024, app="blobs", rate=UPLOAD),
    Route("upload", "PUT", "/{kind}", Uploaded,
          (_path("kind", choice("a blob kind", ("data", "weights"))),
           Param("ticket", TICKET, header=TICKET_HEADER)),
          body=RAW, body_arg="data", body_limit="upload_{kind}", app="blobs", rate=UPLOAD, stream=True),
    Route("get_blob", "GET", "/{checksum}", RAW, (_path("checksum", BLOB_CHECKSUM),),
          app="blobs", rate=DOWNLOAD),
    # ---- the scoring service
    Route("score", "POST", "/score", ScoreResponse, body=ScoreRequest, body_arg="request",
          body_limit="score_request", app="scoring", rate=SCORE),
    # It asks a model replica for its counters: a score request's class, not a read's.
    Route("scoring_health", "GET", "/health", dict, app="scoring", rate=SCORE),
)

ROUTES: dict[str, Route] = {route.name: route for route in _ROUTES}
