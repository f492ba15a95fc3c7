"""The public surface's wire format: every request and reply struct (the SDK's views included),
the one error encoder and the one status table. Shared by the Serve applications (serve/), the
SDK's transports and the route table (soma_ray/routes.py, which says which route carries what).
No Ray, no HTTP library: structs and rules only.

Bodies are canonical msgpack (`application/msgpack`): a signed transaction is posted as the very
bytes that were signed, and replies are these structs. A person asking with
`Accept: application/json` (or `?format=json`) gets the same content as JSON, with named fields
and bytes as 0x-hex. Every refused request carries its typed error, with the status of
`http_status`: the canonical `ExecutionError{code, fields}` in msgpack, or
`{"error": CODE, "fields": {...}}` in JSON (bytes as 0x-hex, as everywhere).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from soma_ray.protocol import errors
from soma_ray.protocol.encoding import Struct
from soma_ray.protocol.epoch import epoch_end_ms
from soma_ray.protocol.types import WeightsManifest

if TYPE_CHECKING:  # torch: not for the SDK's import
    from soma_ray.model.scoring import ScoreResult

MSGPACK = "application/msgpack"
JSON = "application/json"
# Most transactions one POST /tx/batch carries.
MAX_BATCH = 1_000
# Most items one page of the target index, one nearest query or one leaderboard side holds.
MAX_PAGE = 1_000
# What the index routes answer when no limit is asked for.
DEFAULT_PAGE, DEFAULT_LEADERBOARD = 50, 100
# Longest a request may wait for an epoch (GET /epoch/wait), seconds.
MAX_WAIT_S = 300.0
# The target statuses the index answers (node/target_index.py says how each is derived).
STATUSES = ("open", "expired", "filled", "claimable", "settled")


# ----------------------------------------------------------------------------- requests


class FaucetRequest(Struct):
    recipient: bytes
    amount: int


class NearestRequest(Struct):
    embedding: bytes  # little-endian float32
    k: int


# ----------------------------------------------------------------------------- chain replies


class CheckpointReply(Struct):
    checkpoint: bytes  # canonical Checkpoint
    certificate: bytes  # canonical CommitCertificate


class EpochInfo(Struct):
    epoch: int
    epoch_start_ms: int
    epoch_duration_ms: int
    next_epoch_ms: int  # when the epoch clock asks for the next ChangeEpoch (consensus time)


def epoch_info(system) -> EpochInfo:
    """The EpochInfo of a SystemState."""
    duration = system.parameters.epoch_duration_ms
    return EpochInfo(system.epoch, system.epoch_start_timestamp_ms, duration,
                     epoch_end_ms(system.epoch_start_timestamp_ms, duration))


class EpochReply(Struct):
    epoch: int


class Health(Struct):
    ok: bool
    validators: int
    validators_up: int
    localnet: bool


# ----------------------------------------------------------------------------- the target index


class TargetView(Struct):
    id: bytes
    status: str  # one of STATUSES
    embedding: bytes  # little-endian float32
    model_ids: list[bytes]
    distance_threshold: float  # cosine distance (threshold_fixed / 1e9)
    threshold_fixed: int  # the chain's: a reveal needs cosine_distance_fixed(e, target) <= it
    reward_pool: int  # shannons (0 once settled)
    generation_epoch: int
    bond_amount: int  # the least bond a commit may post (submission_min_bond); see required_bond
    submission_id: bytes | None  # the committed or winning submission
    submitter: bytes | None  # its miner
    winning_model_id: bytes | None  # the model its reveal named
    fill_epoch: int | None
    claimable_epoch: int | None  # fill_epoch + 2
    reveal_deadline_ms: int | None  # a Committed target: the commit's reveal deadline
    settled_epoch: int | None


class TargetPage(Struct):
    targets: list[TargetView]
    next_page_token: str | None  # None: this was the last page


class NearbyTarget(Struct):
    distance: float  # cosine distance (float, off-chain)
    target: TargetView


class ModelView(Struct):
    model_id: bytes
    owner: bytes
    status: str  # the chain's: Created, Pending, Active, Inactive
    embedding: bytes | None  # little-endian float32, once revealed
    stake: int  # its pool's soma_balance (what target selection weighs)
    commission_bps: int
    has_pending_update: bool


class ModelScore(Struct):
    model_id: bytes
    wins: int
    earnings: int  # shannons


class MinerScore(Struct):
    address: bytes
    hits: int
    rewards: int  # shannons


class Leaderboard(Struct):
    models: list[ModelScore]  # by wins, then earnings (both descending), then id
    miners: list[MinerScore]  # by hits, then rewards, then address


# The submissions and challenges index (node/target_index.py): every submission and challenge the
# chain has held, the resolved and closed ones too (the chain deletes those).
SUBMISSION_STATUSES = ("committed", "revealed", "challenged", "claimed", "slashed", "dropped")
CHALLENGE_STATUSES = ("open", "challenger_wins", "miner_wins", "closed")


class SubmissionView(Struct):
    id: bytes
    target_id: bytes
    miner: bytes
    status: str  # one of SUBMISSION_STATUSES
    bond: int  # shannons posted (0 once returned by the claim)
    commit_epoch: int
    model_id: bytes | None  # once revealed
    data_url: str | None
    data_size: int | None
    loss_score: int | None  # the chain's fixed point (loss x LOSS_SCALE)
    distance: int | None  # the chain's fixed point (cosine distance x 1e9)
    closed_epoch: int | None  # when it was claimed, slashed or dropped


class SubmissionPage(Struct):
    submissions: list[SubmissionView]
    next_page_token: str | None


class ChallengeView(Struct):
    id: bytes
    submission_id: bytes
    target_id: bytes
    challenger: bytes
    kind: str  # ScoreFraud or DataFraud
    bond: int
    opened_epoch: int
    status: str  # one of CHALLENGE_STATUSES
    closed_epoch: int | None  # when it was resolved or closed


class ChallengePage(Struct):
    challenges: list[ChallengeView]
    next_page_token: str | None


class IndexStatus(Struct):
    synced_sequence: int | None  # the last checkpoint applied (None: genesis only)
    epoch: int
    state_root: bytes
    targets: int
    counts: list[tuple[str, int]]  # targets per status, in STATUSES order
    error: str | None = None  # why the follower stopped (the actor's), None while it follows



# ----------------------------------------------------------------------------- blobs and scoring

MAX_SEED = (1 << 63) - 1  # seed + batch index must fit arrgen's u64


class Uploaded(Struct):
    """Where an upload is stored: its URL (named by its checksum) and size."""

    url: str
    checksum: bytes  # plain BLAKE2b-256 of the bytes
    size: int


class TicketRequest(Struct):
    """A signed request for an upload ticket (soma_ray/tickets.py says what is signed)."""

    public_key: bytes  # the account's Ed25519 key; the account is its address
    kind: str  # "data" or "weights"
    size: int  # the bytes the upload will carry (at most)
    expires_ms: int  # unix ms: the signature is good until then (at most 10 min ahead)
    nonce: bytes  # 16 random bytes: each request is answered once
    signature: bytes


class UploadTicket(Struct):
    """What the blob store answers a TicketRequest: one upload of at most `max_size` bytes of
    `kind` for `address` until `expires_ms`, sealed by the store's MAC. A PUT carries it in the
    X-Soma-Ticket header (hex of its canonical msgpack)."""

    address: bytes
    kind: str
    max_size: int
    expires_ms: int
    nonce: bytes
    mac: bytes


class ModelManifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One model's weights: where they are and how to open them (the target index answers these;
    a score request names them)."""

    model_id: bytes  # the chain's model id; named in errors only
    url: str
    checksum: bytes  # plain BLAKE2b-256 of the encrypted bytes (WeightsManifest.checksum)
    size: Annotated[int, msgspec.Meta(ge=0)]
    decryption_key: bytes

    @classmethod
    def of(cls, model_id: bytes, manifest: WeightsManifest, key: bytes) -> ModelManifest:
        return cls(model_id=bytes(model_id), url=manifest.url, checksum=bytes(manifest.checksum),
                   size=manifest.size, decryption_key=bytes(key))


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Score `data` (or the bytes at `data_url`) under every model of `model_ids`.

    `model_ids` name models on chain: the scoring service resolves their weights manifests from
    the chain (the target index), so a request names no URL but the data's. `manifests` instead
    gives the manifests themselves: the in-cluster Python path only (tests, benchmarks); the
    public HTTP route refuses a request that carries any. Exactly one of the two is non-empty.

    `target_embedding` is little-endian float32 bytes (or, for JSON, a list of numbers rounded
    to float32). `data_size`, when given with `data_url`, is checked before the download and
    against it. `timeout_s` shortens the service's request timeout (it cannot lengthen it).
    """

    target_embedding: bytes | list[float]
    model_ids: list[bytes] = []
    manifests: list[ModelManifest] = []
    data: bytes | None = None
    data_url: str | None = None
    data_size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)] = 0
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class ScoreResponse(msgspec.Struct, frozen=True):
    """`soma_ray.model.score`'s result: `winner` indexes the request's manifests."""

    winner: int
    loss_score: float  # the winner's loss
    embedding: bytes  # the winner's embedding, little-endian float32 [D]
    distance: float  # cosine distance of the winner's embedding to the target
    losses: list[float]  # one per manifest, in request order

    def embedding_array(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype="<f4").astype(np.float32)

    @classmethod
    def of(cls, result: ScoreResult) -> ScoreResponse:
        return cls(winner=result.winner, loss_score=result.loss,
                   embedding=np.asarray(result.embedding, dtype="<f4").tobytes(),
                   distance=result.distance, losses=list(result.losses))


# ----------------------------------------------------------------------------- errors

# The status of every refusal that is not a plain 400 (anything about the request itself).
STATUS = {
    "RouteNotFound": 404, "NotFound": 404, "ObjectNotFound": 404, "ModelHasNoWeights": 404,
    "BlobNotFound": 404,
    "MethodNotAllowed": 405,
    "LocalnetOnly": 403, "FaucetDisabled": 403, "NotFaucetAuthority": 403,
    "EpochNotReached": 408,
    "TransactionTooLarge": 413, "RequestTooLarge": 413, "DataTooLarge": 413, "BlobTooLarge": 413,
    "ModelUnavailable": 422, "DataUnavailable": 422,
    # An upload without a valid ticket; an account too poor for one; a body that came too slowly.
    "UploadUnauthorized": 401, "AccountUnderfunded": 403, "UploadTooSlow": 408,
    # Refusals that say "later", not "wrong": the client may retry the same request.
    "MempoolFull": 429, "SenderPoolFull": 429, "FaucetRateLimited": 429,
    "MempoolBytesFull": 429, "SenderBytesFull": 429,
    # Fee solvency: 400, not 429 (the same request again cannot pass: only a higher max_fee or
    # a funded account does) nor 402 (unused).
    "FeeBelowBaseFee": 400, "InsufficientBalanceForFees": 400,
    "RateLimited": 429, "UploadQuotaExceeded": 429,
    # The service's own failures, not the request's.
    "BlobCorrupted": 500, "InternalError": 500,
    "ScoringUnavailable": 503, "ScoringTimeout": 504,
}


def http_status(error: errors.ProtocolError | errors.ExecutionError) -> int:
    """The HTTP status of a typed error: 4xx for anything about the request, 5xx only for the
    service's own failures."""
    return STATUS.get(error.code, 400)


