"""`soma start` / `soma stop` as a user runs them: each command a process of its own, with a
private soma home (so its cluster record is this test's alone), data dir and Ray namespace.

These tests do not use the shared `ray_session`: `soma start --detach` starts its own Ray
cluster (`ray start --head --block` with a private --temp-dir and free ports, so it never meets
the shared test Ray or another session's cluster), and `soma stop` ends exactly that one by its
record. Whatever a failed test leaves behind is ended by its record too, never with `ray stop`.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from soma_ray import cluster
from soma_ray.protocol.genesis import preset_keypair

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SOMA = Path(sys.executable).with_name("soma")
# What Ray's own loggers print (Python: "2026-01-01 10:00:00,123\tINFO ...", C++: "[2026-01-01
# 10:00:00,123 W 123 123] ...", forwarded worker output: "(raylet) ...", "(pid=123) ...").
RAY_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+\s|\[\d{4}-\d\d-\d\d |"
                          r"\((raylet|pid=\d+|\w+ pid=\d+)\))", re.MULTILINE)


class Soma:
    """Runs `soma` in a subprocess with this test's home, data dir and namespace."""

    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "home"
        self.data_dir = tmp_path / "data"
        self.namespace = f"soma-life-{uuid.uuid4().hex[:6]}"
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(SOMA_HOME=str(self.home), SOMA_WALLET=str(tmp_path / "wallet.json"),
                        RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        self.records: list[cluster.ClusterRecord] = []  # every cluster seen, for the cleanup

    def command(self, *args: str) -> list[str]:
        namespaced = args[0] in ("status", "stop") or args[:2] == ("start", "localnet")
        extra = ["--namespace", self.namespace] if namespaced else []
        if args[:2] == ("start", "localnet"):  # no dashboard: ~10 fewer processes to start
            extra += ["--validators", "1", "--data-dir", str(self.data_dir), "--no-dashboard"]
            if "--http-port" not in args:  # the services are the foreground test's, not the lifecycle's
                extra.append("--no-services")
        return [str(SOMA), *args, *extra]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        output = done.stdout + done.stderr
        assert not RAY_LOG_LINE.search(output), f"Ray's log lines reached the terminal:\n{output}"
        self.remember()
        return done

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def record(self) -> cluster.ClusterRecord | None:
        return cluster.read_record(self.home)

    def remember(self) -> None:
        record = self.record()
        if record is not None and all(r.pid != record.pid for r in self.records):
            self.records.append(record)

    def height(self) -> int:
        status = self.ok("status")
        return int(re.search(r"checkpoint (\d+)", status).group(1))

    def genesis_timestamp(self) -> int:
        return json.loads((self.data_dir / "network.json").read_text())["genesis_timestamp_ms"]

    def cleanup(self) -> None:
        for record in self.records:
            cluster.stop_cluster(record, grace_s=5)


@pytest.fixture()
def soma(tmp_path):
    runner = Soma(tmp_path)
    yield runner
    runner.cleanup()


def running(record: cluster.ClusterRecord) -> list[int]:
    return [p["pid"] for p in record.processes if cluster._same_process(p["pid"], p["started"])]


def test_start_stop_start_resumes_the_chain_and_stop_ends_exactly_the_recorded_cluster(soma):
    # A new cluster, recorded with its processes (the supervisor, the GCS, the raylet...).
    out = soma.ok("start", "localnet", "--detach")
    first = soma.record()
    assert "started, recorded in" in out and first.kind == "detached" and first.running()
    names = {p["name"] for p in first.processes}
    assert {"gcs_server", "raylet"} <= names, names
    assert Path(first.temp_dir, "ray_current_cluster").exists()  # Ray's own file: private
    genesis, before = soma.genesis_timestamp(), soma.height()

    # --keep-ray: the network stops, the cluster stays up and recorded...
    assert "stays up (--keep-ray" in soma.ok("stop", "--keep-ray")
    assert soma.record() == first and first.running()
    # ...and the next start reuses it: same cluster, the chain resumes from the data dir.
    out = soma.ok("start", "localnet", "--detach")
    assert "reused" in out and soma.record() == first
    resumed = soma.height()
    assert resumed >= before and soma.genesis_timestamp() == genesis

    # stop ends that cluster: its processes are gone, its record and temp dir removed.
    assert "ended the Ray cluster" in soma.ok("stop")
    assert soma.record() is None and running(first) == [] and not Path(first.temp_dir).exists()

    # A stale record (its cluster gone) is cleaned up by the next start, which starts a new one.
    cluster.write_record(cluster.ClusterRecord(
        address=first.address, kind="detached", pid=first.pid, pid_started=first.pid_started),
        soma.home)
    out = soma.ok("start", "localnet", "--detach")
    second = soma.record()
    assert "was not running (record removed)" in out and "started, recorded in" in out
    assert second.pid != first.pid and second.running()
    assert soma.height() >= resumed and soma.genesis_timestamp() == genesis

    # A recorded cluster that dies: every command says so in one line, within seconds...
    os.kill(second.pid, signal.SIGKILL)  # the supervisor our start recorded; the rest dies with it
    deadline = time.monotonic() + 30
    while cluster._same_process(second.pid, second.pid_started) and time.monotonic() < deadline:
        time.sleep(0.2)
    started = time.monotonic()
    failed = soma.run("status")
    assert time.monotonic() - started < 15  # a process start and `import ray` included
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and "is not running" in failed.stderr, failed.stderr
    # ...and stop forgets it, ending whatever it left behind.
    assert "was not running; removed its record" in soma.ok("stop")
    assert soma.record() is None
    deadline = time.monotonic() + 15
    while running(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running(second) == []


def test_a_wrong_address_fails_in_one_line_within_seconds(soma):
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    failed = soma.run("status", "--address", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 15
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert "no Ray cluster answers" in failed.stderr


def test_a_foreground_start_is_found_by_the_other_commands_and_stopped_by_soma_stop(soma, tmp_path):
    # Ray's defaults here: a cluster ray.init starts wants a token (written to ~/.ray/auth_token
    # of this private HOME), which the joining commands must bring themselves.
    soma.env.pop("RAY_AUTH_MODE")
    soma.env["HOME"] = str(tmp_path / "user")
    log = tmp_path / "foreground.out"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "w") as out:  # the main job: `make run` is this with the default port
        foreground = subprocess.Popen(soma.command("start", "localnet", "--http-port", str(port)),
                                      env=soma.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Ray dashboard" not in log.read_text() and time.monotonic() < deadline:
            assert foreground.poll() is None, log.read_text()
            time.sleep(0.5)
        record = soma.record()
        assert record.kind == "foreground" and record.pid == foreground.pid
        assert (tmp_path / "user" / ".ray" / "auth_token").exists()
        assert soma.height() >= 0
        gateway = f"http://127.0.0.1:{port}"
        assert f"gateway: {gateway}" in log.read_text()
        user = "0x" + preset_keypair("user", 0).address.hex()  # the participant way in: HTTP
        assert soma.ok("balance", user, "--rpc-url", gateway).strip() == "1000000 SOMA"
        stopped = soma.run("stop")
        said = stopped.stdout + stopped.stderr
        assert stopped.returncode == 0 and "ended the Ray cluster" in said and "Deleting app" not in said, said
        assert foreground.wait(timeout=30) == 0 and soma.record() is None
        text = log.read_text()
        assert "Ray dashboard: not running" in text, text
        assert "stopping" in text and not RAY_LOG_LINE.search(text), text
        assert "Application 'gateway' is ready" not in text, text  # Serve's INFO lines stay out
    finally:
        if foreground.poll() is None:
            foreground.kill()
