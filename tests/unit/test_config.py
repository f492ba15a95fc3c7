"""soma_ray/config.py: the network's settings file, keys and genesis from files, placement."""
import json
import os
import stat

import pytest

from soma_ray.config import (
    CONFIG_FILE, NetworkConfig, load_config, load_genesis_config, prepare_data_dir, save_config,
    save_genesis_config, write_validator_key,
)
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import genesis, localnet_genesis_config, preset_keypair


@pytest.mark.parametrize("field", ["mempool_capacity", "mempool_per_sender", "mempool_ttl_s"])
def test_network_json_keeps_a_mempool_setting_and_an_older_file_gets_the_default(tmp_path, field):
    default = getattr(NetworkConfig(data_dir=str(tmp_path)), field)
    path = tmp_path / CONFIG_FILE
    save_config(NetworkConfig(data_dir=str(tmp_path), **{field: 7}))
    assert getattr(load_config(str(tmp_path)), field) == 7
    older = json.loads(path.read_text())
    del older[field]  # written before the setting existed
    path.write_text(json.dumps(older))
    assert getattr(load_config(str(tmp_path)), field) == default
    # Resuming keeps the stored settings (the default, here) and writes the field out.
    resumed = prepare_data_dir(NetworkConfig(data_dir=str(tmp_path), **{field: 9}), force_regenesis=False)
    assert getattr(resumed, field) == default
    assert json.loads(path.read_text())[field] == default


def test_a_resumed_network_keeps_its_settings_but_takes_the_new_namespace(tmp_path):
    first = prepare_data_dir(NetworkConfig(data_dir=str(tmp_path), validators=7), force_regenesis=False)
    assert first.genesis_timestamp_ms > 0
    again = prepare_data_dir(NetworkConfig(data_dir=str(tmp_path), validators=4, namespace="other",
                                           prefix="p-"), force_regenesis=False)
    assert (again.validators, again.genesis_timestamp_ms) == (7, first.genesis_timestamp_ms)
    assert (again.namespace, again.prefix) == ("other", "p-")
    fresh = prepare_data_dir(NetworkConfig(data_dir=str(tmp_path), validators=4), force_regenesis=True)
    assert fresh.validators == 4


def test_the_preset_localnet_genesis_is_the_one_the_config_builds(tmp_path):
    config = NetworkConfig(data_dir=str(tmp_path), validators=3, epoch_duration_ms=5_000,
                           genesis_timestamp_ms=123)
    built = config.genesis_config()
    assert built == localnet_genesis_config(
        [preset_keypair("validator", i).public_key for i in range(3)], 5_000, True, 123)
    assert built.parameters.epoch_duration_ms == 5_000
    assert built.parameters.allow_early_epoch_change is True
    assert config.validator_public_keys() == [preset_keypair("validator", i).public_key for i in range(3)]
    # Each validator key holds a fee balance at genesis (it signs faucet transactions).
    funded = dict(built.balances)
    assert all(funded[preset_keypair("validator", i).address] > 0 for i in range(3))


def test_keys_and_genesis_come_from_files(tmp_path):
    keys = [Keypair.generate() for _ in range(2)]
    genesis_path = tmp_path / "genesis.json"
    written = localnet_genesis_config([k.public_key for k in keys], 60_000, False, 42)
    save_genesis_config(written, genesis_path)
    config = NetworkConfig(data_dir=str(tmp_path / "net"), validators=2, keys="files",
                           genesis_file=str(genesis_path))
    for index, keypair in enumerate(keys):
        write_validator_key(config, index, keypair)
        key_file = config.validator_dir(index) / "validator.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert config.validator_keypair(index).address == keypair.address
    assert load_genesis_config(genesis_path) == written
    assert config.genesis_config() == written
    assert config.validator_public_keys() == [k.public_key for k in keys]
    # The file's genesis is a real one: its committee is the file's validators.
    members = genesis(config.genesis_config()).system().committee.members
    assert sorted(m.address for m in members) == sorted(k.address for k in keys)


def test_placement_gives_each_validator_its_own_resource_and_defaults_to_no_cpu(tmp_path):
    default = NetworkConfig(data_dir=str(tmp_path))
    assert default.actor_resources("validator", 2) == {"num_cpus": 0}
    assert default.actor_resources("clock") == {"num_cpus": 0}
    placed = NetworkConfig(data_dir=str(tmp_path), placement={
        "validator": {"num_cpus": 1, "resources": {"validator{index}": 1}},
        "clock": {"resources": {"head": 0.01}},
    })
    assert placed.actor_resources("validator", 2) == {"num_cpus": 1, "resources": {"validator2": 1}}
    assert placed.actor_resources("clock") == {"num_cpus": 0, "resources": {"head": 0.01}}
    save_config(placed)  # placement travels in network.json with the rest
    assert load_config(str(tmp_path)).placement == placed.placement


def test_service_routes_and_the_public_url(tmp_path):
    plain = NetworkConfig(data_dir=str(tmp_path))
    assert (plain.route_prefix("gateway"), plain.route_prefix("blobs")) == ("/", "/blobs")
    assert plain.public_url == "http://127.0.0.1:8000"
    prefixed = NetworkConfig(data_dir=str(tmp_path), prefix="gw-1a2b-", http_port=9001)
    assert prefixed.route_prefix("gateway") == "/gw-1a2b"
    assert prefixed.route_prefix("scoring") == "/gw-1a2b/scoring"
    assert prefixed.public_url == "http://127.0.0.1:9001/gw-1a2b"
    assert prefixed.app_name("blobs") == "gw-1a2b-blobs"