def json_view(value: Any) -> Any:
    """`value` as JSON a person reads: structs with their field names, bytes as 0x-hex."""
    if isinstance(value, msgspec.Struct):
        return {name: json_view(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [json_view(item) for item in value]
    if isinstance(value, dict):
        return {str(json_view(key)): json_view(item) for key, item in value.items()}
    return value


def error_struct(error: errors.ProtocolError | errors.ExecutionError) -> errors.ExecutionError:
    return error if isinstance(error, errors.ExecutionError) else error.to_struct()


def error_json(error: errors.ProtocolError | errors.ExecutionError) -> dict:
    """`{"error": CODE, "fields": {...}}`, bytes as 0x-hex."""
    struct = error_struct(error)
    return {"error": struct.code, "fields": {name: json_view(value) for name, value in struct.fields}}


def parse_hex(text: str, what: str, length: int | None = None) -> bytes:
    """0x-hex (or bare hex) from a URL, as bytes; MalformedInput when it is not."""
    digits = text[2:] if text.startswith("0x") else text
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        raise errors.MalformedInput(reason=f"{what} is not hex") from None
    if length is not None and len(value) != length:
        raise errors.MalformedInput(reason=f"{what} is {length} bytes, got {len(value)}")
    return value


def from_json(data: bytes, type_: Any) -> Any:
    """A `type_` from JSON in this surface's format: bytes as 0x-hex (base64, msgspec's own JSON
    form of bytes, is accepted too); MalformedInput when it does not decode."""
    try:
        return msgspec.convert(_unhex(msgspec.json.decode(data), msgspec.inspect.type_info(type_)), type_)
    except (msgspec.DecodeError, msgspec.ValidationError, errors.MalformedInput) as error:
        raise errors.MalformedInput(reason=f"the JSON body does not decode: {error}"[:300]) from None


def _unhex(value: Any, info: Any) -> Any:
    """`value` (decoded JSON) with the 0x-hex strings at bytes positions of `info` as bytes."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.Metadata):
        info = info.type
    if isinstance(value, str) and value.startswith("0x") and _admits_bytes(info):
        return parse_hex(value, "a bytes field")
    if isinstance(value, list) and isinstance(info, (inspect.ListType, inspect.TupleType, inspect.VarTupleType)):
        items = getattr(info, "item_type", None)
        return [_unhex(item, items if items is not None else info.item_types[i]) for i, item in enumerate(value)]
    if isinstance(info, inspect.UnionType):
        for option in info.types:
            if isinstance(value, list) and isinstance(option, inspect.ListType):
                return _unhex(value, option)
            if isinstance(value, dict) and isinstance(option, inspect.StructType):
                return _unhex(value, option)
    if isinstance(value, dict) and isinstance(info, inspect.StructType):
        fields = {field.encode_name: field.type for field in info.fields}
        named = {key: _unhex(item, fields[key]) if key in fields else item for key, item in value.items()}
        if info.array_like:  # the JSON view names the fields of positional structs too
            return [named[name] for name in fields if name in named]
        return named
    return value


def _admits_bytes(info: Any) -> bool:
    inspect = msgspec.inspect
    if isinstance(info, inspect.Metadata):
        info = info.type
    if isinstance(info, inspect.UnionType):
        return any(_admits_bytes(option) for option in info.types)
    return isinstance(info, inspect.BytesType)
