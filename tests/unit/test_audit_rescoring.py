"""No escape through the model (issue 20): every way a model the audit needs can fail — no
weights on chain, download, size, checksum, decrypt, parse, load (a wrong shape), a scoring
failure only that model meets, a reply of the wrong shape — is left out and reported by the
SDK's rescoring (`SomaClient.verify` over `SimTransport`); when it is the claimed model the claims
cannot be established and the verdict is ChallengerWins; the auditor's own trouble raises (to be
tried again) and is never a finding."""
import asyncio
import dataclasses

import msgspec
import numpy as np
import pytest

from soma_ray.model import V1Config, genesis_model_weights
from soma_ray.model.encryption import encrypt_bytes
from soma_ray.model.weights import seeded_model, weights_bytes
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.genesis import localnet_genesis_config, preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.protocol.types import Model, WeightsManifest
from soma_ray.strategies.simulated import SimulatedClient, blob_url

DATA = b"def audited(x):\n    return x * 2  # some honest data to score\n" * 12
FAILURES = ("no-weights", "download", "size", "checksum", "decrypt", "parse", "shape", "scoring", "reply")


def broken_genesis(kind: str | None):
    """The localnet genesis with three models of real weights, the last broken as `kind` says
    (None: all three fine)."""
    config = localnet_genesis_config([preset_keypair("validator", i).public_key for i in range(4)], 60_000, True, 0)
    blobs, models = {}, []
    for i, spec in enumerate(config.models):
        plain = genesis_model_weights(i)
        broken = kind if i == 2 else None
        if broken == "parse":
            plain = b"these bytes are not a safetensors file"
        elif broken == "shape":  # a V1 model of another width: its tensors have the wrong shapes
            plain = weights_bytes(seeded_model(dataclasses.replace(V1Config.small(), embedding_dim=32), 5))
        encrypted, key = encrypt_bytes(plain)
        checksum = blake2b256(encrypted)
        url = blob_url(checksum)
        size = len(encrypted)
        if broken != "download":
            blobs[url] = encrypted
        if broken == "size":
            blobs[url] = encrypted + b"!"  # more than the manifest says
        if broken == "checksum":
            blobs[url] = bytes([encrypted[0] ^ 1]) + encrypted[1:]
        if broken == "decrypt":
            key = bytes(32)
        manifest = WeightsManifest(url=url, checksum=checksum, size=size)
        if broken == "no-weights":
            models.append(msgspec.structs.replace(spec, weights_manifest=None, decryption_key=b""))
        else:
            models.append(msgspec.structs.replace(spec, weights_manifest=manifest, decryption_key=key))
    return msgspec.structs.replace(config, models=models), blobs


class FaultyScoring:
    """Wraps a SimTransport's scoring: requests naming `model_id` fail as `kind` says."""

    def __init__(self, transport, model_id: bytes, kind: str):
        self.transport, self.model_id, self.kind = transport, model_id, kind
        self.inner = transport.score

    async def __call__(self, request):
        names = [bytes(m) for m in (request.model_ids or ())] + [m.model_id for m in (request.manifests or ())]
        if self.kind == "unreachable":
            raise ConnectionError("the scoring service cannot be reached")
        if self.kind == "everything":
            raise errors.InternalError(reason="the service fails on these bytes")
        if self.model_id in names:
            if self.kind == "scoring":
                raise errors.InternalError(reason="the forward pass raised")
            if self.kind == "reply":
                response = await self.inner(request)
                return msgspec.structs.replace(response, embedding=response.embedding[:-4])
        return await self.inner(request)


def model_ids_in_genesis_order(client, config) -> list[bytes]:
    found = {m.embedding: m.id for m in client.sim.state.values(MODEL, Model)}
    return [found[spec.embedding] for spec in config.models]


