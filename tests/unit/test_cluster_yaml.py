"""The `ray up` cluster configs pass Ray's own validation (the steps `ray up` takes before it
contacts any host: defaults filled in, then the JSON schema and its checks) and start the testnet
that deploy/testnet.toml describes. Nothing here runs `ray up`."""
import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from soma_ray.cli.testnet import read_testnet_file

ROOT = Path(__file__).resolve().parents[2]
CLOUD, LOCAL = ROOT / "cluster.yaml", ROOT / "deploy" / "cluster-local.yaml"
TESTNET = read_testnet_file(ROOT / "deploy" / "testnet.toml")


def prepared(path: Path) -> dict:
    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    return config


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_ray_accepts_the_cluster_config(path):
    prepared(path)


def test_ray_refuses_a_config_it_does_not_know():
    config = yaml.safe_load(CLOUD.read_text())
    config["available_node_types"]["validator0"]["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_the_head_starts_ray_with_autoscaler_v1_then_the_testnet_from_the_file(path):
    commands = " ".join(prepared(path)["head_start_ray_commands"])
    assert re.search(r"RAY_enable_autoscaler_v2=0;.*ray start --head", commands)
    assert "soma start testnet --config ~/soma-ray/deploy/testnet.toml" in commands
    assert commands.index("ray start --head") < commands.index("soma start testnet")


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_every_node_installs_torch_pinned_before_the_package(path):
    setup = prepared(path)["setup_commands"]
    assert setup.index("pip install torch==2.13.0") < setup.index("pip install ~/soma-ray")


def test_the_cloud_config_has_one_fixed_node_per_validator_and_gpu_and_miner_types():
    types = prepared(CLOUD)["available_node_types"]
    for i in range(TESTNET.validators):
        assert types[f"validator{i}"]["resources"] == {f"validator{i}": 1}
        assert types[f"validator{i}"]["min_workers"] == types[f"validator{i}"]["max_workers"] == 1
    assert types["gpu"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["miner"]["resources"] == {"miner": 1}


def test_the_local_config_gives_each_validator_host_its_resource():
    config = prepared(LOCAL)
    script = " ".join(config["worker_start_ray_commands"])
    roles = dict(re.findall(r"(\d+\.\d+\.\d+\.\d+)\) ROLE='\{\"(validator\d+)\": 1\}'", script))
    assert sorted(roles.values()) == [f"validator{i}" for i in range(TESTNET.validators)]
    assert set(roles) <= set(config["provider"]["worker_ips"])
    assert config["provider"]["head_ip"] not in roles
