"""How every `soma` command finds its cluster (soma_ray/cluster.py), without starting Ray: the
record in the soma home, addresses and their probe, ending a recorded cluster by its processes,
and the one-line errors of the commands when the cluster is gone or does not answer."""
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soma_ray import cluster
from soma_ray.cli import model
from soma_ray.cli.main import app as soma_app


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private soma home, and no RAY_ADDRESS from the environment."""
    monkeypatch.setenv(cluster.SOMA_HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path / "home"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_record(home: Path, address: str | None = None) -> cluster.ClusterRecord:
    """A record of a cluster whose supervisor is gone (a pid that exited)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return cluster.write_record(cluster.ClusterRecord(
        address=address or f"127.0.0.1:{closed_port()}", kind="detached", pid=gone.pid,
        pid_started=time.time() - 5), home)


def soma(*args, env=None):
    return CliRunner().invoke(soma_app, list(args), env=env)


# ---------------------------------------------------------------------------------- the record


def test_the_record_lives_in_the_soma_home_and_round_trips(home, monkeypatch):
    assert cluster.soma_home() == home and cluster.record_path() == home / "cluster.json"
    monkeypatch.delenv(cluster.SOMA_HOME_ENV)
    assert cluster.soma_home() == Path("~/.soma").expanduser()
    monkeypatch.setenv(cluster.SOMA_HOME_ENV, str(home))
    assert cluster.read_record() is None
    written = cluster.write_record(cluster.ClusterRecord(
        address="10.0.0.1:6379", kind="detached", pid=os.getpid(),
        pid_started=cluster._started(os.getpid()), processes=[], temp_dir=None))
    again = cluster.read_record()
    assert again == written and again.path == home / "cluster.json" and again.running()
    assert json.loads((home / "cluster.json").read_text())["address"] == "10.0.0.1:6379"
    (home / "cluster.json").write_text("{not json")
    assert cluster.read_record() is None  # unreadable: as if nothing were recorded


def test_a_reused_pid_is_not_taken_for_the_recorded_process(home):
    record = cluster.ClusterRecord(address="x:1", kind="detached", pid=os.getpid(),
                                   pid_started=cluster._started(os.getpid()) - 100)
    assert not record.running() and record.live_processes() == {}


# ---------------------------------------------------------------------------------- addresses


def test_addresses_are_host_port_never_auto_or_local():
    assert cluster.check_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert cluster.check_address("ray://head:10001") == "ray://head:10001"
    for bad in ("auto", "local", "AUTO", "head", "head:port", ":6379"):
        with pytest.raises(cluster.BadClusterAddress):
            cluster.check_address(bad)


def test_an_explicit_address_wins_then_ray_address_then_the_record(home, monkeypatch):
    assert cluster.resolve() == (None, None)
    record = cluster.write_record(cluster.ClusterRecord(
        address="10.0.0.1:6379", kind="detached", pid=os.getpid(),
        pid_started=cluster._started(os.getpid())))
    assert cluster.resolve() == ("10.0.0.1:6379", record)
    assert cluster.resolve("10.0.0.2:1") == ("10.0.0.2:1", None)
    assert cluster.resolve("10.0.0.1:6379") == ("10.0.0.1:6379", record)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.3:2")
    assert cluster.resolve() == ("10.0.0.3:2", None)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(cluster.BadClusterAddress):
        cluster.resolve()


def test_a_recorded_cluster_that_is_gone_is_an_error_naming_the_fix(home):
    dead_record(home)
    with pytest.raises(cluster.ClusterGone) as error:
        cluster.resolve()
    assert "soma start localnet --detach" in str(error.value) and "\n" not in str(error.value)


def test_nothing_recorded_and_no_address_is_an_error_unless_a_local_ray_is_allowed(home):
    with pytest.raises(cluster.NoClusterFound) as error:
        cluster.connect()
    assert str(home / "cluster.json") in str(error.value)


def test_the_probe_refuses_a_closed_port_a_silent_listener_and_a_web_server_in_seconds():
    started = time.monotonic()
    with pytest.raises(cluster.ClusterUnreachable, match="refused"):
        cluster.probe(f"127.0.0.1:{closed_port()}", timeout_s=1.0)
    assert time.monotonic() - started < 2
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(cluster.ClusterUnreachable, match="no answer within 1 s"):
            cluster.probe(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.0)
        assert time.monotonic() - started < 4

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

    web = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with pytest.raises(cluster.ClusterUnreachable, match="does not answer as a Ray GCS"):
            cluster.probe(f"127.0.0.1:{web.server_address[1]}", timeout_s=2.0)
    finally:
        web.shutdown()


# ---------------------------------------------------------------------------------- stopping


SUPERVISOR = textwrap.dedent("""
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    if sys.argv[1] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        def stop(*_):
            child.terminate(); child.wait(); sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
    print(child.pid, flush=True)
    time.sleep(120)
""")


