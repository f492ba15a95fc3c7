"""The testnet file (soma start testnet --config) and the testnet genesis it leads to."""
from pathlib import Path

import pytest

from actors import testnet
from soma_ray.cli.common import BadArgument
from soma_ray.cli.testnet import MAX_FILE_BYTES, read_testnet_file, read_testnet_settings
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import genesis
from soma_ray.protocol.params import SHANNONS_PER_SOMA

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "testnet.toml"
ALICE = Keypair.from_secret(bytes(range(32)))


def settings_of(text: str) -> testnet.TestnetSettings:
    return read_testnet_settings('data_dir = "/srv/soma"\n' + text)


def test_the_example_file_reads():
    settings = read_testnet_file(EXAMPLE)
    assert settings.validators >= 1
    assert settings.network_config().keys == "files"


def test_settings_read_in_their_units():
    settings = settings_of(f"""
validators = 7
epoch_duration = "10m"
validator_stake = 5000
commission_bps = 100
faucet = true
http_port = 9000
[balances]
"0x{ALICE.address.hex()}" = 12
""")
    assert (settings.validators, settings.epoch_duration_ms, settings.http_port) == (7, 600_000, 9000)
    assert settings.validator_stake == 5000 * SHANNONS_PER_SOMA
    assert settings.balances == ((ALICE.address, 12 * SHANNONS_PER_SOMA),)
    assert settings.faucet is True


def test_a_network_config_pins_validators_by_index_and_the_rest_to_the_head():
    config = settings_of("validators = 3").network_config()
    assert config.actor_resources("validator", 2)["resources"] == {"validator2": 1}
    assert config.actor_resources("clock") == testnet.TESTNET_PLACEMENT["clock"]
    assert config.localnet is False
    assert config.genesis_file == "/srv/soma/genesis.json"


def test_urls_name_the_public_host_and_serve_binds_the_http_host():
    config = settings_of('http_host = "0.0.0.0"\npublic_host = "soma.example.org"').network_config()
    assert config.http_host == "0.0.0.0"
    assert config.public_url == "http://soma.example.org:8000"
    assert settings_of('http_host = "10.0.0.5"').network_config().public_url == "http://10.0.0.5:8000"


def test_a_placement_kind_in_the_file_replaces_the_default_for_that_kind():
    config = settings_of('[placement.validator]\nnum_cpus = 1\nresources = { "v{index}" = 2 }'
                         ).network_config()
    assert config.actor_resources("validator", 1) == {"num_cpus": 1, "resources": {"v1": 2}}
    assert config.actor_resources("clock") == testnet.TESTNET_PLACEMENT["clock"]


@pytest.mark.parametrize("text, named", [
    ("validators = 0", "validators"),
    ("validators = true", "validators"),
    ("validators = 101", "validators"),
    ('epoch_duration = "soon"', "duration"),
    ("validator_stake = -1", "validator_stake"),
    ("commission_bps = 10001", "commission_bps"),
    ("http_port = 70000", "http_port"),
    ('public_host = "http://example.org"', "public_host"),
    ('http_host = "10.0.0.1:8000"', "http_host"),
    ('public_host = ""', "public_host"),
    ('scoring_device = "tpu"', "scoring_device"),
    ("epoch_duraton = 5", "unknown settings"),
    ('[balances]\n"0x12" = 5', "address"),
    (f'[balances]\n"0x{ALICE.address.hex()}" = 0', "balance"),
    ('[placement.miner]\nnum_cpus = 1', "kinds"),
    ('[placement.clock]\nnum_cpus = -1', "amounts"),
    ('[placement.clock]\nmemory = 1', "options"),
    ("validator_stake = 10000000", "genesis cannot be built"),  # 4 x the whole supply
    ("validators = [", "not TOML"),
])
def test_a_bad_setting_is_named_in_a_one_line_error(text, named):
    with pytest.raises(BadArgument, match=named):
        settings_of(text)


@pytest.mark.parametrize("text", ["validators = 4", 'data_dir = "relative/dir"'])
def test_an_absolute_data_dir_is_required(text):
    with pytest.raises(BadArgument, match="data_dir"):
        read_testnet_settings(text)


def test_an_oversized_or_binary_file_is_refused(tmp_path):
    big, binary = tmp_path / "big.toml", tmp_path / "binary.toml"
    big.write_text("#" * (MAX_FILE_BYTES + 1))
    binary.write_bytes(b"\xff\xfe")
    for path, reason in ((big, "larger"), (binary, "UTF-8"), (tmp_path / "none.toml", "No such")):
        with pytest.raises(BadArgument, match=reason):
            read_testnet_file(path)


def test_the_testnet_genesis_is_the_given_validators_and_balances_only():
    keys = [Keypair.generate() for _ in range(3)]
    settings = settings_of(f'[balances]\n"0x{ALICE.address.hex()}" = 7')
    config = settings.genesis_config([k.public_key for k in keys], 1_234)
    state = genesis(config)
    assert {m.address for m in state.system().committee.members} == {k.address for k in keys}
    assert config.balances == [(ALICE.address, 7 * SHANNONS_PER_SOMA)]
    assert config.models == []
    assert config.parameters.faucet_enabled is False
    assert config.parameters.allow_early_epoch_change is False
    assert config.parameters.epoch_duration_ms == settings.epoch_duration_ms
    assert config.timestamp_ms == 1_234


def test_with_the_faucet_on_each_validator_key_can_pay_its_fees():
    keys = [Keypair.generate() for _ in range(2)]
    config = settings_of("faucet = true").genesis_config([k.public_key for k in keys], 0)
    assert config.parameters.faucet_enabled is True
    assert {address for address, _ in config.balances} == {k.address for k in keys}


def test_soma_start_testnet_with_a_bad_file_fails_in_one_line_before_reaching_a_cluster(tmp_path):
    from typer.testing import CliRunner

    from soma_ray.cli.main import app

    bad = tmp_path / "testnet.toml"
    bad.write_text('data_dir = "/srv/soma"\nvalidators = 0\n')
    result = CliRunner().invoke(app, ["start", "testnet", "--config", str(bad),
                                      "--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {bad}: validators: 1 to 100"]


def test_a_bad_host_on_the_command_line_fails_in_one_line_before_reaching_a_cluster():
    from typer.testing import CliRunner

    from soma_ray.cli.main import app

    result = CliRunner().invoke(app, ["start", "testnet", "--config", str(EXAMPLE), "--public-host",
                                      "https://soma.example.org/", "--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: the command line: public_host: a host name or IPv4 address (no scheme, port or path)"]
