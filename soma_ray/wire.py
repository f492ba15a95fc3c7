"""The gateway's HTTP wire format, shared by the gateway (serve/gateway.py) and the SDK's HTTP
transport (soma_ray/http_transport.py). No Ray, no HTTP library: structs and rules only.

Bodies are canonical msgpack (`application/msgpack`): a signed transaction is posted as the
very bytes that were signed, and replies are the validators' reply structs. A person asking
with `Accept: application/json` (or `?format=json`) gets the same content as JSON, with named
fields and bytes as 0x-hex. Every refused request is a 4xx whose body is the typed error: the
canonical `ExecutionError{code, fields}` in msgpack, or `{"error": CODE, "fields": {...}}`.

    POST /tx               body: signed transaction bytes         -> SubmitReply (4xx if refused)
    POST /tx/batch         body: msgpack list of them             -> list[SubmitReply]
    POST /faucet           body: FaucetRequest (localnet)         -> SubmitReply
    GET  /accounts/{0xaddress}                                    -> Account
    GET  /objects/{0xkey}  a state entry (tag || id)              -> its canonical bytes
    GET  /ids/{0xtag}      ids of one state namespace             -> list[bytes]
    GET  /system                                                  -> SystemState
    GET  /epoch                                                   -> EpochInfo
    GET  /epoch/wait?epoch=N&timeout_s=T                          -> EpochReply
    POST /epoch/advance    (localnet)                             -> EpochReply
    GET  /checkpoints/latest, /checkpoints/{sequence}             -> CheckpointReply
    GET  /status                                                  -> list[ValidatorStatus | None]
    GET  /targets?status=&limit=&page_token=&submitter=&model_id=  -> TargetPage   (the target index;
    GET  /targets/{0xid}                                          -> TargetView    every index route
    POST /targets/nearest  body: NearestRequest                   -> list[NearbyTarget]  takes
    POST /models/manifests body: msgpack list of model ids        -> list[ManifestView]  ?min_sequence=
    GET  /models/active, /models/{0xid}                           -> list[ModelView], ModelView  to
    GET  /leaderboard?limit=                                      -> Leaderboard   read its own
    GET  /index/status                                            -> IndexStatus   writes)
    GET  /health                                                  -> Health
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from soma_ray.protocol import errors
from soma_ray.protocol.encoding import Struct
from soma_ray.protocol.types import WeightsManifest

if TYPE_CHECKING:  # torch: not for the SDK's import
    from soma_ray.model.scoring import ScoreResult
from soma_ray.protocol.epoch import epoch_end_ms

MSGPACK = "application/msgpack"
JSON = "application/json"
# Most transactions one POST /tx/batch carries.
MAX_BATCH = 1_000
# Most items one page of the target index gives.
MAX_PAGE = 1_000
# Longest a request may wait for an epoch (GET /epoch/wait), seconds.
MAX_WAIT_S = 300.0


class FaucetRequest(Struct):
    recipient: bytes
    amount: int


class NearestRequest(Struct):
    embedding: bytes  # little-endian float32
    k: int


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


# The gateway's own refusals (defined and registered with every other typed error).
RouteNotFound, NotFound, LocalnetOnly = errors.RouteNotFound, errors.NotFound, errors.LocalnetOnly
FaucetRateLimited, EpochNotReached = errors.FaucetRateLimited, errors.EpochNotReached

# Refusals that say "later", not "wrong": the client may retry the same request.
_RETRY_LATER = {"MempoolFull", "SenderPoolFull", FaucetRateLimited.__name__}


def http_status(error: errors.ProtocolError | errors.ExecutionError) -> int:
    """The 4xx status of a refusal."""
    if error.code in _RETRY_LATER:
        return 429
    if error.code in (RouteNotFound.__name__, NotFound.__name__, "ObjectNotFound", "ModelHasNoWeights"):
        return 404
    if error.code in (LocalnetOnly.__name__, "FaucetDisabled"):
        return 403
    if error.code == EpochNotReached.__name__:
        return 408
    if error.code in ("TransactionTooLarge", "RequestTooLarge", "DataTooLarge"):
        return 413
    return 400


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


def error_json(error: errors.ExecutionError) -> dict:
    return {"error": error.code, "fields": {name: json_view(value) for name, value in error.fields}}


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


# The scoring service's request and response (serve/scoring.py; `SomaClient.score` sends them).
MAX_SEED = (1 << 63) - 1  # seed + batch index must fit arrgen's u64


class ModelManifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One of the target's models: where its encrypted weights are and how to open them."""

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
    """Score `data` (or the bytes at `data_url`) under every model of `manifests`.

    `target_embedding` is little-endian float32 bytes (or, for JSON, a list of numbers rounded
    to float32). `data_size`, when given with `data_url`, is checked before the download and
    against it. `timeout_s` shortens the service's request timeout (it cannot lengthen it).
    """

    manifests: list[ModelManifest]
    target_embedding: bytes | list[float]
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
