"""The `ray up` cluster configs pass Ray's own validation (the steps `ray up` takes before it
contacts any host: defaults filled in, then the JSON schema and its checks), start the testnet
that deploy/testnet.toml describes, and are closed by default: Ray's token auth on every node,
the token made on the head at setup (never in the repository), the dashboard on loopback.
Nothing here runs `ray up`."""
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
    assert re.search(r"RAY_enable_autoscaler_v2=0\b.*ray start --head", commands)
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


# ---------------------------------------------------------------------------------- closed by default


def ray_starts(config: dict) -> list[str]:
    """Every start command of every node that runs `ray start` or `soma`."""
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
            if "ray start" in c or "soma " in c]


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_every_node_starts_ray_with_token_auth(path):
    config = prepared(path)
    starts = ray_starts(config)
    assert any("ray start --head" in c for c in starts)
    assert any("ray start --address" in c for c in starts)
    assert any("soma start testnet" in c for c in starts)
    for command in starts:  # set in the same shell, before the command runs
        where = max(command.find("ray start"), command.find("soma start"))
        assert re.search(r"export [^;]*\bRAY_AUTH_MODE=token\b", command[:where]), command
    assert "RAY_AUTH_MODE=disabled" not in yaml.safe_dump(config)
    # and for whatever later runs on a node (`ray exec`, `soma testnet restart`): its shell rc
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_the_token_is_made_private_on_the_head_at_setup_and_copied_to_every_worker(path):
    config = prepared(path)
    head_setup = " ".join(config["head_setup_commands"])
    assert "umask 077" in head_setup and "ray get-auth-token --generate" in head_setup
    assert head_setup.index("umask 077") < head_setup.index("ray get-auth-token")
    assert "chmod 600 ~/.ray/auth_token" in head_setup
    # a token already there is kept (an upgrade's `ray up` reruns the setup commands)
    assert "test -s ~/.ray/auth_token ||" in head_setup
    # after the package (and so `ray`) is installed
    assert head_setup.index("pip install ~/soma-ray") < head_setup.index("ray get-auth-token")
    assert config["cluster_synced_files"] == ["~/.ray/auth_token"]
    assert not any("auth_token" in c for c in config["worker_setup_commands"])
    # never copied from the launching machine, never given on a command line
    assert not any("auth_token" in str(k) + str(v) for k, v in config["file_mounts"].items())
    assert "RAY_AUTH_TOKEN=" not in yaml.safe_dump(config)


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["cloud", "local"])
def test_the_dashboard_listens_on_the_heads_loopback_only(path):
    config = prepared(path)
    text = yaml.safe_dump(config)
    assert "0.0.0.0" not in text
    hosts = re.findall(r"--dashboard-host[= ](\S+)", " ".join(config["head_start_ray_commands"]))
    assert hosts == ["127.0.0.1"]
    assert "--dashboard-host" not in " ".join(config["worker_start_ray_commands"])


TOKEN_VALUE = re.compile(r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9_-]{16,}")


def test_no_ray_token_is_in_the_repository():
    skip = {".venv", ".git", ".hypothesis", "__pycache__", "soma_ray.egg-info", "node_modules"}
    found = []
    for file in ROOT.rglob("*"):
        if skip & set(file.relative_to(ROOT).parts) or not file.is_file():
            continue
        if file.name in ("auth_token", ".auth_token") or file.suffix == ".token":
            found.append(str(file))
            continue
        if file.stat().st_size > 2_000_000:
            continue
        try:
            text = file.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if TOKEN_VALUE.search(text):
            found.append(str(file))
    assert found == []
