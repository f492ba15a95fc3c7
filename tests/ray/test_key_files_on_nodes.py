"""A validator key file others may read, on Ray: the testnet launcher's check on each validator's
node refuses it in one error naming the validator, the file and the chmod (before anything
starts), and a validator actor started on it anyway dies once with that error — Ray does not
restart an actor whose constructor raised, so there is no crash loop."""
import time
import uuid

import pytest
import ray

from actors import network as net
from actors.testnet import ValidatorKeysRefused, check_node_keys
from soma_ray.config import KEY_FILE, save_genesis_config, write_validator_key
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import localnet_genesis_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

ANYWHERE = {"validator": {"num_cpus": 0, "resources": {}}}  # the shared Ray has no validator<i>


def files_config(tmp_path, keys: list[Keypair]) -> net.NetworkConfig:
    genesis_file = tmp_path / "genesis.json"
    save_genesis_config(localnet_genesis_config([k.public_key for k in keys], 60_000, True,
                                                int(time.time() * 1000)), genesis_file)
    config = net.NetworkConfig(
        data_dir=str(tmp_path / "net"), validators=len(keys), namespace="soma-test",
        prefix=f"keys-{uuid.uuid4().hex[:6]}-", keys="files", genesis_file=str(genesis_file),
        placement=ANYWHERE)
    for index, key in enumerate(keys):
        write_validator_key(config, index, key)
    return config


def test_the_launcher_refuses_loose_and_foreign_keys_on_their_nodes(ray_session, tmp_path):
    keys = [Keypair.generate(), Keypair.generate()]
    config = files_config(tmp_path, keys)
    assert check_node_keys(config, timeout_s=60) == [k.public_key for k in keys]
    loose = config.validator_dir(1) / KEY_FILE
    loose.chmod(0o644)
    with pytest.raises(ValidatorKeysRefused) as refused:
        check_node_keys(config, timeout_s=60)
    assert list(refused.value.refused) == [1]
    message = str(refused.value)
    assert "validator-1" in message and f"chmod 600 {loose}" in message and "\n" not in message
    loose.chmod(0o600)
    write_validator_key(config, 0, Keypair.generate())  # not the genesis key any more
    with pytest.raises(ValidatorKeysRefused, match="not validator 0's in the genesis"):
        check_node_keys(config, timeout_s=60)


def test_a_validator_on_a_loose_key_dies_once_with_the_files_name_and_is_not_restarted(
        ray_session, tmp_path):
    config = files_config(tmp_path, [Keypair.generate()])
    key_file = config.validator_dir(0) / KEY_FILE
    key_file.chmod(0o640)
    handle = net.launch_validator(config, 0)  # max_restarts=-1, as every validator
    try:
        with pytest.raises(ray.exceptions.ActorDiedError) as died:
            ray.get(handle.ready.remote(), timeout=120)
        assert f"chmod 600 {key_file}" in str(died.value)
        time.sleep(2)
        entry = ray._private.state.actors(handle._actor_id.hex())
        assert entry["State"] == "DEAD" and entry.get("NumRestarts", 0) == 0, entry
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(handle.ready.remote(), timeout=30)
    finally:
        ray.kill(handle)
