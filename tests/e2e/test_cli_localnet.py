"""The `soma` network commands against a one-validator localnet in the shared Ray session."""
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors import network as net
from soma_ray.cli.common import BadArgument, parse_address, parse_amount
from soma_ray.cli.main import app as soma_app
from soma_ray.cli.ops import parse_duration_ms
from soma_ray.protocol.crypto import show_address
from soma_ray.wallet import Wallet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cli_net(ray_session, serve_url, tmp_path_factory):
    """A one-validator network with its gateway (the participant commands' way in; they use no
    blob store, scoring service, target index or audits, so only the gateway is deployed)."""
    from ray import serve

    from serve.gateway import gateway_app

    config = net.NetworkConfig(data_dir=str(tmp_path_factory.mktemp("cli-net")), validators=1,
                               namespace=f"soma-cli-{uuid.uuid4().hex[:6]}",
                               http_port=int(serve_url.rsplit(":", 1)[1]))
    network = net.start(config)
    serve.run(gateway_app(config.namespace, config.prefix, localnet=True), name=config.app_name("gateway"),
              route_prefix=config.route_prefix("gateway"))
    yield network
    network.stop()


@pytest.fixture(autouse=True)
def private_soma_home(tmp_path, monkeypatch):
    """No test here reads (or writes) the cluster record of the real ~/.soma."""
    monkeypatch.setenv("SOMA_HOME", str(tmp_path / "soma-home"))


@pytest.fixture()
def soma(cli_net, tmp_path):
    app = soma_app
    wallet_file = tmp_path / "wallet.json"
    runner = CliRunner()

    def invoke(*args):
        # Participants reach the gateway; `status` is the operator's view over Ray.
        where = (["--namespace", cli_net.config.namespace] if args[0] == "status"
                 else ["--rpc-url", cli_net.config.public_url])
        return runner.invoke(app, [*args, *where], env={"SOMA_WALLET": str(wallet_file)})

    invoke.wallet = wallet_file
    return invoke


def test_faucet_transfer_balance_status_and_epoch_advance(soma):
    _, alice = Wallet.load(soma.wallet).new_key("alice", set_default=True)
    _, bob = Wallet.load(soma.wallet).new_key("bob")
    assert soma("faucet", "12.5").exit_code == 0
    result = soma("transfer", show_address(bob.address), "2")
    assert result.exit_code == 0, result.output
    assert soma("balance").output.strip() == "10.499999 SOMA"  # 12.5 - 2 - the 1000-shannon fee
    assert soma("balance", show_address(bob.address)).output.strip() == "2 SOMA"
    status = soma("status").output
    assert "epoch 0 checkpoint" in status and status.rstrip().endswith("evidence 0")
    assert soma("epoch", "advance").output.strip() == "epoch 1"


def test_bad_arguments_and_failed_transactions_are_one_line_errors(soma):
    Wallet.load(soma.wallet).new_key("poor", set_default=True)
    result = soma("transfer", "0x1234", "1")
    assert result.exit_code == 1 and "expected 0x followed by 64 hex digits" in result.output
    result = soma("transfer", show_address(bytes(32)), "5")
    # Refused at admission (issue 18): an account that cannot pay the fee costs nothing.
    assert result.exit_code == 1 and "InsufficientBalanceForFees" not in result.output
    assert "balance of 0 shannons cannot pay the fees" in result.output


def test_participant_commands_name_an_unreachable_gateway_in_one_line(soma, tmp_path):
    app = soma_app
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for command in (["balance", show_address(bytes(32))], ["epoch", "advance"],
                    ["faucet", "--to", show_address(bytes(32))]):
        started = time.monotonic()
        result = CliRunner().invoke(app, [*command, "--rpc-url", dead])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert dead in result.output and time.monotonic() - started < 10


def test_a_standalone_scorer_asked_for_a_gpu_it_lacks_says_so_in_one_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    soma_command = str(Path(sys.executable).with_name("soma"))
    done = subprocess.run([soma_command, "start", "scoring", "--device", "cuda", "--config", "small",
                           "--http-port", str(port)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SOMA_HOME": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no GPU" in done.stderr


def test_stop_ends_a_detached_network_found_by_namespace(ray_session, tmp_path):
    import ray

    config = net.NetworkConfig(data_dir=str(tmp_path), validators=1,
                               namespace=f"soma-detached-{uuid.uuid4().hex[:6]}")
    network = net.start(config, detached=True)
    app = soma_app
    result = CliRunner().invoke(app, ["stop", "--namespace", config.namespace])
    assert result.exit_code == 0, result.output
    with pytest.raises(ValueError):  # the names are free: nothing of the network runs
        ray.get_actor(network.config.validator_name(0), namespace=config.namespace)
    again = CliRunner().invoke(app, ["stop", "--namespace", config.namespace])
    assert again.exit_code == 1 and "is the network started?" in again.output


def test_parsers_reject_what_they_cannot_read():
    assert parse_duration_ms("60s") == 60_000 and parse_duration_ms("500ms") == 500
    assert parse_duration_ms("2m") == 120_000 and parse_duration_ms("5") == 5_000
    assert parse_amount("0.000000001") == 1
    for bad in ("0s", "-1s", "5 days"):
        with pytest.raises(BadArgument):
            parse_duration_ms(bad)
    for bad in ("0", "-3", "1e-10", "lots"):
        with pytest.raises(BadArgument):
            parse_amount(bad)
    with pytest.raises(BadArgument):
        parse_address("0xzz")


def test_start_passes_the_mempool_limits_and_reports_a_foreign_data_dir(monkeypatch, tmp_path):
    from soma_ray.cli import start as cli

    launched = []

    def refuse(config, **_):
        launched.append(config)
        raise net.DataDirMismatch(config.data_dir, 0)

    monkeypatch.setattr(cli, "ensure_ray", lambda *_: cli.RayTarget(None, "Ray cluster: none"))
    monkeypatch.setattr(net, "start", refuse)
    app = soma_app
    result = CliRunner().invoke(app, ["start", "localnet", "--data-dir", str(tmp_path),
                                      "--mempool-capacity", "50", "--mempool-per-sender", "7",
                                      "--mempool-ttl", "2m"])
    chosen = launched[0]
    assert (chosen.mempool_capacity, chosen.mempool_per_sender, chosen.mempool_ttl_s) == (50, 7, 120)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "--force-regenesis" in result.output
    bad = CliRunner().invoke(app, ["start", "localnet", "--mempool-capacity", "0"])
    assert bad.exit_code == 2 and len(launched) == 1
    bad = CliRunner().invoke(app, ["start", "localnet", "--mempool-ttl", "soon"])
    assert bad.exit_code == 1 and "soon" in bad.output and len(launched) == 1
