"""The scoring service on the shared Ray: exact scores through Serve, the cache, bad weights,
HTTP errors, timeouts, and a model replica killed mid-batch.

Weights and data come from a small HTTP server this module starts on 127.0.0.1; the expected
numbers are `soma_ray.model.score` run in this process on the same decrypted weights. The Python
path (the deployment handle) takes manifests; the public HTTP route takes model ids only, which
this app resolves among the manifests it was built with (StaticManifests; a network's app reads
them from the chain).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.server
import threading
import time

import msgspec
import numpy as np
import pytest
import requests
import torch

from soma_ray.protocol.errors import DataUnavailable, ModelUnavailable, ScoringTimeout
from soma_ray.wire import from_json
from serve.scoring import ModelManifest, ScoreRequest, ScoreResponse, StaticManifests, scoring_app
from soma_ray.model import (
    V1Config,
    V1Model,
    encrypt_weights,
    load_weights,
    save_weights,
    score,
    weights_manifest,
)

pytestmark = pytest.mark.ray

CFG = V1Config(embedding_dim=32, num_layers=1, num_heads=2, pwff_hidden_dim=64, max_seq_len=64)
S = CFG.max_seq_len
APP, PREFIX = "scoring-test", "/scoring-test"
MAX_DATA = 64 * 1024
DEADLINE_S = 120


class FileServer:
    """GET path -> bytes; `stall` paths answer only after a delay; every GET is counted."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.stall: dict[str, float] = {}
        self.hits: collections.Counter = collections.Counter()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] += 1
                time.sleep(owner.stall.get(self.path, 0.0))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def put(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclasses.dataclass
class Weights:
    manifest: ModelManifest
    model: V1Model  # the same file, decrypted and loaded in this process
    encrypted: bytes


@dataclasses.dataclass
class Env:
    url: str  # the app's HTTP prefix
    handle: object
    server: FileServer
    good: list[Weights]
    tmp: object
    bad_config: V1Config


def _publish(server: FileServer, tmp, name: str, model: V1Model, config: V1Config) -> Weights:
    plain, sealed = tmp / f"{name}.safetensors", tmp / f"{name}.enc"
    save_weights(model, plain)
    key = encrypt_weights(plain, sealed)
    encrypted = sealed.read_bytes()
    manifest = weights_manifest(sealed, server.put(f"/weights/{name}", encrypted))
    return Weights(ModelManifest.of(model_id(name), manifest, key), load_weights(plain, config),
                   encrypted)


def model_id(name: str) -> bytes:
    """A 32-byte model id (as on chain) that reads as `name`."""
    return name.encode().ljust(32, b"\0")


def _wrong_key(good: list[Weights]) -> ModelManifest:
    return msgspec.structs.replace(good[1].manifest, model_id=model_id("bad-key"), decryption_key=bytes(32))


def _slow(server: FileServer, good: list[Weights]) -> ModelManifest:
    """Weights whose download stalls (5 s: the server's `stall`)."""
    server.stall["/weights/slow"] = 5.0
    return msgspec.structs.replace(good[1].manifest, model_id=model_id("slow"),
                                   url=server.put("/weights/slow", good[1].encrypted),
                                   checksum=hashlib.blake2b(b"slow", digest_size=32).digest())


@pytest.fixture(scope="module")
def env(serve_url, tmp_path_factory):
    from ray import serve

    tmp = tmp_path_factory.mktemp("scoring")
    server = FileServer()
    good = []
    for i in range(4):
        torch.manual_seed(100 + i)
        good.append(_publish(server, tmp, f"good{i}", V1Model(CFG), CFG))
    known = StaticManifests([w.manifest for w in good] + [_wrong_key(good), _slow(server, good)])
    app = scoring_app(CFG, device="auto", max_replicas=1, max_submission_bytes=MAX_DATA,
                      batch_wait_timeout_s=0.02, allowed_origins=(server.base,), chain=known)
    handle = serve.run(app, name=APP, route_prefix=PREFIX)
    yield Env(serve_url + PREFIX, handle, server, good, tmp,
              dataclasses.replace(CFG, pwff_hidden_dim=96))
    serve.delete(APP, _blocking=False)  # its replica's graceful shutdown overlaps the next module
    server.close()


def _data(n: int, seed: int = 0) -> bytes:
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


def _target(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=CFG.embedding_dim).astype(np.float32)


def _request(weights: list[Weights], data: bytes, target: np.ndarray, **fields) -> ScoreRequest:
    return ScoreRequest(manifests=[w.manifest for w in weights],
                        target_embedding=target.astype("<f4").tobytes(), data=data, **fields)


def _post(env: Env, body: bytes, content_type: str = "application/msgpack"):
    return requests.post(env.url + "/score", data=body, headers={"Content-Type": content_type},
                         timeout=DEADLINE_S)


def by_ids(request: ScoreRequest) -> ScoreRequest:
    """The request as the public route takes it: the models by id."""
    return msgspec.structs.replace(request, model_ids=[m.model_id for m in request.manifests], manifests=[])


def _health(env: Env) -> dict:
    reply = requests.get(env.url + "/health", timeout=DEADLINE_S)
    assert reply.status_code == 200
    return msgspec.msgpack.decode(reply.content)


def assert_exact(got: ScoreResponse, weights: list[Weights], data: bytes,
                 target: np.ndarray) -> None:
    want = score([w.model for w in weights], data, target)
    assert got.winner == want.winner
    assert got.losses == want.losses  # bit for bit, every model
    assert got.loss_score == want.loss
    assert got.embedding == want.embedding.astype("<f4").tobytes()
    assert got.distance == want.distance


@pytest.mark.parametrize("size", [1, S, S + 1, 17 * S + 3], ids=["1", "S", "S+1", "2-batches"])
def test_scores_equal_in_process_score_over_http_and_the_handle(env, size):
    data, target = _data(size, seed=size), _target(size)
    request = _request(env.good[:3], data, target)
    reply = _post(env, msgspec.msgpack.encode(by_ids(request)))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/msgpack")
    over_http = msgspec.msgpack.decode(reply.content, type=ScoreResponse)
    assert_exact(over_http, env.good[:3], data, target)
    assert env.handle.score.remote(request).result(timeout_s=DEADLINE_S) == over_http


def test_json_requests_and_data_urls_give_the_same_scores(env):
    data, target = _data(300, seed=7), _target(7)
    inline = env.handle.score.remote(_request(env.good[:2], data, target)).result(
        timeout_s=DEADLINE_S)
    as_json = msgspec.json.encode(msgspec.structs.replace(
        by_ids(_request(env.good[:2], data, target)), target_embedding=target.tolist()))
    reply = _post(env, as_json, "application/json")
    assert reply.status_code == 200, reply.text
    assert from_json(reply.content, ScoreResponse) == inline  # bytes as 0x-hex, as all JSON
    url = env.server.put("/data/seven", data)
    by_url = ScoreRequest(manifests=[w.manifest for w in env.good[:2]],
                          target_embedding=target.tobytes(), data_url=url, data_size=len(data))
    assert env.handle.score.remote(by_url).result(timeout_s=DEADLINE_S) == inline
    assert_exact(inline, env.good[:2], data, target)


def test_a_second_request_for_cached_models_loads_nothing(env):
    fresh = env.good[3]  # used by no other test before this one
    before = _health(env)
    first = _request([fresh], _data(10, seed=1), _target(2))
    assert_exact(env.handle.score.remote(first).result(timeout_s=DEADLINE_S), [fresh],
                 _data(10, seed=1), _target(2))
    loaded = _health(env)
    assert loaded["loads"] == before["loads"] + 1
    second = _request([fresh], _data(20, seed=2), _target(3))
    assert_exact(env.handle.score.remote(second).result(timeout_s=DEADLINE_S), [fresh],
                 _data(20, seed=2), _target(3))
    # The cache is keyed by checksum: cached weights are not downloaded again, whatever the URL.
    moved = msgspec.structs.replace(
        second, manifests=[msgspec.structs.replace(fresh.manifest, url=env.server.base + "/gone")])
    assert env.handle.score.remote(moved).result(timeout_s=DEADLINE_S) == env.handle.score.remote(
        second).result(timeout_s=DEADLINE_S)
    after = _health(env)
    assert after["loads"] == loaded["loads"]
    assert env.server.hits["/gone"] == 0
    assert after["models_cached"] >= 1 and after["batches"] > loaded["batches"]
    assert after["device"] == "cpu" and after["mean_batch_size"] >= 1.0


def _bad_weights(env: Env) -> dict[str, tuple[ModelManifest, str]]:
    """Manifests whose weights fail at one stage each: name -> (manifest, stage)."""
    server, good = env.server, env.good
    bad = {}
    bad["wrong checksum"] = (msgspec.structs.replace(
        good[0].manifest, model_id=b"bad-checksum",
        checksum=hashlib.blake2b(b"x", digest_size=32).digest()), "checksum")
    bad["wrong key"] = (_wrong_key(good), "decrypt")
    cut = good[2].encrypted[: len(good[2].encrypted) - 100]
    bad["truncated file"] = (msgspec.structs.replace(
        good[2].manifest, model_id=b"bad-truncated", url=server.put("/weights/cut", cut),
        size=len(cut), checksum=hashlib.blake2b(cut, digest_size=32).digest()), "decrypt")
    # Weights no request has named before (a cached checksum is not downloaded again).
    torch.manual_seed(8)
    uncached = _publish(server, env.tmp, "bad-short", V1Model(CFG), CFG)
    bad["truncated download"] = (msgspec.structs.replace(
        uncached.manifest, url=server.put("/weights/short", uncached.encrypted[:-100])), "size")
    torch.manual_seed(7)
    shaped = _publish(server, env.tmp, "bad-shape", V1Model(env.bad_config), env.bad_config)
    bad["wrong shape"] = (shaped.manifest, "load")
    bad["missing"] = (msgspec.structs.replace(
        good[0].manifest, model_id=b"bad-missing", url=server.base + "/weights/none",
        checksum=hashlib.blake2b(b"y", digest_size=32).digest()), "download")
    return bad


def test_bad_weights_fail_only_their_own_request(env):
    data, target = _data(2 * S + 5, seed=11), _target(11)
    bad = _bad_weights(env)
    good_request = _request(env.good[:3], data, target)
    # All at once: the good request shares batches (and a model) with the bad ones.
    sent = {name: env.handle.score.remote(ScoreRequest(
                manifests=[env.good[0].manifest, manifest],
                target_embedding=target.tobytes(), data=data))
            for name, (manifest, _) in bad.items()}
    good = env.handle.score.remote(good_request)
    assert_exact(good.result(timeout_s=DEADLINE_S), env.good[:3], data, target)
    for name, response in sent.items():
        manifest, stage = bad[name]
        with pytest.raises(ModelUnavailable) as err:
            response.result(timeout_s=DEADLINE_S)
        assert (err.value.model_id, err.value.stage) == (manifest.model_id, stage), name
    # Over HTTP the same failure is a 422 naming the model.
    manifest, stage = bad["wrong key"]
    reply = _post(env, msgspec.msgpack.encode(by_ids(msgspec.structs.replace(
        good_request, manifests=[manifest]))))
    assert reply.status_code == 422
    assert reply.json() == {"error": "ModelUnavailable", "fields": {
        "model_id": "0x" + manifest.model_id.hex(), "stage": "decrypt",
        "reason": "the key does not decrypt these weights"}}


def test_bad_requests_are_4xx_json_and_data_limits_hold_before_download(env):
    target = _target(5)
    request = _request(env.good[:1], b"abc", target)

    def post(req: ScoreRequest):
        return _post(env, msgspec.msgpack.encode(by_ids(req)))

    def error(reply) -> tuple[int, str]:
        return reply.status_code, reply.json()["error"]

    assert error(_post(env, b"\xc1 not msgpack")) == (400, "MalformedInput")
    assert error(post(msgspec.structs.replace(request, data=b""))) == (400, "MalformedInput")
    assert error(post(msgspec.structs.replace(request, manifests=[]))) == (400, "MalformedInput")
    assert error(post(msgspec.structs.replace(
        request, target_embedding=target[:-1].tobytes()))) == (400, "EmbeddingDimensionMismatch")
    assert error(post(msgspec.structs.replace(
        request, target_embedding=bytes(4 * CFG.embedding_dim)))) == (400, "ZeroEmbedding")
    too_big = post(msgspec.structs.replace(request, data=bytes(MAX_DATA + 1)))
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "DataTooLarge",
                              "fields": {"size": MAX_DATA + 1, "max": MAX_DATA}}
    assert error(_post(env, bytes(4 * MAX_DATA))) == (413, "RequestTooLarge")
    chunked = requests.post(env.url + "/score", data=iter([bytes(MAX_DATA)] * 4),
                            timeout=DEADLINE_S)  # no Content-Length: counted as it streams
    assert error(chunked) == (413, "RequestTooLarge")
    # A declared size over the limit is refused before any byte is downloaded ...
    big_url = env.server.put("/data/big", bytes(MAX_DATA + 1))
    declared = msgspec.structs.replace(request, data=None, data_url=big_url,
                                       data_size=MAX_DATA + 1)
    assert error(post(declared)) == (413, "DataTooLarge")
    assert env.server.hits["/data/big"] == 0
    # ... and an undeclared one stops at the download's bound.
    assert error(post(msgspec.structs.replace(declared, data_size=None))) == (413, "DataTooLarge")
    assert error(post(msgspec.structs.replace(
        declared, data_url=env.server.base + "/data/none", data_size=None))) == (
        422, "DataUnavailable")
    with pytest.raises(DataUnavailable):
        env.handle.score.remote(msgspec.structs.replace(
            declared, data_url=env.server.base + "/data/none",
            data_size=None)).result(timeout_s=DEADLINE_S)
    assert requests.get(env.url + "/score", timeout=DEADLINE_S).status_code == 405
    assert requests.get(env.url + "/nowhere", timeout=DEADLINE_S).status_code == 404


