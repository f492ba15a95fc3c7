"""A model owner's whole publication path: weights saved and encrypted with soma_ray.model, the
commitments computed with its helpers, then CreateModel → CommitModel → RevealModel on the chain.
If the model package and the protocol disagreed on a commitment, the reveal would fail."""
import numpy as np

from soma_ray.model import (
    V1Config, V1Model, embedding_bytes, embedding_commitment, encrypt_weights, key_commitment,
    save_weights, score_model, weights_commitment, weights_manifest,
)
from soma_ray.protocol.errors import CommitmentMismatch
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.types import CommitModel, CreateModel, Model, RevealModel

SOMA = 10**9


def publish(tmp_path):
    """Create and commit a freshly initialised small model; returns (sim, owner, id, key, emb)."""
    sim = Simulator(localnet_config())
    owner = preset_keypair("user", 0)
    model = V1Model(V1Config.small())
    save_weights(model, tmp_path / "w.safetensors")
    key = encrypt_weights(tmp_path / "w.safetensors", tmp_path / "w.enc")
    embedding = score_model(model, b"def publish(): return 'weights'\n" * 8).embedding
    sim.submit_kind(owner, CreateModel(stake=10 * SOMA, commission_bps=100, architecture_version=1))
    _, effects = sim.make_checkpoint()
    model_id = effects[-1].created[0]
    sim.submit_kind(owner, CommitModel(
        model_id, weights_manifest(tmp_path / "w.enc", "http://blobs/w.enc"),
        weights_commitment(tmp_path / "w.enc"), embedding_commitment(embedding),
        key_commitment(key)))
    _, effects = sim.make_checkpoint()
    assert effects[-1].error is None, effects[-1].error
    sim.advance_epoch()
    return sim, owner, model_id, key, embedding


def test_weights_published_with_the_model_helpers_reveal_on_chain(tmp_path):
    sim, owner, model_id, key, embedding = publish(tmp_path)
    sim.submit_kind(owner, RevealModel(model_id, key, embedding_bytes(embedding)))
    _, effects = sim.make_checkpoint()
    assert effects[-1].error is None, effects[-1].error
    model = sim.state.require(MODEL, model_id, Model)
    assert model.status == "Active"
    assert np.array_equal(np.frombuffer(model.embedding, "<f4"), embedding)


def test_a_reveal_with_another_embedding_is_refused(tmp_path):
    sim, owner, model_id, key, embedding = publish(tmp_path)
    sim.submit_kind(owner, RevealModel(model_id, key, embedding_bytes(embedding * 2)))
    _, effects = sim.make_checkpoint()
    assert effects[-1].error == CommitmentMismatch(field="embedding").to_struct()
    assert sim.state.require(MODEL, model_id, Model).status == "Pending"
