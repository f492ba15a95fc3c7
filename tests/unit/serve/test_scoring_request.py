"""The scoring service's pure parts: request decoding and checks, combining per-model scores,
settings (cache bounds, device choice). No Ray."""
from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
import torch

from soma_ray.protocol.errors import ModelUnavailable, RequestTooLarge, ScoringTimeout
from soma_ray.wire import error_json, from_json, http_status
from soma_ray.model.scoring import best_of
from serve.scoring import (
    ModelManifest,
    ScoreRequest,
    ScoreResponse,
    as_request,
    check_request,
    choose_device,
    decode_request,
    effective_timeout,
    parameter_bytes,
    scoring_settings,
)
from soma_ray.model import ModelScore, V1Config, V1Model, score, score_model
from soma_ray.protocol.errors import (
    DataTooLarge,
    EmbeddingDimensionMismatch,
    MalformedInput,
    NonFiniteEmbedding,
    ZeroEmbedding,
)

CFG = V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32, max_seq_len=16)
SETTINGS = scoring_settings(CFG, device="cpu", resources={"CPU": 2}, max_submission_bytes=100,
                            max_models_per_request=3)


def manifest(**fields) -> ModelManifest:
    values = dict(model_id=b"m", url="http://127.0.0.1/w", checksum=bytes(32), size=10,
                  decryption_key=bytes(32))
    return ModelManifest(**{**values, **fields})


def request(**fields) -> ScoreRequest:
    values = dict(manifests=[manifest()], target_embedding=np.ones(16, np.float32).tobytes(),
                  data=b"abc")
    return ScoreRequest(**{**values, **fields})


def test_requests_round_trip_through_msgpack_and_json():
    r = request(seed=5, timeout_s=2.5)
    assert decode_request(msgspec.msgpack.encode(r)) == r
    assert from_json(msgspec.json.encode(r), ScoreRequest) == r  # JSON bodies: the router's (serve/router.py)
    assert as_request(msgspec.to_builtins(r)) == r
    assert as_request(msgspec.msgpack.encode(r)) == r


@pytest.mark.parametrize("body", [b"", b"\xc1", msgspec.msgpack.encode({"manifests": []}),
                                  msgspec.msgpack.encode({**msgspec.to_builtins(request()),
                                                          "extra": 1}),
                                  msgspec.msgpack.encode({**msgspec.to_builtins(request()),
                                                          "seed": -1})])
def test_undecodable_requests_are_malformed_input(body):
    with pytest.raises(MalformedInput):
        decode_request(body)


