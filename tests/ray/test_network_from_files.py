"""A network whose validator keys and genesis come from files (what a multi-node testnet needs),
and whose actors take their Ray resources from the config's placement."""
import asyncio
import time
import uuid

import pytest
import ray

from actors import network as net
from soma_ray.client import SomaClient
from soma_ray.config import save_genesis_config, write_validator_key
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import localnet_genesis_config
from soma_ray.protocol.genesis import testnet_genesis_config as genesis_of_testnet
from soma_ray.protocol.genesis import genesis as genesis_state
from soma_ray.protocol.state import VALIDATOR

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def assigned(handle) -> dict:
    """The resources Ray assigned to the actor's worker."""
    return ray.get(handle.__ray_call__.remote(
        lambda _: ray.get_runtime_context().get_assigned_resources()), timeout=30)


def files_network(tmp_path, genesis_config, key, **settings) -> net.Network:
    """A one-validator network whose key and genesis come from files."""
    genesis_file = tmp_path / "genesis.json"
    save_genesis_config(genesis_config, genesis_file)
    config = net.NetworkConfig(
        data_dir=str(tmp_path / "net"), validators=1, namespace="soma-test",
        prefix=f"files-{uuid.uuid4().hex[:6]}-", keys="files", genesis_file=str(genesis_file), **settings)
    write_validator_key(config, 0, key)
    return net.start(config)


def test_a_network_from_key_and_genesis_files_commits_with_placed_actors(ray_session, tmp_path):
    key = Keypair.generate()
    network = files_network(tmp_path, localnet_genesis_config([key.public_key], 60_000, True, int(time.time() * 1000)),
                            key, placement={"validator": {"num_cpus": 0.01}, "clock": {"num_cpus": 0.02}})
    config = network.config
    try:
        deadline = time.monotonic() + 120
        while (ray.get(network.validators[0].status.remote()).sequence or 0) < 2:
            assert time.monotonic() < deadline, "no checkpoint certified"
            time.sleep(0.2)
        # The committee is the file's key, and it signs: the chain advances with it alone.
        system = genesis_state(config.genesis_config()).system()
        assert [m.address for m in system.committee.members] == [key.address]
        raw = ray.get(network.validators[0].get_object.remote(VALIDATOR + key.address))
        assert raw is not None
        # Each actor holds what the placement asked Ray for.
        assert assigned(network.validators[0]) == {"CPU": 0.01}
        assert assigned(network.clock) == {"CPU": 0.02}
    finally:
        network.stop()


@pytest.mark.parametrize("faucet", [True, False])
def test_a_testnet_gateway_serves_the_faucet_exactly_when_its_genesis_enables_it(ray_session, serve_url,
                                                                                 tmp_path, faucet):
    from ray import serve

    from serve.gateway import gateway_app

    key, recipient = Keypair.generate(), Keypair.generate().address
    genesis_config = genesis_of_testnet([key.public_key], 100_000 * 10**9, 500, 3_600_000, faucet, [],
                                            int(time.time() * 1000))
    network = files_network(tmp_path, genesis_config, key, localnet=False)
    config = network.config
    serve.run(gateway_app(config.namespace, config.prefix, localnet=False), name=config.app_name("gateway"),
              route_prefix=config.route_prefix("gateway"))

    async def play() -> tuple[int, str | None, str]:
        client = await SomaClient(rpc_url=serve_url + config.route_prefix("gateway"))
        try:
            refused = None
            try:
                await client.request_faucet(recipient, 5 * 10**9, timeout_s=120)
            except errors.ProtocolError as error:
                refused = error.code
            try:
                await client.advance_epoch()
                advanced = "advanced"
            except errors.ProtocolError as error:
                advanced = error.code
            return await client.get_balance(recipient), refused, advanced
        finally:
            await client.close()

    try:
        balance, refused, advanced = asyncio.run(play())
    finally:
        serve.delete(config.app_name("gateway"))
        network.stop()
    assert (balance, refused) == ((5 * 10**9, None) if faucet else (0, "FaucetDisabled"))
    assert advanced == "LocalnetOnly"  # a testnet's epochs end on time only