def fake_cluster(home: Path, behaviour: str) -> tuple[cluster.ClusterRecord, subprocess.Popen]:
    """A 'supervisor' in its own session with one child, recorded as `soma start` records."""
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, behaviour],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(supervisor.stdout.readline())
    pids = {supervisor.pid: cluster._started(supervisor.pid), child: cluster._started(child)}
    temp_dir = tempfile.mkdtemp(prefix=cluster.TEMP_PREFIX)
    record = cluster.write_record(cluster.ClusterRecord(
        address="127.0.0.1:1", kind="detached", pid=supervisor.pid,
        pid_started=pids[supervisor.pid], processes=cluster._describe(pids), temp_dir=temp_dir),
        home)
    return record, supervisor


@pytest.mark.parametrize("behaviour", ["graceful", "stubborn"])
def test_stop_cluster_ends_the_recorded_processes_and_removes_the_record(home, behaviour):
    record, supervisor = fake_cluster(home, behaviour)
    pids = [p["pid"] for p in record.processes]
    assert record.running() and set(record.live_processes()) == set(pids)
    started = time.monotonic()
    assert cluster.stop_cluster(record, grace_s=1.0) == {}
    supervisor.wait(timeout=5)
    assert time.monotonic() - started < 8
    assert not any(cluster._same_process(p["pid"], p["started"]) for p in record.processes)
    assert cluster.read_record() is None and not Path(record.temp_dir).exists()


def test_forget_keeps_a_newer_record_and_never_removes_a_foreign_temp_dir(home, tmp_path):
    old = dead_record(home)
    newer = cluster.write_record(cluster.ClusterRecord(
        address="127.0.0.1:2", kind="detached", pid=os.getpid(),
        pid_started=cluster._started(os.getpid()), temp_dir=str(tmp_path)))
    cluster.forget(old)
    assert cluster.read_record() == newer
    cluster.forget(newer)
    assert cluster.read_record() is None and tmp_path.exists()  # not a soma-ray-* dir


# ---------------------------------------------------------------------------------- the commands


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    return result.output


def test_operator_commands_fail_in_one_line_within_seconds_on_a_dead_record(home):
    """(The participant commands reach the gateway over HTTP instead: test_cli_localnet.)"""
    record = dead_record(home)
    started = time.monotonic()
    output = one_line_error(soma("status"))
    assert time.monotonic() - started < 10
    assert record.address in output and "is not running" in output


def test_a_wrong_address_is_a_one_line_error_within_seconds(home):
    started = time.monotonic()
    output = one_line_error(soma("status", "--address", f"127.0.0.1:{closed_port()}"))
    assert "no Ray cluster answers" in output and time.monotonic() - started < 10
    output = one_line_error(soma("status", "--address", "auto"))
    assert "host:port" in output
    output = one_line_error(soma("status", env={"RAY_ADDRESS": f"127.0.0.1:{closed_port()}"}))
    assert "no Ray cluster answers" in output


def test_nothing_recorded_is_a_one_line_error_naming_soma_start(home):
    output = one_line_error(soma("status"))
    assert "soma start localnet" in output
    output = one_line_error(soma("stop"))
    assert "soma start localnet" in output


def test_stop_forgets_a_dead_record_and_start_refuses_beside_a_foreground_one(home):
    record = dead_record(home)
    result = soma("stop")
    assert result.exit_code == 0 and "was not running; removed its record" in result.output
    assert cluster.read_record() is None
    cluster.write_record(cluster.ClusterRecord(  # this very process plays the foreground start
        address=record.address, kind="foreground", pid=os.getpid(),
        pid_started=cluster._started(os.getpid())))
    output = one_line_error(soma("start", "localnet", "--detach"))
    assert f"pid {os.getpid()}" in output and "soma stop" in output


def test_model_train_fails_in_one_line_on_a_dead_record(home, tmp_path):
    dead_record(home)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("x = 1\n" * 50)
    started = time.monotonic()
    result = CliRunner().invoke(model.app, ["train", "--corpus", str(corpus), "--out",
                                            str(tmp_path / "w.safetensors"), "--steps", "1"])
    assert result.exit_code == 1 and "is not running" in result.output, result.output
    assert result.output.count("\n") == 1 and time.monotonic() - started < 30


def test_a_started_cluster_gets_a_private_temp_dir_free_ports_and_a_loopback_dashboard():
    command, dashboard = cluster._ray_start_command("/tmp/soma-ray-x", dashboard=True)
    assert command[command.index("--temp-dir") + 1] == "/tmp/soma-ray-x"
    assert {"--head", "--block", "--disable-usage-stats"} <= set(command)
    assert command[command.index("--dashboard-host") + 1] == "127.0.0.1"
    assert dashboard == f"127.0.0.1:{command[command.index('--dashboard-port') + 1]}"
    command, dashboard = cluster._ray_start_command("/tmp/soma-ray-x", dashboard=False)
    assert dashboard is None and command[command.index("--include-dashboard") + 1] == "false"
    with socket.socket() as taken:  # a port in use is never handed to Ray
        taken.bind(("", 0))
        taken.listen()
        assert cluster._port(taken.getsockname()[1]) != taken.getsockname()[1]
