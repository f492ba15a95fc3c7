"""Opening downloaded weights for the scoring service: each failure names its stage. No Ray."""
from __future__ import annotations

import hashlib

import pytest
import torch

from soma_ray.protocol.errors import ModelUnavailable
from serve.scoring import ModelManifest, open_loaded
from soma_ray.model import V1Config, V1Model, encrypt_weights, save_weights, weights_manifest

CFG = V1Config(embedding_dim=16, num_layers=1, num_heads=2, pwff_hidden_dim=32, max_seq_len=16)


def published(tmp_path, config: V1Config = CFG, name: str = "w"):
    torch.manual_seed(0)
    model = V1Model(config).eval()
    save_weights(model, tmp_path / f"{name}.safetensors")
    key = encrypt_weights(tmp_path / f"{name}.safetensors", tmp_path / f"{name}.enc")
    encrypted = (tmp_path / f"{name}.enc").read_bytes()
    m = ModelManifest.of(name.encode(), weights_manifest(tmp_path / f"{name}.enc", "http://x"),
                         key)
    return model, m, encrypted


def stage_of(manifest: ModelManifest, encrypted: bytes) -> str:
    with pytest.raises(ModelUnavailable) as err:
        open_loaded(manifest, encrypted, CFG)
    assert err.value.model_id == manifest.model_id
    return err.value.stage


def test_good_weights_open_to_the_same_parameters(tmp_path):
    model, manifest, encrypted = published(tmp_path)
    loaded = open_loaded(manifest, encrypted, CFG)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert loaded.checksum == manifest.checksum and loaded.size == len(encrypted)
    loaded.check(manifest)  # the manifest it was opened with passes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("soma-scoring-")] == []


def test_each_failure_names_its_stage(tmp_path):
    _, manifest, encrypted = published(tmp_path)
    cut = encrypted[:-50]
    digest = hashlib.blake2b(cut, digest_size=32).digest()
    assert stage_of(manifest, cut) == "size"
    assert stage_of(ModelManifest(**{**_fields(manifest), "checksum": bytes(32)}),
                    encrypted) == "checksum"
    assert stage_of(ModelManifest(**{**_fields(manifest), "decryption_key": bytes(32)}),
                    encrypted) == "decrypt"
    assert stage_of(ModelManifest(**{**_fields(manifest), "size": len(cut), "checksum": digest}),
                    cut) == "decrypt"
    _, other, other_bytes = published(tmp_path, V1Config(**{**CFG.__dict__, "pwff_hidden_dim": 48}),
                                      "other")
    assert stage_of(other, other_bytes) == "load"


def test_a_cached_model_refuses_manifests_it_would_not_load_under(tmp_path):
    _, manifest, encrypted = published(tmp_path)
    loaded = open_loaded(manifest, encrypted, CFG)
    for changed, stage in (({"decryption_key": bytes(32)}, "decrypt"), ({"size": 1}, "size")):
        with pytest.raises(ModelUnavailable) as err:
            loaded.check(ModelManifest(**{**_fields(manifest), **changed}))
        assert err.value.stage == stage
    loaded.check(ModelManifest(**{**_fields(manifest), "url": "http://elsewhere"}))


def test_eviction_is_reported_once(tmp_path):
    _, manifest, encrypted = published(tmp_path)
    loaded = open_loaded(manifest, encrypted, CFG)
    seen = []
    loaded.on_evict = seen.append
    loaded.__del__()
    loaded.__del__()
    assert seen == [manifest.checksum]


def _fields(m: ModelManifest) -> dict:
    return {f: getattr(m, f) for f in m.__struct_fields__}
