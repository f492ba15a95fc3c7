"""The scoring service: one request scores a piece of data under all of a target's models.

Two Serve deployments make the application `scoring_app(...)` builds:

- `ScoringIngress` (the app's ingress, no CPU reserved): the HTTP routes and the Python path.
  It checks and bounds the request, downloads `data_url` if given, fans the request out as one
  sub-call per model to `ScoringService` (handle calls with `multiplexed_model_id` = the weights
  checksum in hex), retries sub-calls whose replica died, and combines the per-model scores with
  the rule of `soma_ray.model.score` (lowest loss wins, first on ties, a NaN never wins).
- `ScoringService` (the model replicas: a GPU each when the cluster has one, CPU otherwise):
  `@serve.multiplexed` loads weights by checksum (download, size and checksum check, decrypt,
  `load_weights`, all but the download off the event loop) into an LRU bounded by count and
  bytes; `@serve.batch` gathers sub-calls across callers, and the batches waiting for the one
  compute thread merge by (model, seed) into one `score_many` call (`ComputeQueue`).

The fan-out goes to a second deployment rather than back into the first because a request
waiting for its sub-calls holds one of its replica's `max_ongoing_requests` slots: requests and
sub-calls sharing one deployment deadlock once waiting requests fill every slot.

Two lanes. The public one: the HTTP routes (the route table's, soma_ray/routes.py; msgpack, or
JSON when the client asks), where a request names on-chain models by id and the service resolves
their manifests from the chain (`chain`: the network's target index; a request carrying
manifests, and so URLs of weights, is refused), limited per client and for all clients by the
router (rate class "score"). The in-cluster one: `score` on the deployment handle (RayTransport,
hence the audit workers), with manifests or model ids, no per-client limits, and its sub-calls go
before the public's on the model replicas' compute thread (ComputeQueue priorities; a public call
there scores at most PUBLIC_MERGE_BYTES, so an audit waits for little). The public
lane holds at most 8 requests (128 sub-calls), half a model replica's slots, so it cannot fill
what the in-cluster lane needs.

    POST {prefix}/score   ScoreRequest (model_ids) -> ScoreResponse
    GET  {prefix}/health  -> device, replicas, models cached, loads, batches, mean batch size

Errors are the typed errors of soma_ray/protocol/errors.py (4xx for anything about the request),
written as every public route writes them (serve/router.py). In the cluster:
`serve.get_app_handle(name).score.remote(ScoreRequest(...))` (the in-cluster lane) returns a
`ScoreResponse` or raises the same typed errors. docs/scoring.md has the details and figures.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import hmac
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Literal

import msgspec
import numpy as np
from ray import serve

from soma_ray import metrics, wire
from soma_ray.fetch import FETCH_FAILED, fetch_bytes
from soma_ray.model.config import V1Config
from soma_ray.model.encryption import KEY_BYTES
from soma_ray.model.pipeline import download_weights, open_weights
from soma_ray.model.scoring import ModelScore, best_of, score_many
from soma_ray.wire import ModelManifest, ScoreRequest, ScoreResponse
from soma_ray.protocol.errors import (
    DataTooLarge, DataUnavailable, FetchError, FetchTooLarge, MalformedInput, ModelUnavailable,
    ObjectNotFound, ProtocolError, ScoringTimeout, ScoringUnavailable, ZeroEmbedding,
)
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.targets import as_embedding

log = logging.getLogger(__name__)

GIB = 1 << 30
CHECKSUM_BYTES = 32
# A load may run this much past its request's deadline, so that a request out of time fails
# with ScoringTimeout (from the ingress) rather than racing a download timeout; a timed-out
# request cancels its sub-calls anyway.
LOAD_GRACE_S = 1.0


# --- settings -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScoringSettings:
    """Everything both deployments need to know, fixed when the application is built."""

    config: V1Config
    device: str  # "cpu" or "cuda"
    max_models_per_replica: int  # the multiplexed cache's count bound (bytes folded in)
    max_cache_bytes: int
    model_bytes: int  # float32 parameter bytes of one model of `config`
    max_weights_bytes: int  # largest encrypted weights file accepted
    max_submission_bytes: int
    max_models_per_request: int
    max_body_bytes: int
    request_timeout_s: float
    load_timeout_s: float
    max_batch_size: int
    batch_wait_timeout_s: float
    min_replicas: int
    max_replicas: int
    cpus_per_replica: float
    threads_per_replica: int
    sub_call_retries: int
    # Origins ("http://host:port") downloads may reach although their addresses are not public:
    # the network's own blob store (soma_ray/fetch.py refuses every other inward address).
    allowed_origins: tuple[str, ...] = ()
    # A standalone scorer's (`soma start scoring --data-dir DIR`): downloaded (encrypted) weights
    # kept on disk by checksum, at most `weights_cache_bytes` (soma_ray/weights_cache.py).
    weights_cache_dir: str | None = None
    weights_cache_bytes: int = 64 * GIB

    def fetch(self, url: str, max_bytes: int, timeout_s: float):
        return fetch_bytes(url, max_bytes, timeout_s, allowed_origins=self.allowed_origins)

    async def download(self, manifest: ModelManifest, timeout_s: float) -> bytes:
        """A model's encrypted weights: from the disk cache when it holds them (checked), else
        downloaded (and kept there, when there is a cache)."""
        if self.weights_cache_dir is None:
            return await download_weights(manifest, self.fetch, timeout_s)
        from soma_ray.weights_cache import WeightsCache

        cache = WeightsCache(self.weights_cache_dir, self.weights_cache_bytes)
        kept = await asyncio.to_thread(cache.get, manifest.checksum, manifest.size)
        if kept is not None:
            return kept
        encrypted = await download_weights(manifest, self.fetch, timeout_s)
        await asyncio.to_thread(cache.put, manifest.checksum, encrypted)
        return encrypted


def parameter_bytes(config: V1Config) -> int:
    """float32 bytes of one model's parameters (what a loaded model holds)."""
    import torch

    from soma_ray.model.network import V1Model

    with torch.device("meta"):
        return 4 * sum(p.numel() for p in V1Model(config).parameters())