async def filled(kind: str | None, claim_broken: bool = False, break_after: str | None = None):
    """A chain whose genesis model 2 is broken as `kind` says, one target filled by a miner that
    claims the lowest-loss usable model (or, `claim_broken`, model 2 with the target's own
    embedding); then the verification's finding, the models (genesis order), the claimed one,
    the client and the target."""
    config, blobs = broken_genesis(kind)
    client = SimulatedClient(config, blobs)
    models = model_ids_in_genesis_order(client, config)
    miner = preset_keypair("rescoring-miner", 0)
    await client.request_faucet(miner.address, 100 * SHANNONS_PER_SOMA)
    targets = await client.get_targets("open")
    assert all(sorted(t.model_ids) == sorted(models) for t in targets)  # three models: every target has them all
    if kind in ("scoring", "reply"):
        client.chain.score = FaultyScoring(client.chain, models[2], kind)
    usable = models if kind is None else models[:2]
    manifests = await client.get_model_manifests(usable)
    for target in targets:
        scored = await client.chain.scorer.score(manifests, DATA, np.frombuffer(target.embedding, "<f4"), 0)
        claimed = models[2] if claim_broken else usable[scored.winner]
        embedding = np.frombuffer(target.embedding, "<f4") if claim_broken else scored.embedding_array()
        distance = cosine_distance_fixed(embedding, target.embedding)
        if distance <= target.threshold_fixed:
            url = await client.upload(DATA, signer=miner)
            await client.submit_data(miner, target.id, DATA, url, claimed, embedding,
                                     distance / 1e9, 2.0 if claim_broken else scored.loss_score)
            break
    else:
        raise AssertionError("no target within reach of the data")
    if break_after == "remove":
        client.chain.blobs.pop(client.chain.index.model_manifests([claimed])[0].url)
    return await client.verify(target.id), models, claimed, client, target


def run(coroutine):
    return asyncio.run(coroutine)


def test_all_models_fine_the_claims_hold():
    finding, _, _, _, _ = run(filled(None))
    assert finding.claims_hold and finding.report == [] and finding.tolerance == 20_000


@pytest.mark.parametrize("kind", FAILURES)
def test_a_broken_other_model_is_left_out_reported_and_the_rest_judged(kind):
    finding, models, claimed, _, _ = run(filled(kind))
    assert claimed != models[2]
    assert finding.claims_hold, finding.reason
    assert finding.report == [models[2]]
    assert finding.recomputed_loss is not None and finding.best_model != models[2]


@pytest.mark.parametrize("kind", FAILURES)
def test_a_broken_claimed_model_means_the_claims_cannot_be_established(kind):
    finding, models, claimed, _, _ = run(filled(kind, claim_broken=True))
    assert (finding.verdict, finding.fraud) == ("ChallengerWins", "ScoreFraud"), finding.reason
    assert models[2] in finding.report
    assert "cannot be used" in finding.reason and "cannot be established" in finding.reason


def test_weights_removed_after_the_fill_do_not_shield_the_claims():
    # The owner–miner pair: the claimed model was fine at the fill; its blob is gone at the audit.
    finding, models, claimed, _, _ = run(filled(None, break_after="remove"))
    assert finding.fraud == "ScoreFraud" and finding.report == [claimed]
    assert "ModelUnavailable" in finding.reason and "download" in finding.reason


def test_the_auditors_own_trouble_raises_and_an_unblamable_failure_is_decided_only_when_asked():
    async def scenario(kind, decide):
        _, models, _, client, target = await filled(None)
        client.chain.score = FaultyScoring(client.chain, models[2], kind)
        return await client.verify(target.id, decide_unscorable=decide)

    with pytest.raises(ConnectionError):
        run(scenario("unreachable", True))
    with pytest.raises(errors.InternalError):  # every model fails alone: not one of them is to blame
        run(scenario("everything", False))
    finding = run(scenario("everything", True))
    assert finding.fraud == "ScoreFraud" and "could not be scored" in finding.reason and finding.report == []