def test_check_request_returns_the_target_and_refuses_what_it_must():
    np.testing.assert_array_equal(check_request(request(), SETTINGS), np.ones(16, np.float32))
    as_list = check_request(request(target_embedding=[0.5] * 16), SETTINGS)
    assert as_list.dtype == np.float32
    cases = [
        (request(manifests=[]), MalformedInput),
        (request(manifests=[manifest()] * 4), MalformedInput),
        (request(data=None), MalformedInput),
        (request(data_url="http://x"), MalformedInput),
        (request(data=b""), MalformedInput),
        (request(data=bytes(101)), DataTooLarge),
        (request(data=None, data_url="http://x", data_size=101), DataTooLarge),
        (request(data=None, data_url="http://x", data_size=0), MalformedInput),
        (request(manifests=[manifest(checksum=b"short")]), MalformedInput),
        (request(manifests=[manifest(decryption_key=bytes(31))]), MalformedInput),
        (request(target_embedding=np.ones(15, np.float32).tobytes()),
         EmbeddingDimensionMismatch),
        (request(target_embedding=np.zeros(16, np.float32).tobytes()), ZeroEmbedding),
        (request(target_embedding=[math.nan] + [1.0] * 15), NonFiniteEmbedding),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            check_request(bad, SETTINGS)
    with pytest.raises(ModelUnavailable) as err:
        check_request(request(manifests=[manifest(model_id=b"big",
                                                  size=SETTINGS.max_weights_bytes + 1)]),
                      SETTINGS)
    assert (err.value.model_id, err.value.stage) == (b"big", "size")
    assert check_request(request(data=bytes(100)), SETTINGS) is not None


def test_a_request_timeout_can_only_shorten_the_services():
    assert effective_timeout(request(), SETTINGS) == SETTINGS.request_timeout_s
    assert effective_timeout(request(timeout_s=0.5), SETTINGS) == 0.5
    assert effective_timeout(request(timeout_s=1e9), SETTINGS) == SETTINGS.request_timeout_s


def test_best_of_sub_call_scores_equals_score_on_the_same_models():
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(V1Model(CFG).eval())
    data = b"some data to score" * 3
    target = np.random.default_rng(0).normal(size=16).astype(np.float32)
    got = best_of([score_model(m, data) for m in models], target)
    want = score(models, data, target)
    assert got.winner == want.winner and got.losses == want.losses and got.loss == want.loss
    assert got.distance == want.distance
    assert got.embedding.tobytes() == want.embedding.tobytes()
    response = ScoreResponse.of(got)
    assert response.embedding_array().tobytes() == want.embedding.tobytes()


def test_best_of_ranks_nan_last_and_ties_to_the_first():
    e = np.ones(4, np.float32)
    target = np.arange(1, 5, dtype=np.float32)
    scores = [ModelScore(math.nan, e), ModelScore(2.0, e * 2), ModelScore(2.0, e * 3)]
    assert best_of(scores, target).winner == 1
    assert best_of([ModelScore(math.nan, e)], target).winner == 0


def test_the_byte_bound_is_folded_into_the_count_bound():
    one = parameter_bytes(CFG)
    assert scoring_settings(CFG, device="cpu", resources={},
                            max_cache_bytes=3 * one + 1).max_models_per_replica == 3
    assert scoring_settings(CFG, device="cpu", resources={}, max_models_per_replica=2,
                            max_cache_bytes=100 * one).max_models_per_replica == 2
    with pytest.raises(ValueError):
        scoring_settings(CFG, device="cpu", resources={}, max_cache_bytes=one - 1)
    assert one == 4 * sum(p.numel() for p in V1Model(CFG).parameters())


def test_the_device_follows_the_cluster_and_a_missing_gpu_is_refused_at_once():
    assert choose_device("auto", {"CPU": 2}) == "cpu"
    assert choose_device("auto", {"CPU": 8, "GPU": 1}) == "cuda"
    assert choose_device("cpu", {"GPU": 4}) == "cpu"
    with pytest.raises(ValueError):
        choose_device("cuda", {"CPU": 2})
    with pytest.raises(ValueError):
        choose_device("tpu", {})
    gpu = scoring_settings(CFG, device="auto", resources={"CPU": 16, "GPU": 4})
    assert (gpu.device, gpu.max_replicas) == ("cuda", 4)
    cpu = scoring_settings(CFG, device="auto", resources={"CPU": 2})
    assert (cpu.device, cpu.min_replicas, cpu.max_replicas) == ("cpu", 1, 2)
    assert scoring_settings(CFG, device="cpu", resources={"CPU": 64}).max_replicas == 2


def test_errors_have_4xx_statuses_unless_the_service_failed():
    assert http_status(MalformedInput(reason="x")) == 400
    assert http_status(DataTooLarge(size=2, max=1)) == 413
    assert http_status(RequestTooLarge(size=2, max=1)) == 413
    assert http_status(ModelUnavailable(model_id=b"\x01", stage="load", reason="r")) == 422
    assert http_status(ScoringTimeout(timeout_s=1.5)) == 504
    assert error_json(ModelUnavailable(model_id=b"\x01\x02", stage="load", reason="r")) == {
        "error": "ModelUnavailable", "fields": {"model_id": "0x0102", "stage": "load", "reason": "r"}}