def test_a_request_past_its_timeout_fails_with_scoring_timeout(env):
    slow = _slow(env.server, env.good)
    request = ScoreRequest(manifests=[env.good[0].manifest, slow],
                           target_embedding=_target().tobytes(), data=b"abc", timeout_s=0.5)
    with pytest.raises(ScoringTimeout) as err:
        env.handle.score.remote(request).result(timeout_s=DEADLINE_S)
    assert err.value.timeout_s == 0.5
    reply = _post(env, msgspec.msgpack.encode(by_ids(request)))
    assert reply.status_code == 504
    assert reply.json() == {"error": "ScoringTimeout", "fields": {"timeout_s": 0.5}}
    # The stalled downloads hold nothing up: a request for cached models is answered at once.
    fine = _request(env.good[:1], b"abc", _target())
    assert_exact(env.handle.score.remote(fine).result(timeout_s=5), env.good[:1], b"abc",
                 _target())


def test_the_public_route_takes_model_ids_only_and_limits_each_client(env):
    target = _target(4)
    request = _request(env.good[:1], b"abc", target)
    refused = _post(env, msgspec.msgpack.encode(request))  # manifests, with their URLs: refused
    assert refused.status_code == 400 and "manifests are refused" in refused.json()["fields"]["reason"]
    unknown = _post(env, msgspec.msgpack.encode(msgspec.structs.replace(
        by_ids(request), model_ids=[model_id("nobody")])))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "ObjectNotFound")
    # Two requests in flight per client (their data downloads stall); a third waits its turn.
    env.server.stall["/data/stalled"] = 3.0
    stalled = msgspec.msgpack.encode(msgspec.structs.replace(
        by_ids(request), data=None, data_url=env.server.put("/data/stalled", b"abc")))
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(_post(env, stalled))) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    third = _post(env, stalled)
    for thread in threads:
        thread.join()
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    assert third.json()["fields"] == {"rate_class": "score", "scope": "client", "retry_after_s": 1}
    assert sorted(a.status_code for a in answers) == [200, 200]


def _wait_for(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_requests_in_a_killed_replicas_batch_are_retried_to_exact_results(env):
    # Last in the module: it replaces the model replica.
    import ray
    from ray import serve

    scorer = serve.get_deployment_handle("ScoringService", APP)
    before = scorer.stats.remote().result(timeout_s=DEADLINE_S)
    retries_before = _health(env)["retried_sub_calls"]
    target = _target(9)
    datas = [_data(8 * 1024, seed=20 + i) for i in range(2)]
    sent = [env.handle.score.remote(_request(env.good[:2], d, target)) for d in datas]
    _wait_for(lambda: scorer.stats.remote().result(timeout_s=DEADLINE_S)["batches_running"],
              "a batch to start")
    ray.kill(ray.get_actor(before["actor_name"], namespace="serve"), no_restart=True)
    results = [r.result(timeout_s=DEADLINE_S) for r in sent]
    for got, data in zip(results, datas):
        assert_exact(got, env.good[:2], data, target)
    after = scorer.stats.remote().result(timeout_s=DEADLINE_S)
    assert after["replica"] != before["replica"]
    assert _health(env)["retried_sub_calls"] > retries_before