def weights_file_bound(config: V1Config) -> int:
    """A generous bound on an encrypted weights file of `config`: the parameters, a safetensors
    header (names, shapes, offsets, metadata: well under 64 KiB per layer), and the stream's
    17 bytes per MiB message plus its 24-byte header."""
    plain = parameter_bytes(config) + 65_536 * (config.num_layers + 1)
    return plain + 17 * (plain // (1 << 20) + 2) + 24


# --- requests: decoding and checks (pure) ----------------------------------------------------

def decode_request(body: bytes) -> ScoreRequest:
    """A ScoreRequest from its msgpack bytes; MalformedInput otherwise."""
    try:
        return msgspec.msgpack.decode(body, type=ScoreRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedInput(reason=f"bad score request: {exc}") from None


def as_request(request: Any) -> ScoreRequest:
    """The Python path accepts a ScoreRequest, an equivalent dict, or msgpack bytes."""
    if isinstance(request, ScoreRequest):
        return request
    if isinstance(request, (bytes, bytearray, memoryview)):
        return decode_request(bytes(request))
    try:
        return msgspec.convert(request, ScoreRequest)
    except msgspec.ValidationError as exc:
        raise MalformedInput(reason=f"bad score request: {exc}") from None


def target_of(request: ScoreRequest, dim: int) -> np.ndarray:
    """The target embedding as float32 [dim]; the errors `cosine_distance` would raise later."""
    vector = request.target_embedding
    if isinstance(vector, list):
        vector = np.asarray(vector, dtype=np.float32)
    target = as_embedding(vector, dim)
    if not target.any():
        raise ZeroEmbedding()
    return target


def check_request(request: ScoreRequest, settings: ScoringSettings) -> np.ndarray:
    """Every check that needs no download and no chain read; returns the target embedding."""
    if request.model_ids and request.manifests:
        raise MalformedInput(reason="name the models by model_ids or (in the cluster) by manifests, not both")
    count = len(request.model_ids) or len(request.manifests)
    if not 1 <= count <= settings.max_models_per_request:
        raise MalformedInput(
            reason=f"{count} models, a request names 1 to {settings.max_models_per_request}")
    if any(len(model_id) != CHECKSUM_BYTES for model_id in request.model_ids):
        raise MalformedInput(reason="a model id is 32 bytes")
    if (request.data is None) == (request.data_url is None):
        raise MalformedInput(reason="give exactly one of data and data_url")
    limit = settings.max_submission_bytes
    if request.data is not None:
        if not request.data:
            raise MalformedInput(reason="data is empty: scoring needs at least 1 byte")
        if len(request.data) > limit:
            raise DataTooLarge(size=len(request.data), max=limit)
    elif request.data_size is not None:
        if request.data_size > limit:
            raise DataTooLarge(size=request.data_size, max=limit)
        if request.data_size == 0:
            raise MalformedInput(reason="data_size is 0: scoring needs at least 1 byte")
    check_manifests(request.manifests, settings)
    return target_of(request, settings.config.embedding_dim)


def check_manifests(manifests: list[ModelManifest], settings: ScoringSettings) -> None:
    """What a manifest (given, or resolved from the chain) must be before anything is loaded."""
    for m in manifests:
        if len(m.checksum) != CHECKSUM_BYTES:
            raise MalformedInput(reason=f"checksum of {len(m.checksum)} bytes, not 32")
        if len(m.decryption_key) != KEY_BYTES:
            raise MalformedInput(reason=f"decryption_key of {len(m.decryption_key)} bytes, "
                                        f"not {KEY_BYTES}")
        if m.size > settings.max_weights_bytes:
            raise ModelUnavailable(
                model_id=m.model_id, stage="size",
                reason=f"the manifest declares {m.size} bytes, weights of this network's "
                       f"config are at most {settings.max_weights_bytes}")


def effective_timeout(request: ScoreRequest, settings: ScoringSettings) -> float:
    if request.timeout_s is None:
        return settings.request_timeout_s
    return min(request.timeout_s, settings.request_timeout_s)


# --- weights (sync, run off the event loop) --------------------------------------------------

@dataclasses.dataclass(eq=False)
class LoadedModel:
    """A model in the replica's cache, with what identifies the weights it came from."""

    model: Any  # V1Model
    checksum: bytes
    size: int
    key_digest: bytes
    on_evict: Callable[[bytes], None] | None = None

    def __del__(self) -> None:
        # Serve calls this when its LRU evicts the model (and Python again at collection). It
        # only reports: a batch may still be using the model, which is freed with the last
        # reference to it.
        callback, self.on_evict = self.on_evict, None
        if callback is not None:
            callback(self.checksum)

    def check(self, manifest: ModelManifest) -> None:
        """Refuse a manifest these weights would not load under: same checksum (the cache key)
        but another size or key. A key other than the one that authenticated these exact bytes
        cannot decrypt them (authenticated encryption), so refusing it is what a fresh load
        would do; the request's answer never depends on what the cache holds."""
        if manifest.size != self.size:
            raise ModelUnavailable(
                model_id=manifest.model_id, stage="size",
                reason=f"the weights with this checksum are {self.size} bytes, "
                       f"the manifest says {manifest.size}")
        if not hmac.compare_digest(_key_digest(manifest.decryption_key), self.key_digest):
            raise ModelUnavailable(
                model_id=manifest.model_id, stage="decrypt",
                reason="the key does not decrypt these weights")


def _key_digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=32).digest()


def open_loaded(manifest: ModelManifest, encrypted: bytes, config: V1Config, device: str = "cpu") -> LoadedModel:
    """Downloaded weights checked, decrypted and loaded (soma_ray.model.pipeline), for the cache."""
    return LoadedModel(open_weights(manifest, encrypted, config, device), bytes(manifest.checksum),
                       manifest.size, _key_digest(manifest.decryption_key))


# --- the model replicas ----------------------------------------------------------------------

# The manifest and deadline of the sub-call asking for a load. Serve's multiplexed loader gets
# only the model id; it runs in the asking sub-call's task, so it sees that sub-call's context.
_LOADING: contextvars.ContextVar[tuple[ModelManifest, float] | None] = contextvars.ContextVar(
    "soma_scoring_loading", default=None)


# Most data one call of the public lane scores on a model replica (docs/scoring.md).
PUBLIC_MERGE_BYTES = 32 * 1024


def _bytes(items: list[bytes]) -> int:
    return sum(len(item) for item in items)


class ComputeQueue:
    """One compute thread; the groups waiting for it merge by (model, seed, priority) into one call.

    `score(model, items, seed, priority)` returns `run(model, items, seed)`'s results for
    exactly these items: while a call runs, later groups for the same model and seed queue up,
    and the next call scores all of them at once (score_many's result per item does not depend
    on what else is in the call). The highest priority waiting goes next (the in-cluster lane,
    which audits use, over the public's), oldest first within a priority.

    A call of a lower priority than the highest (the public's) merges groups only up to
    `low_merge_bytes` of data (always at least one group): the in-cluster lane waits for at most
    that call, never for a merge of every public request waiting (8 x 1 MiB would be minutes on
    a CPU)."""

    def __init__(self, run: Callable[[Any, list[bytes], int], list],
                 low_merge_bytes: int = PUBLIC_MERGE_BYTES) -> None:
        self._run = run
        self._low_merge_bytes = low_merge_bytes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._waiting: dict[tuple[int, int, int], tuple[Any, list[tuple[list[bytes], asyncio.Future]]]] = {}
        self._draining = False

    async def score(self, model, items: list[bytes], seed: int, priority: int = 0) -> list:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((id(model), seed, priority), (model, []))[1].append((items, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                key = max(self._waiting, key=lambda waiting: waiting[2])  # the first of the highest
                model, groups = self._waiting.pop(key)
                if key[2] < IN_CLUSTER:  # a public call: bounded, the rest waits its turn
                    take, size = 0, 0
                    while take < len(groups) and (take == 0 or size + _bytes(groups[take][0]) <= self._low_merge_bytes):
                        size += _bytes(groups[take][0])
                        take += 1
                    if take < len(groups):
                        self._waiting[key] = (model, groups[take:])  # behind any other waiting key
                        groups = groups[:take]
                merged = [item for items, _ in groups for item in items]
                try:
                    scores = await loop.run_in_executor(self._thread, self._run, model, merged, key[1])
                except Exception as exc:  # noqa: BLE001 - every merged caller gets it
                    scores = [exc] * len(merged)
                start = 0
                for items, future in groups:
                    part, start = scores[start:start + len(items)], start + len(items)
                    if future.done():  # its caller timed out or was cancelled
                        continue
                    failed = next((s for s in part if isinstance(s, Exception)), None)
                    if failed is None:
                        future.set_result(part)
                    else:
                        future.set_exception(failed)
        finally:
            self._draining = False


class ScoringService:
    """Model replicas: multiplexed by weights checksum, batched across callers.

    A plain class, made a deployment by scoring_app (so Ray pickles it by reference and the
    replica imports this module, context variable included)."""

    def __init__(self, settings: ScoringSettings) -> None:
        import ray
        import torch

        self._settings = settings
        if settings.device == "cpu":
            torch.set_num_threads(settings.threads_per_replica)

        async def load_model_by_checksum(model_id: str) -> LoadedModel:
            return await self._load(model_id)

        # Wired here, not as a class decorator, so the count bound is the deploy-time one.
        self._get_model = serve.multiplexed(
            max_num_models_per_replica=settings.max_models_per_replica)(load_model_by_checksum)
        self._score_batch.set_max_batch_size(settings.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._queue = ComputeQueue(self._timed_score_many)
        self._cached: dict[bytes, int] = {}  # checksum -> encrypted size, of models held
        self._loads = self._load_failures = self._batches = self._batched_items = 0
        self._batches_running = 0
        self._compute_s = 0.0  # seconds inside score_many
        self._snapshots = 0
        context = ray.get_runtime_context()
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._metric_tags = {"app": serve.get_replica_context().app_name}
        self._actor_name = context.get_actor_name()
        self._actor_id = context.get_actor_id()

    async def _load(self, model_id: str) -> LoadedModel:
        pending = _LOADING.get()
        if pending is None or pending[0].checksum.hex() != model_id:
            raise RuntimeError(f"load of {model_id} outside a score_model call")
        manifest, deadline = pending
        timeout = max(0.001, min(self._settings.load_timeout_s, deadline - time.monotonic()))
        try:
            encrypted = await self._settings.download(manifest, timeout)
            loaded = await asyncio.to_thread(
                open_loaded, manifest, encrypted, self._settings.config, self._settings.device)
        except ModelUnavailable:
            self._load_failures += 1
            raise
        self._loads += 1
        self._cached[loaded.checksum] = loaded.size
        loaded.on_evict = self._evicted
        return loaded

    def _evicted(self, checksum: bytes) -> None:
        self._cached.pop(checksum, None)

    async def score_model(self, manifest: ModelManifest, data: bytes, seed: int,
                          budget_s: float, priority: int = 0) -> tuple[ModelScore, dict]:
        """Score `data` under one model (the caller's multiplexed_model_id = its checksum);
        `priority`: the lane's (IN_CLUSTER goes before PUBLIC on the compute thread)."""
        model_id = serve.get_multiplexed_model_id()
        if model_id != manifest.checksum.hex():
            raise MalformedInput(reason="multiplexed_model_id must be the manifest checksum hex")
        token = _LOADING.set((manifest, time.monotonic() + budget_s))
        metrics.WEIGHTS_CACHE.record(1, {**self._metric_tags, "result": "hit" if manifest.checksum in self._cached else "miss"})
        try:
            loaded = await self._get_model(model_id)
        finally:
            _LOADING.reset(token)
        loaded.check(manifest)
        result = await self._score_batch(loaded, data, seed, priority)
        if isinstance(result, BaseException):
            raise result
        return result, self.stats()

    # Serve forms a batch as soon as its wait ends, whether or not the compute thread is free:
    # under load the batches it forms are small and then wait. So every formed batch enters at
    # once (max_concurrent_batches is generous; max_ongoing_requests bounds the items) and
    # ComputeQueue merges those waiting for one model into one score_many when the thread frees.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, max_concurrent_batches=64)
    async def _score_batch(self, models: list[LoadedModel], items: list[bytes],
                           seeds: list[int], priorities: list[int]) -> list[ModelScore | Exception]:
        """One Serve batch (Serve splits a batch by model id; grouped again here by model, seed
        and priority, so a mixed batch would be right too). A group that fails gets its error,
        the others their scores."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (loaded, seed, priority) in enumerate(zip(models, seeds, priorities)):
            groups.setdefault((id(loaded), seed, priority), []).append(i)
        results: list[ModelScore | Exception] = [None] * len(items)  # type: ignore[list-item]
        self._batches_running += 1
        try:
            outcomes = await asyncio.gather(
                *(self._queue.score(models[rows[0]].model, [items[i] for i in rows], seed, priority)
                  for (_, seed, priority), rows in groups.items()),
                return_exceptions=True)
        finally:
            self._batches_running -= 1
        for rows, outcome in zip(groups.values(), outcomes):
            for k, i in enumerate(rows):
                results[i] = outcome if isinstance(outcome, BaseException) else outcome[k]
        return results

    def _timed_score_many(self, model, items: list[bytes], seed: int) -> list[ModelScore]:
        start = time.perf_counter()
        metrics.SCORING_BATCH_SIZE.record(len(items), self._metric_tags)
        try:
            return score_many(model, items, seed)
        finally:
            self._compute_s += time.perf_counter() - start
            self._batches += 1
            self._batched_items += len(items)

    def stats(self) -> dict:
        """This replica's counters (the ingress aggregates them for /health)."""
        self._snapshots += 1
        return {
            "replica": self._replica,
            "snapshot": self._snapshots,  # answers may arrive out of order: the latest counts
            "actor_name": self._actor_name,
            "actor_id": self._actor_id,
            "device": self._settings.device,
            "models_cached": len(self._cached),
            "cached_bytes": len(self._cached) * self._settings.model_bytes,
            "loads": self._loads,
            "load_failures": self._load_failures,
            "batches": self._batches,
            "batched_items": self._batched_items,
            "batches_running": self._batches_running,
            "compute_s": self._compute_s,
        }


# --- the ingress -----------------------------------------------------------------------------

# The two lanes of a request, as sub-call priorities on the model replicas' compute thread.
PUBLIC, IN_CLUSTER = 0, 1


class StaticManifests:
    """Model ids resolved among manifests fixed when the application is built: a scoring
    service for known models (tests, benchmarks, one's own models)."""

    def __init__(self, manifests: list[ModelManifest]) -> None:
        self._by_id = {bytes(m.model_id): m for m in manifests}

    async def model_manifests(self, model_ids: list[bytes], min_sequence: int | None = None) -> list[ModelManifest]:
        missing = next((i for i in model_ids if bytes(i) not in self._by_id), None)
        if missing is not None:
            raise ObjectNotFound(kind="model", id=bytes(missing))
        return [self._by_id[bytes(i)] for i in model_ids]


def connect_chain(chain: Any):
    """What resolves model ids: (namespace, prefix) of a network in this Ray cluster (its target
    index, through RayTransport), a gateway's URL (HttpTransport), or an object with
    `model_manifests` (StaticManifests)."""
    if isinstance(chain, (tuple, list)):
        from soma_ray.ray_transport import RayTransport

        return RayTransport.connect(*chain)
    if isinstance(chain, str):
        from soma_ray.http_transport import HttpTransport

        return HttpTransport(chain)
    return chain


class ScoringIngress:
    """HTTP routes and the Python path; fans a request out to ScoringService.

    Two lanes. The Python path (`score` on the deployment handle: RayTransport, hence the audit
    workers) is the in-cluster lane: manifests or model ids, no per-client limits, and its
    sub-calls go first on the model replicas. The HTTP route (`PublicScoring`) is the public
    lane: model ids only, resolved from the chain; limited per client and for all clients by
    the router (rate class "score": at most 8 requests in flight, i.e. 128 sub-calls, half a
    model replica's slots), so it cannot fill what the in-cluster lane needs."""

    def __init__(self, scorer, settings: ScoringSettings, chain: Any = None, limits: dict | None = None,
                 trusted_proxies: tuple[str, ...] = ()) -> None:
        self._scorer = scorer
        self._settings = settings
        self._chain_source = chain
        self._chain: Any = None
        self._connecting: asyncio.Lock | None = None
        self._limits = limits
        self._trusted_proxies = tuple(trusted_proxies)
        self._replicas: dict[str, dict] = {}  # latest stats of each scorer replica heard from
        self._requests = self._failures = self._retried = 0
        self._metric_tags = {"app": serve.get_replica_context().app_name}
        self._router = None  # made on the first HTTP request

    async def score(self, request: Any) -> ScoreResponse:
        """Score one request (the in-cluster lane); raises the typed errors of the scoring
        service (soma_ray.protocol.errors: ModelUnavailable, DataUnavailable, ScoringTimeout, ...)."""
        return await self.score_in_lane(as_request(request), IN_CLUSTER)

    async def score_in_lane(self, request: ScoreRequest, lane: int) -> ScoreResponse:
        self._requests += 1
        started = time.monotonic()
        try:
            response = await self._score(request, lane)
        except BaseException:
            self._failures += 1
            metrics.SCORING_SECONDS.record(time.monotonic() - started, {**self._metric_tags, "outcome": "error"})
            raise
        metrics.SCORING_SECONDS.record(time.monotonic() - started, {**self._metric_tags, "outcome": "ok"})
        return response

    async def _resolve(self, model_ids: list[bytes]) -> list[ModelManifest]:
        """The manifests of on-chain models (ObjectNotFound, ModelHasNoWeights: 404)."""
        if self._chain is None:
            if self._chain_source is None:
                raise ScoringUnavailable(reason="this scoring service resolves no model ids (it follows no chain)")
            self._connecting = self._connecting or asyncio.Lock()
            async with self._connecting:  # connected once, however many ask at once
                if self._chain is None:
                    self._chain = await asyncio.to_thread(connect_chain, self._chain_source)
        try:
            manifests = await self._chain.model_manifests([bytes(i) for i in model_ids], None)
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - the chain's reader failed, not the request
            log.warning("resolving model ids failed: %r", exc)
            raise ScoringUnavailable(reason="the chain's model manifests cannot be read now") from None
        check_manifests(manifests, self._settings)
        return manifests

    async def _score(self, request: ScoreRequest, lane: int) -> ScoreResponse:
        target = check_request(request, self._settings)
        timeout = effective_timeout(request, self._settings)
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                manifests = request.manifests or await self._resolve(request.model_ids)
                data = request.data if request.data is not None else await self._fetch_data(
                    request, deadline)
                outcomes = await asyncio.gather(
                    *(self._score_one(m, data, request.seed, deadline, lane) for m in manifests),
                    return_exceptions=True)
        except TimeoutError:
            raise ScoringTimeout(timeout_s=timeout) from None
        for outcome in outcomes:  # the first failing model, in request order
            if isinstance(outcome, BaseException):
                raise outcome
        return ScoreResponse.of(best_of(outcomes, target))

    async def _fetch_data(self, request: ScoreRequest, deadline: float) -> bytes:
        limit = self._settings.max_submission_bytes
        url = request.data_url
        try:
            data = await self._settings.fetch(url, limit, max(0.001, deadline - time.monotonic()))
        except FetchTooLarge as exc:
            raise DataTooLarge(size=exc.size, max=limit) from None
        except FetchError as exc:
            raise DataUnavailable(url=url, reason=exc.reason) from None
        if request.data_size is not None and len(data) != request.data_size:
            # Not the size: a reply must say nothing about what a URL holds (fetch.py).
            raise DataUnavailable(url=url, reason=FETCH_FAILED)
        if not data:
            raise MalformedInput(reason="data is empty: scoring needs at least 1 byte")
        return data

    async def _score_one(self, manifest: ModelManifest, data: bytes, seed: int,
                         deadline: float, lane: int = IN_CLUSTER) -> ModelScore:
        """One sub-call; sent again (to a live replica) when its replica dies under it."""
        from ray.exceptions import RayActorError, RayTaskError

        scorer = self._scorer.options(multiplexed_model_id=manifest.checksum.hex())
        delay = 0.1
        for attempt in itertools.count():
            budget = max(0.0, deadline - time.monotonic()) + LOAD_GRACE_S
            response = scorer.score_model.remote(manifest, data, seed, budget, lane)
            try:
                result, stats = await response
            except asyncio.CancelledError:
                response.cancel()
                raise
            except RayActorError as exc:
                if attempt >= self._settings.sub_call_retries:
                    raise ScoringUnavailable(
                        reason=f"a model replica failed {attempt + 1} times "
                               f"({type(exc).__name__})") from None
                log.warning("scoring sub-call for %s lost its replica (%s), retrying",
                            manifest.checksum.hex(), type(exc).__name__)
                self._retried += 1
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
                continue
            except RayTaskError as exc:
                if isinstance(exc.cause, ProtocolError):
                    raise exc.cause from None
                raise
            self._note(stats)
            return result
        raise AssertionError("unreachable")

    def _note(self, stats: dict) -> None:
        known = self._replicas.get(stats["replica"])
        if known is None or stats["snapshot"] > known["snapshot"]:
            self._replicas[stats["replica"]] = stats

    async def scoring_health(self) -> dict:
        """GET {prefix}/health: device, replicas and counters (each scorer replica as it last reported)."""
        try:
            self._note(await asyncio.wait_for(self._scorer.stats.remote(), timeout=10))
        except Exception as exc:  # noqa: BLE001 - health reports what it can
            log.warning("scoring health: no answer from a model replica (%s)", exc)
        replicas = list(self._replicas.values())
        batches = sum(r["batches"] for r in replicas)
        items = sum(r["batched_items"] for r in replicas)
        s = self._settings
        return {
            "device": s.device,
            "replicas": len(replicas),
            "models_cached": sum(r["models_cached"] for r in replicas),
            "cached_bytes": sum(r["cached_bytes"] for r in replicas),
            "loads": sum(r["loads"] for r in replicas),
            "load_failures": sum(r["load_failures"] for r in replicas),
            "batches": batches,
            "mean_batch_size": items / batches if batches else 0.0,
            "compute_s": sum(r["compute_s"] for r in replicas),
            "requests": self._requests,
            "failed_requests": self._failures,
            "retried_sub_calls": self._retried,
            "max_models_per_replica": s.max_models_per_replica,
            "max_cache_bytes": s.max_cache_bytes,
            "model_bytes": s.model_bytes,
            "embedding_dim": s.config.embedding_dim,
            "max_seq_len": s.config.max_seq_len,
        }

    async def __call__(self, http_request) -> Any:
        """POST {prefix}/score, GET {prefix}/health: the route table's scoring routes (the
        public lane)."""
        from serve.router import Router

        if self._router is None:
            self._router = Router("scoring", PublicScoring(self), limits=self._limits,
                                  trusted_proxies=self._trusted_proxies)
        return await self._router.handle(http_request)


class PublicScoring:
    """The scoring routes over HTTP: a request names on-chain models by id, never a manifest
    (nor so any URL of weights); the router has counted it against the "score" limits."""

    def __init__(self, ingress: ScoringIngress) -> None:
        self._ingress = ingress

    async def body_limit(self, name: str) -> int:
        """The one limit the scoring routes declare: a score request's body."""
        return self._ingress._settings.max_body_bytes

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        if request.manifests:
            raise MalformedInput(reason="a score request names on-chain models by model_ids; the service "
                                        "resolves their weights from the chain (manifests are refused)")
        return await self._ingress.score_in_lane(request, PUBLIC)

    async def scoring_health(self) -> dict:
        return await self._ingress.scoring_health()


# --- the application -------------------------------------------------------------------------

def choose_device(device: Literal["auto", "cpu", "cuda"] = "auto",
                  resources: dict | None = None) -> str:
    """"cuda" when asked for or ("auto") when the cluster has a GPU, else "cpu".

    A replica asking for a GPU the cluster lacks would wait forever with no error, so "cuda"
    on a cluster without one is refused here. `resources` defaults to ray.cluster_resources()
    (Ray must then be connected).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cpu":
        return "cpu"
    if resources is None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("device='auto'/'cuda' reads the cluster's resources: "
                               "connect to Ray first (ray.init) or pass device='cpu'")
        resources = ray.cluster_resources()
    has_gpu = resources.get("GPU", 0) >= 1
    if device == "cuda" and not has_gpu:
        raise ValueError("device='cuda' but the cluster has no GPU")
    return "cuda" if has_gpu else "cpu"


def scoring_settings(config: V1Config | None = None, *,
                     device: Literal["auto", "cpu", "cuda"] = "auto",
                     max_models_per_replica: int = 8,
                     max_cache_bytes: int = 16 * GIB,
                     max_submission_bytes: int = Parameters().max_submission_bytes,
                     max_models_per_request: int = 16,
                     max_batch_size: int = 16,
                     batch_wait_timeout_s: float = 0.005,
                     request_timeout_s: float = 120.0,
                     load_timeout_s: float = 600.0,
                     min_replicas: int = 1,
                     max_replicas: int | None = None,
                     cpus_per_replica: float = 1,
                     sub_call_retries: int = 8,
                     allowed_origins: tuple[str, ...] = (),
                     weights_cache_dir: str | None = None,
                     weights_cache_bytes: int = 64 * GIB,
                     resources: dict | None = None) -> ScoringSettings:
    """The settings `scoring_app` deploys with (see there); computed, not deployed.

    `resources` stands for ray.cluster_resources() (read when it is None and Ray is connected).
    """
    import ray

    config = config or V1Config.small()
    chosen = choose_device(device, resources)
    if resources is None:
        resources = ray.cluster_resources() if ray.is_initialized() else {}
    model_bytes = parameter_bytes(config)
    by_bytes = max_cache_bytes // model_bytes
    if by_bytes < 1:
        raise ValueError(f"max_cache_bytes {max_cache_bytes} holds no model of {model_bytes} bytes")
    if max_models_per_replica < 1 or max_batch_size < 1 or min_replicas < 1:
        raise ValueError("max_models_per_replica, max_batch_size and min_replicas must be >= 1")
    if max_replicas is None:
        if chosen == "cuda":
            max_replicas = max(1, int(resources.get("GPU", 1)))
        else:
            cpus = resources.get("CPU", cpus_per_replica)
            max_replicas = max(1, min(2, int(cpus // max(cpus_per_replica, 1e-9))))
    return ScoringSettings(
        config=config,
        device=chosen,
        max_models_per_replica=min(max_models_per_replica, by_bytes),
        max_cache_bytes=max_cache_bytes,
        model_bytes=model_bytes,
        max_weights_bytes=weights_file_bound(config),
        max_submission_bytes=max_submission_bytes,
        max_models_per_request=max_models_per_request,
        # The body holds the data and the manifests (URL, ids, key): 4 KiB each is generous.
        max_body_bytes=max_submission_bytes + 4096 * max_models_per_request + 65_536,
        request_timeout_s=request_timeout_s,
        load_timeout_s=load_timeout_s,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        min_replicas=min_replicas,
        max_replicas=max(max_replicas, min_replicas),
        cpus_per_replica=cpus_per_replica,
        threads_per_replica=max(1, int(cpus_per_replica)),
        sub_call_retries=sub_call_retries,
        allowed_origins=tuple(allowed_origins),
        weights_cache_dir=weights_cache_dir,
        weights_cache_bytes=weights_cache_bytes,
    )


def scoring_app(config: V1Config | None = None, *,
                device: Literal["auto", "cpu", "cuda"] = "auto", chain: Any = None,
                limits: dict | None = None, trusted_proxies: tuple[str, ...] = (), **options: Any):
    """The scoring application, for `serve.run(app, name=..., route_prefix="/scoring")`.

    chain: what resolves the model ids of a request (connect_chain): (namespace, prefix) of the
      network in this cluster (the launcher's), a gateway URL (a standalone service scoring a
      network's models), or StaticManifests([...]); None: only the in-cluster path with
      manifests works, a request by model ids is ScoringUnavailable.
    limits, trusted_proxies: the public route's (serve/router.py; soma_ray.routes.RATE_LIMITS).

    config: the network's model size (default V1Config.small(), the localnet's); weights of any
      other size fail to load (ModelUnavailable, stage "load").
    device: see choose_device; chosen now, from the cluster this process is connected to.
    options (scoring_settings' keywords):
      max_models_per_replica (8), max_cache_bytes (16 GiB): the cache bounds of each replica.
        Every model of a network has the same size, so the byte bound is a count: the
        multiplexed cache holds min(max_models_per_replica, max_cache_bytes // model bytes).
      max_submission_bytes (the chain's, 1 MiB), max_models_per_request (16),
      max_batch_size (16), batch_wait_timeout_s (5 ms), request_timeout_s (120),
      load_timeout_s (600): one download + decrypt + load,
      min_replicas (1), max_replicas (one per GPU; on CPU up to 2 within the cluster's CPUs),
      cpus_per_replica (1; CPU replicas run that many torch threads),
      sub_call_retries (8): sends of a sub-call whose replica died,
      allowed_origins (none): origins downloads may reach on inward addresses (the network's
        public URL, where its blob store is; soma_ray/fetch.py refuses every other).
    """
    settings = scoring_settings(config, device=device, **options)
    actor_options: dict[str, Any] = {"num_cpus": settings.cpus_per_replica}
    if settings.device == "cuda":
        actor_options["num_gpus"] = 1
    scorer = serve.deployment(ScoringService).options(
        ray_actor_options=actor_options,
        # A line per sub-call (k per request) is noise next to the ingress's line per request.
        logging_config={"enable_access_log": False},
        # At least max_batch_size x max_concurrent_batches (1), and far more: sub-calls wait
        # in the replica's batch queue (cheap) instead of at the caller's router, which probes
        # and backs off from a full replica; at 2 x max_batch_size, 192 concurrent sub-calls
        # took 3x longer and batches averaged 1.4 items.
        max_ongoing_requests=16 * settings.max_batch_size,
        autoscaling_config={
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.max_batch_size,
        },
    ).bind(settings)
    return serve.deployment(ScoringIngress).options(
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
        num_replicas=1,  # the public lane's limits are its memory
    ).bind(scorer, settings, chain, limits, tuple(trusted_proxies))
