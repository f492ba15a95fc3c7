"""A network whose validator keys and genesis come from files (what a multi-node testnet needs),
and whose actors take their Ray resources from the config's placement."""
import time
import uuid

import pytest
import ray

from actors import network as net
from soma_ray.config import save_genesis_config, write_validator_key
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import localnet_genesis_config
from soma_ray.protocol.genesis import genesis as genesis_state
from soma_ray.protocol.state import VALIDATOR

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def assigned(handle) -> dict:
    """The resources Ray assigned to the actor's worker."""
    return ray.get(handle.__ray_call__.remote(
        lambda _: ray.get_runtime_context().get_assigned_resources()), timeout=30)


def test_a_network_from_key_and_genesis_files_commits_with_placed_actors(ray_session, tmp_path):
    key = Keypair.generate()
    genesis_file = tmp_path / "genesis.json"
    save_genesis_config(localnet_genesis_config([key.public_key], 60_000, True, int(time.time() * 1000)),
                        genesis_file)
    config = net.NetworkConfig(
        data_dir=str(tmp_path / "net"), validators=1, namespace="soma-test",
        prefix=f"files-{uuid.uuid4().hex[:6]}-", keys="files", genesis_file=str(genesis_file),
        placement={"validator": {"num_cpus": 0.01}, "clock": {"num_cpus": 0.02}})
    write_validator_key(config, 0, key)
    network = net.start(config)
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
