"""A localnet's public services as `Network.start_services` deploys them: the gateway, the blob store
under it and the scoring service, reached by the SDK over HTTP alone."""
import json
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch

from soma_ray.model import GENESIS_WEIGHTS_SEED
from localnet_helpers import funded, run
from soma_ray.model import V1Config, load_weights, score, seeded_model
from soma_ray.protocol.genesis import genesis
from soma_ray.protocol.state import MODEL, TARGET
from soma_ray.protocol.types import Model, Target
from soma_ray.client import SomaClient
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.errors import ProtocolError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def services(weights_network):
    """One validator with its services and real genesis weights (shared: tests/e2e/conftest.py)."""
    return weights_network, weights_network.config.public_url


def test_the_sdk_reaches_gateway_blobs_and_scoring_at_one_url(services):
    network, url = services
    assert url == network.config.public_url and url.endswith(network.config.route_prefix("gateway"))

    async def scenario():
        client = await SomaClient(rpc_url=url)
        try:
            data = b"some data a miner found"
            blob_url = await client.upload(data, signer=await funded(client, "svc-uploader"))
            fetched = requests.get(blob_url, timeout=30).content
            health = await client._transport.health()
            return blob_url, fetched, health
        finally:
            await client.close()

    blob_url, fetched, health = run(scenario())
    assert blob_url.startswith(url + "/blobs/") and blob_url.endswith(blake2b256(fetched).hex())
    assert fetched == b"some data a miner found"
    assert health.validators_up == 1
    scoring = requests.get(f"{url}/scoring/health", headers={"Accept": "application/json"}, timeout=60)
    assert scoring.status_code == 200 and scoring.json()["device"] == "cpu"


def test_oversized_data_is_refused_by_the_blob_store_with_its_typed_error(services):
    network, url = services
    limit = network.config.genesis_config().parameters.max_submission_bytes

    async def scenario():
        client = await SomaClient(rpc_url=url)
        try:
            await client.upload(b"\0" * (limit + 1), signer=await funded(client, "svc-big-uploader"))
        finally:
            await client.close()

    with pytest.raises(ProtocolError) as refused:
        run(scenario())
    assert refused.value.code == "BlobTooLarge"


def test_the_genesis_models_publish_real_weights_so_every_target_can_be_scored(services):
    network, url = services

    async def scenario():
        client = await SomaClient(rpc_url=url)
        try:
            targets = await client.get_targets("open")
            manifests = await client.get_model_manifests(targets[0])  # none left out, none missing
            weights = {m.model_id: await client.fetch_model(m.model_id) for m in manifests}
            return targets, manifests, weights
        finally:
            await client.close()

    targets, manifests, weights = run(scenario())
    assert targets and [m.model_id for m in manifests] == targets[0].model_ids
    specs = network.config.genesis_config().models  # the i-th has seed GENESIS_WEIGHTS_SEED + i
    order = {m.id: [s.embedding for s in specs].index(m.embedding)
             for m in genesis(network.config.genesis_config()).values(MODEL, Model)}
    for model_id, data in weights.items():
        seed = GENESIS_WEIGHTS_SEED + order[model_id]
        expected = seeded_model(V1Config.small(), seed).state_dict()
        loaded = load_weights(data, V1Config.small()).state_dict()
        assert all(torch.equal(loaded[name], expected[name]) for name in expected)


def test_stopping_the_network_takes_its_services_off_serve(services):
    network, url = services
    network.stop_services()
    assert requests.get(f"{url}/health", timeout=30).status_code == 404
    network.start_services(scoring_device="cpu")  # back for the tests after this one
    assert requests.get(f"{url}/health", timeout=60).status_code == 200


NO_RAY_SCRIPT = """
import asyncio, json, sys
sys.modules["ray"] = None  # any import of Ray fails
from soma_ray import SomaClient
from soma_ray.protocol.genesis import preset_keypair

async def main(url, data):
    client = await SomaClient(rpc_url=url)
    alice, bob = preset_keypair("svc-alice", 0), preset_keypair("svc-bob", 0)
    await client.request_faucet(alice.address, 5 * 10**9)
    await client.transfer(alice, bob.address, 10**9)
    data_url = await client.upload(data, signer=alice)
    target = (await client.get_targets("open"))[0]
    manifests = await client.get_model_manifests(target)
    scored = await client.score(data_url, manifests, target.embedding)
    health = await client.scoring_stats()
    print(json.dumps({"balance": await client.get_balance(bob.address), "target": target.id.hex(),
                      "winner": scored.winner, "losses": scored.losses, "distance": scored.distance,
                      "embedding": scored.embedding.hex(), "device": health["device"]}))
    await client.close()

asyncio.run(main(sys.argv[1], bytes.fromhex(sys.argv[2])))
"""


def test_a_process_that_cannot_import_ray_pays_uploads_and_scores_exactly(services):
    network, url = services
    data = b"def score(models, data):  # some source a miner streams\n" * 40
    done = subprocess.run([sys.executable, "-c", NO_RAY_SCRIPT, url, data.hex()], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["balance"] == 10**9 and found["device"] == "cpu"
    # The same score in this process, from the same genesis weights.
    target = [t for t in genesis(network.config.genesis_config()).values(TARGET, Target)
              if t.id.hex() == found["target"]][0]
    specs = {m.id: m for m in genesis(network.config.genesis_config()).values(MODEL, Model)}

    async def fetch_all():
        client = await SomaClient(rpc_url=url)
        try:
            return [await client.fetch_model(i) for i in target.model_ids]
        finally:
            await client.close()

    models = [load_weights(w, V1Config.small()) for w in run(fetch_all())]
    expected = score(models, data, np.frombuffer(target.embedding, "<f4"))
    assert specs and found["winner"] == expected.winner
    assert found["losses"] == list(expected.losses) and found["distance"] == expected.distance
    assert bytes.fromhex(found["embedding"]) == np.asarray(expected.embedding, "<f4").tobytes()
