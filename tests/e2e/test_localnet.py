"""A 4-validator localnet inside the shared Ray session: consensus, persistence, client, faults."""
import asyncio
import os
import signal
import time
import uuid

import pytest

from actors import network as net
from soma_ray.client import SomaClient
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SOMA = SHANNONS_PER_SOMA


@pytest.fixture(scope="module")
def localnet(ray_session, tmp_path_factory):
    config = net.NetworkConfig(
        data_dir=str(tmp_path_factory.mktemp("localnet")), validators=4,
        namespace="soma-test", prefix=f"e2e-{uuid.uuid4().hex[:6]}-",
    )
    network = net.start(config)
    yield network
    network.stop()


def run(coroutine):
    return asyncio.run(coroutine)


async def client_of(network):
    return await SomaClient(namespace=network.config.namespace, prefix=network.config.prefix)


def statuses(network):
    import ray
    return ray.get([v.status.remote() for v in network.validators], timeout=30)


def wait_until(predicate, timeout_s=60.0, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError("condition not reached in time")


def same_root_at_same_height(network):
    """All validators at one sequence with one state root (or False while they differ)."""
    found = statuses(network)
    heights = {s["sequence"] for s in found}
    roots = {s["state_root"] for s in found}
    return found if len(heights) == 1 and len(roots) == 1 else False


def test_faucet_then_transfer_is_final_on_every_validator(localnet):
    alice, bob = preset_keypair("e2e-alice", 0), preset_keypair("e2e-bob", 0)

    async def scenario():
        client = await client_of(localnet)
        await client.request_faucet(alice.address, 50 * SOMA)
        effects = await client.transfer(alice, bob.address, 7 * SOMA)
        assert effects.error is None
        return client, await client.get_balance(alice.address), await client.get_balance(bob.address)

    client, alice_balance, bob_balance = run(scenario())
    fee = 1_000
    assert (alice_balance, bob_balance) == (50 * SOMA - 7 * SOMA - fee, 7 * SOMA)
    wait_until(lambda: same_root_at_same_height(localnet))
