"""A testnet only on a closed cluster, and how a user gets into Ray's dashboard: what a cluster
asks of a client (told by its GCS, without starting Ray: fake GCS servers speak Ray's own gRPC
service here), the decision of `soma start testnet` (--insecure), the lines `soma start` prints
about the dashboard, and the token a cluster `soma start --detach` starts gets."""
import os
import subprocess
import sys
import textwrap
from concurrent import futures

import grpc
import pytest
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from typer.testing import CliRunner

from soma_ray import cluster
from soma_ray.cli.main import app as soma_app
from soma_ray.cli.start import dashboard_lines

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "deploy", "testnet.toml")
TOKEN = "0123456789abcdef" * 4


class FakeGcs(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
    """Answers GetClusterId; with `token`, only to a call carrying Ray's bearer header (what a
    GCS with RAY_AUTH_MODE=token does: UNAUTHENTICATED otherwise)."""

    def __init__(self, token: str | None):
        self.token = token

    def GetClusterId(self, request, context):
        if self.token is not None:
            sent = dict(context.invocation_metadata()).get("authorization")
            if sent != f"Bearer {self.token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "Missing authentication token")
        return gcs_service_pb2.GetClusterIdReply(cluster_id=b"x" * 28)


@pytest.fixture
def gcs():
    servers = []

    def start(token: str | None = None) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(FakeGcs(token), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.SOMA_HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path / "home"


# ---------------------------------------------------------------------------------- what a cluster asks


def test_a_gcs_that_answers_without_a_token_is_open_and_one_that_refuses_wants_the_token(gcs):
    open_gcs, closed_gcs = gcs(), gcs(TOKEN)
    assert cluster.auth_mode(open_gcs, 2) == cluster.AUTH_NONE
    assert cluster.auth_mode(closed_gcs, 2) == cluster.AUTH_TOKEN
    assert cluster.probe(open_gcs, 2) == cluster.AUTH_NONE
    assert cluster.auth_mode("ray://head:10001") == cluster.AUTH_UNKNOWN


def test_the_probe_of_a_closed_gcs_joins_with_the_token_and_reports_token_auth(gcs):
    """In a process of its own: the probe switches its process to Ray's token mode."""
    closed_gcs = gcs(TOKEN)
    program = textwrap.dedent(f"""
        from soma_ray import cluster
        try:
            print(cluster.probe({closed_gcs!r}, 2), cluster.auth_mode({closed_gcs!r}, 2))
        except cluster.ClusterUnreachable as error:
            print("refused", error)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    good = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env={**env, "RAY_AUTH_TOKEN": TOKEN})
    assert good.stdout.split() == ["token", "token"], good.stderr
    bad = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60, env={**env, "RAY_AUTH_TOKEN": "not-the-token-at-all"})
    assert bad.stdout.startswith("refused") and "refuses this machine's Ray auth token" in bad.stdout


# ---------------------------------------------------------------------------------- --insecure


def test_a_testnet_starts_on_a_token_cluster_and_on_an_open_one_only_with_insecure():
    assert cluster.check_testnet_auth("10.0.0.1:6379", cluster.AUTH_TOKEN, False) is None
    assert cluster.check_testnet_auth("10.0.0.1:6379", cluster.AUTH_TOKEN, True) is None
    for auth in (cluster.AUTH_NONE, cluster.AUTH_UNKNOWN):
        with pytest.raises(cluster.ClusterNotClosed) as refused:
            cluster.check_testnet_auth("10.0.0.1:6379", auth, False)
        message = str(refused.value)
        assert "10.0.0.1:6379" in message and "RAY_AUTH_MODE=token" in message
        assert "--insecure" in message and "\n" not in message
        warning = cluster.check_testnet_auth("10.0.0.1:6379", auth, True)
        assert warning.startswith("warning: --insecure") and "10.0.0.1:6379" in warning
    assert isinstance(refused.value, ConnectionError)  # the commands' one-line errors


def test_soma_start_testnet_refuses_an_open_cluster_before_joining_it(gcs):
    open_gcs = gcs()
    result = CliRunner().invoke(soma_app, ["start", "testnet", "--config", EXAMPLE,
                                           "--address", open_gcs])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Ray cluster at " + open_gcs)
    assert "runs without token authentication" in lines[0] and "--insecure" in lines[0]


# ---------------------------------------------------------------------------------- dashboard lines


def test_a_token_dashboard_says_which_command_prints_the_token_and_where_it_is():
    env = {"HOME": "/home/ada"}
    assert dashboard_lines("127.0.0.1:8265", cluster.AUTH_TOKEN, environ=env) == [
        "Ray dashboard: http://127.0.0.1:8265",
        "  it asks for the cluster's auth token: `ray get-auth-token` prints it (from "
        "/home/ada/.ray/auth_token); paste it at the prompt"]
    lines = dashboard_lines("127.0.0.1:8265", cluster.AUTH_TOKEN,
                            environ={**env, "RAY_AUTH_TOKEN_PATH": "/etc/ray/token"})
    assert "(from /etc/ray/token)" in lines[1]
    lines = dashboard_lines("127.0.0.1:8265", cluster.AUTH_TOKEN,
                            environ={**env, "RAY_AUTH_TOKEN": "secret-value"})
    assert "(from $RAY_AUTH_TOKEN)" in lines[1] and "secret-value" not in " ".join(lines)


def test_an_open_or_absent_dashboard_says_so():
    assert dashboard_lines(None, cluster.AUTH_TOKEN) == ["Ray dashboard: not running"]
    assert dashboard_lines("127.0.0.1:8265", cluster.AUTH_NONE) == [
        "Ray dashboard: http://127.0.0.1:8265 (no auth token: Ray's token authentication is "
        "off, RAY_AUTH_MODE=disabled)"]
    assert dashboard_lines("127.0.0.1:8265", None) == ["Ray dashboard: http://127.0.0.1:8265"]


def test_a_testnet_dashboard_names_the_port_forward_and_the_token_on_the_head():
    env = {"HOME": "/home/ubuntu"}
    lines = dashboard_lines("127.0.0.1:8265", cluster.AUTH_TOKEN, testnet=True, environ=env)
    assert lines == [
        "Ray dashboard: http://127.0.0.1:8265 on the head; from your machine `ray dashboard "
        "cluster.yaml` (or your cluster config) forwards it to http://localhost:8265",
        "  it asks for the cluster's auth token: `ray exec cluster.yaml 'ray get-auth-token'` "
        "prints it (on the head: /home/ubuntu/.ray/auth_token)"]
    other_port = dashboard_lines("127.0.0.1:8300", cluster.AUTH_TOKEN, testnet=True, environ=env)
    assert "`ray dashboard cluster.yaml --remote-port 8300`" in other_port[0]
    assert dashboard_lines(None, cluster.AUTH_TOKEN, testnet=True) == ["Ray dashboard: not running"]


# ---------------------------------------------------------------------------------- the detached cluster's token


def test_ensure_token_makes_a_private_token_once_and_keeps_one_that_exists(tmp_path):
    """In a process of its own (HOME is the test's): a token made at Ray's default path, kept;
    a token given by RAY_AUTH_TOKEN used as it is; a missing RAY_AUTH_TOKEN_PATH file refused."""
    program = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from soma_ray import cluster
        cluster.ensure_token()
        token = Path.home() / ".ray" / "auth_token"
        first = token.read_text()
        cluster.ensure_token()
        print(oct(token.stat().st_mode & 0o777), oct(token.parent.stat().st_mode & 0o777),
              len(first), token.read_text() == first)
        os.environ["HOME"] = {str(tmp_path / "other")!r}
        os.environ["RAY_AUTH_TOKEN"] = {TOKEN!r}
        cluster.ensure_token()
        print(os.path.exists(Path.home() / ".ray"))
        del os.environ["RAY_AUTH_TOKEN"]
        os.environ["RAY_AUTH_TOKEN_PATH"] = {str(tmp_path / "nope")!r}
        try:
            cluster.ensure_token()
        except cluster.ClusterStartFailed as error:
            print(error)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env={**env, "HOME": str(tmp_path)})
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["0o600", "0o700", "64", "True"], done.stderr
    assert lines[1] == "False"  # nothing written where a token is given another way
    assert "RAY_AUTH_TOKEN_PATH is set but file cannot be opened" in lines[2]
