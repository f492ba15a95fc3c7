"""Which Ray cluster a `soma` command talks to, and the cluster `soma start` runs.

Every command finds its network the same way (`connect`): the address it is given (`--address`
or `RAY_ADDRESS`), else the cluster `soma start` recorded in the soma home, never whatever
`ray.init(address="auto")` would find on a shared machine (somebody else's test cluster, or a
stale `/tmp/ray/ray_current_cluster`). Before `ray.init`, the address is probed (a TCP connect,
then one gRPC call to Ray's GCS, each bounded), so a dead or wrong address is a one-line
`ClusterError` within seconds instead of `ray.init` waiting for minutes.

The soma home is `$SOMA_HOME`, else `~/.soma`. `soma start localnet` (without `--address`)
writes `HOME/cluster.json`:

    kind          "detached": `soma start --detach` ran `ray start --head --block` in its own
                  session (the supervisor; it ends the cluster's processes when it gets SIGTERM,
                  and they die with it, PR_SET_PDEATHSIG); "foreground": the `soma start`
                  process itself hosts Ray (in-process, ended by Ctrl-C)
    address       the GCS address (host:port)
    pid, pid_started   the supervisor (or foreground) process and its start time, so that a
                  reused pid is never taken for it
    processes     the cluster's processes when it was recorded (pid, start time, name)
    temp_dir      Ray's --temp-dir, private to this cluster (/tmp/soma-ray-*: logs, sockets,
                  Ray's own ray_current_cluster); ray-start.log there holds `ray start`'s output
    dashboard_url, started_at

`stop_cluster` ends exactly that cluster by its record (SIGTERM to the supervisor, then SIGKILL
to any recorded or descendant process still there after a grace period): never `ray stop`,
which ends every Ray process on the host.

Token authentication (Ray's RAY_AUTH_MODE=token: every gRPC call and dashboard API request must
carry the cluster's token): `probe` tells which a cluster asks for (`auth_mode`: its GCS refuses
a call without the token, or answers it), `soma start testnet` refuses a cluster that answers
(`check_testnet_auth`, unless --insecure), and a cluster `start_detached` starts has it on
unless RAY_AUTH_MODE says otherwise (the token is made at Ray's default path when none is
found, as `ray.init` does for the in-process cluster). `token_source` says where the token is,
for the lines that tell a user how to get into the dashboard.

Ray and psutil (which Ray vendors) are imported inside the functions: `soma --help` and the
commands that never reach a cluster do not pay for them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soma_ray.files import write_atomic

SOMA_HOME_ENV = "SOMA_HOME"
DEFAULT_HOME = Path("~/.soma")
RECORD_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"
TEMP_PREFIX = "soma-ray-"
PROBE_TIMEOUT_S = 3.0
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0
# Preferred ports of a started cluster (Ray's defaults); a taken one is replaced by a free one.
PREFERRED_GCS_PORT = 6379
PREFERRED_DASHBOARD_PORT = 8265
# Keyword arguments of every `ray.init` here: Ray's own log lines stay out of the terminal.
QUIET_INIT = dict(log_to_driver=False, logging_level=logging.ERROR)
# What a cluster asks of a client (`probe`, `auth_mode`): Ray's auth token, nothing, or unknown
# (a ray:// address or a TLS GCS, which the probe does not speak).
AUTH_TOKEN, AUTH_NONE, AUTH_UNKNOWN = "token", "none", "unknown"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
# Where Ray looks for the token, first to last (ray/_private/authentication: the env var, a file
# named by the second, then ~/.ray/auth_token).
TOKEN_ENV, TOKEN_PATH_ENV, DEFAULT_TOKEN_PATH = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"


class ClusterError(ConnectionError):
    """No usable Ray cluster for a command: the message is one line, for the terminal."""


class NoClusterFound(ClusterError):
    def __init__(self, record_path: Path):
        self.record_path = record_path
        super().__init__(
            f"no network found: no Ray cluster is recorded in {record_path} (`soma start "
            "localnet` records the one it starts) and no --address / RAY_ADDRESS is given")


class ClusterGone(ClusterError):
    """A recorded cluster whose processes are gone (the machine restarted, it was killed)."""

    def __init__(self, record: "ClusterRecord"):
        self.record = record
        super().__init__(
            f"the Ray cluster recorded in {record.path} ({record.address}) is not running; "
            "`soma start localnet --detach` starts a new one, `soma stop` forgets it")


class ClusterUnreachable(ClusterError):
    def __init__(self, address: str, reason: str):
        self.address = address
        self.reason = reason
        super().__init__(f"no Ray cluster answers at {address}: {reason}")


class BadClusterAddress(ClusterError):
    def __init__(self, address: str, reason: str):
        self.address = address
        super().__init__(f"Ray address {address!r}: {reason}")


class ClusterStartFailed(ClusterError):
    def __init__(self, reason: str, log: Path | None):
        self.log = log
        where = f" (see {log})" if log else ""
        super().__init__(f"could not start a Ray cluster: {reason}{where}")


class ClusterNotClosed(ClusterError):
    """`soma start testnet` on a cluster that does not require Ray's auth token (or of which
    that cannot be told), without --insecure."""

    def __init__(self, address: str, auth: str):
        self.address = address
        self.auth = auth
        if auth == AUTH_NONE:
            why = (f"the Ray cluster at {address} runs without token authentication: whoever "
                   "reaches its ports can run code on it and read every validator key")
        else:
            why = (f"cannot tell whether the Ray cluster at {address} requires Ray's auth token "
                   "(a ray:// or TLS address: give the head's GCS address, host:6379)")
        super().__init__(
            f"{why}. Start every node with RAY_AUTH_MODE=token (cluster.yaml and "
            "deploy/cluster-local.yaml do; docs/operations.md), or pass --insecure for a cluster "
            "nobody else can reach")


class ForegroundClusterRunning(ClusterError):
    def __init__(self, record: "ClusterRecord"):
        self.record = record
        super().__init__(
            f"a `soma start` in the foreground (pid {record.pid}) hosts the Ray cluster at "
            f"{record.address}: use that network, or stop it first (Ctrl-C there, or `soma stop`)")


# ---------------------------------------------------------------------------------- the record


def soma_home() -> Path:
    """$SOMA_HOME, else ~/.soma."""
    return Path(os.environ.get(SOMA_HOME_ENV) or DEFAULT_HOME).expanduser()


def record_path(home: Path | None = None) -> Path:
    return (home or soma_home()) / RECORD_FILE


@dataclass
class ClusterRecord:
    address: str
    kind: str  # "detached" | "foreground"
    pid: int
    pid_started: float
    processes: list[dict] = field(default_factory=list)
    temp_dir: str | None = None
    dashboard_url: str | None = None
    started_at: str = ""
    path: Path = field(default=Path(RECORD_FILE), compare=False)

    def running(self) -> bool:
        """Whether the supervisor (or the foreground process) is still the recorded one."""
        return _same_process(self.pid, self.pid_started)

    def live_processes(self) -> dict[int, float]:
        """The recorded processes, and the supervisor's descendants now, that still run."""
        found = {p["pid"]: p["started"] for p in self.processes
                 if _same_process(p["pid"], p["started"])}
        if self.running():
            found[self.pid] = self.pid_started
            found.update(_descendants(self.pid))
        return found

    def to_json(self) -> dict:
        out = asdict(self)
        del out["path"]
        return out


def read_record(home: Path | None = None) -> ClusterRecord | None:
    """The recorded cluster, or None; a record that cannot be read counts as none."""
    path = record_path(home)
    try:
        data = json.loads(path.read_text())
        data.pop("path", None)
        return ClusterRecord(**data, path=path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: ClusterRecord, home: Path | None = None) -> ClusterRecord:
    path = record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(record.to_json(), indent=2) + "\n").encode())
    record.path = path
    return record


def forget(record: ClusterRecord) -> None:
    """Remove `record`'s file (if it still describes that cluster) and its private temp dir."""
    current = read_record(record.path.parent)
    same = current is not None and (current.pid, current.pid_started) == (record.pid,
                                                                          record.pid_started)
    if same:
        with contextlib.suppress(FileNotFoundError):
            record.path.unlink()
    temp_dir = Path(record.temp_dir) if record.temp_dir else None
    if temp_dir is not None and temp_dir.name.startswith(TEMP_PREFIX) and temp_dir.is_dir():
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def locked(home: Path | None = None):
    """Hold the soma home's cluster lock: one `soma start`/`stop` at a time decides."""
    import fcntl

    home = home or soma_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(home / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- processes


def _psutil():
    import ray  # noqa: F401  (puts Ray's vendored psutil on the path)
    import psutil

    return psutil


def _started(pid: int) -> float | None:
    psutil = _psutil()
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _same_process(pid: int, started: float) -> bool:
    now = _started(pid)
    return now is not None and abs(now - started) < 0.05


def _descendants(pid: int) -> dict[int, float]:
    psutil = _psutil()
    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found[child.pid] = child.create_time()
    return found


def _describe(pids: dict[int, float]) -> list[dict]:
    psutil = _psutil()
    out = []
    for pid, started in sorted(pids.items()):
        try:
            name = psutil.Process(pid).name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.append({"pid": pid, "started": started, "name": name})
    return out


def _signal(pids: dict[int, float], sig: int) -> None:
    for pid, started in pids.items():
        if _same_process(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _wait_gone(pids: dict[int, float], timeout_s: float) -> dict[int, float]:
    """Wait until none of `pids` runs (or the timeout); returns those still running."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: t for pid, t in pids.items() if _same_process(pid, t)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def end_processes(pids: dict[int, float], grace_s: float) -> dict[int, float]:
    """Wait up to `grace_s` for `pids` (already signalled) to exit, SIGKILL whatever is left;
    returns what still runs after that (normally nothing)."""
    left = _wait_gone(pids, grace_s)
    if left:
        _signal(left, signal.SIGKILL)
        left = _wait_gone(left, 5.0)
    return left


# ---------------------------------------------------------------------------------- addresses


def _split(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadClusterAddress(address, "expected host:port (or ray://host:port)")
    return host.strip("[]"), int(port)


def check_address(address: str) -> str:
    """A cluster address a command may use: host:port or ray://host:port, never `auto`/`local`
    (they would join, or start, whatever Ray the machine happens to have)."""
    if address.strip().lower() in ("auto", "local"):
        raise BadClusterAddress(address, "soma joins a named cluster only: give host:port, or "
                                "leave it out to use the one `soma start` recorded")
    _split(address)
    return address.strip()


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Raise ClusterUnreachable unless a Ray cluster answers at `address` within a few
    `timeout_s`: a TCP connect, then (for a GCS address) one GetClusterId call to the GCS, so a
    port held by something else (a dashboard, a web server) is refused too. Returns what the
    cluster asks of a client: AUTH_TOKEN, AUTH_NONE (it answered the call without a token) or
    AUTH_UNKNOWN (a ray:// address or a TLS GCS: not probed past the TCP connect).

    A cluster with token authentication (Ray's default for a cluster `ray.init` starts, for
    `ray start` where ~/.ray/auth_token exists, and for one `start_detached` starts) refuses that
    call with UNAUTHENTICATED; this process then switches to token mode (RAY_AUTH_MODE=token,
    as ray.init never does for an explicit address) and asks again with the token, so a
    missing or wrong token is a one-line error too, not ray.init retrying it for minutes."""
    host, port = _split(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ClusterUnreachable(address, reason) from None
    if "://" in address or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return AUTH_UNKNOWN  # Ray Client (ray://) speaks another protocol; TLS needs Ray's certs
    try:
        import grpc
    except ImportError:
        return AUTH_UNKNOWN
    auth = AUTH_NONE
    code = _cluster_id_call(f"{host}:{port}", timeout_s, ())
    if code == grpc.StatusCode.UNAUTHENTICATED:
        auth = AUTH_TOKEN
        code = _cluster_id_call(f"{host}:{port}", timeout_s, _use_token(address))
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise ClusterUnreachable(address, "it refuses this machine's Ray auth token "
                                     "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    if code is None:
        return auth
    reason = (f"no answer within {timeout_s:g} s" if code == grpc.StatusCode.DEADLINE_EXCEEDED
              else "the port is open but does not answer as a Ray GCS")
    raise ClusterUnreachable(address, reason)


def auth_mode(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """What the GCS at `address` asks of a client, from one GetClusterId call without a token:
    AUTH_TOKEN (refused, UNAUTHENTICATED), AUTH_NONE (answered), else AUTH_UNKNOWN (a ray:// or
    TLS address, or no answer). Unlike `probe` it changes nothing in this process."""
    if "://" in address or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return AUTH_UNKNOWN
    try:
        import grpc
    except ImportError:
        return AUTH_UNKNOWN
    host, port = _split(address)
    code = _cluster_id_call(f"{host}:{port}", timeout_s, ())
    if code is None:
        return AUTH_NONE
    return AUTH_TOKEN if code == grpc.StatusCode.UNAUTHENTICATED else AUTH_UNKNOWN


def check_testnet_auth(address: str, auth: str, insecure: bool) -> str | None:
    """Whether `soma start testnet` may start on the cluster at `address`, which asks `auth` of
    its clients (`probe`): on one requiring Ray's token, yes (None); on one that does not (or of
    which that cannot be told), only with `insecure`, and then the warning line to print;
    otherwise ClusterNotClosed."""
    if auth == AUTH_TOKEN:
        return None
    if not insecure:
        raise ClusterNotClosed(address, auth)
    what = ("runs without token authentication" if auth == AUTH_NONE
            else "may run without token authentication (ray:// or TLS: not probed)")
    return (f"warning: --insecure: the Ray cluster at {address} {what}; whoever reaches its "
            "ports can run code on it and read the validator keys")


def process_auth() -> str:
    """The auth mode of this process's Ray (after `ray.init` started a cluster in it, that
    cluster's: `ray.init` turns token mode on for a new local cluster unless RAY_AUTH_MODE is
    set)."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    return AUTH_TOKEN if get_authentication_mode() == AuthenticationMode.TOKEN else AUTH_NONE


def token_source(environ=None) -> str:
    """Where this machine's Ray auth token is, in Ray's order: $RAY_AUTH_TOKEN, the file
    $RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token (expanded)."""
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_ENV):
        return f"${TOKEN_ENV}"
    if environ.get(TOKEN_PATH_ENV):
        return environ[TOKEN_PATH_ENV]
    home = environ.get("HOME")
    return str(Path(home) / ".ray" / "auth_token") if home else DEFAULT_TOKEN_PATH


def ensure_token() -> None:
    """Make sure Ray finds a token on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token): when it finds none, write a new random one to ~/.ray/auth_token,
    private (0600 in a 0700 directory) — what `ray get-auth-token --generate` does, without its
    umask-wide file mode."""
    from ray._private.authentication.authentication_token_generator import (
        generate_new_authentication_token,
    )
    from ray._raylet import AuthenticationTokenLoader

    from ray.exceptions import AuthenticationError

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    try:
        if loader.has_token(ignore_auth_mode=True):
            return
    except AuthenticationError as error:  # RAY_AUTH_TOKEN_PATH names a missing or empty file
        raise ClusterStartFailed(str(error).split(". ")[0], None) from None
    path = Path(DEFAULT_TOKEN_PATH).expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, generate_new_authentication_token().encode(), durable=True)
    loader.reset_cache()


def _cluster_id_call(target: str, timeout_s: float, metadata: tuple):
    """The gRPC status code of one GetClusterId call to the GCS at `target` (None: it answered)."""
    import grpc
    import ray  # noqa: F401  (Ray's generated protocol modules)
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata or None)
        return None
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


def _use_token(address: str) -> tuple:
    """Switch this process to Ray's token mode; the token as gRPC metadata."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise ClusterUnreachable(address, "it requires a Ray auth token, and RAY_AUTH_MODE is "
                                 "'disabled' here")
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")  # Ray caches its settings: read RAY_AUTH_MODE again
    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    if not loader.has_token():
        raise ClusterUnreachable(address, "it requires a Ray auth token and none is found here "
                                 "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return tuple(loader.get_token_for_http_header().items())


def explicit_address(address: str | None = None) -> str | None:
    """`address`, else $RAY_ADDRESS, checked; None when neither is given."""
    chosen = address or os.environ.get("RAY_ADDRESS") or None
    return check_address(chosen) if chosen else None


def resolve(address: str | None = None, home: Path | None = None
            ) -> tuple[str | None, ClusterRecord | None]:
    """The address a command uses and the record it comes from: an explicit address (with the
    record, if it names the same cluster), else the live recorded cluster; (None, None) when
    nothing is recorded. A recorded cluster that is gone raises ClusterGone."""
    explicit = explicit_address(address)
    record = read_record(home)
    if explicit is not None:
        same = record is not None and record.address == explicit and record.running()
        return explicit, record if same else None
    if record is None:
        return None, None
    if not record.running():
        raise ClusterGone(record)
    return record.address, record


@dataclass
class Connection:
    """What `connect` joined: `address` None when the process was connected already, or it
    started an in-process local Ray (`local`)."""
    address: str | None
    record: ClusterRecord | None = None
    local: bool = False
    connected_here: bool = True  # this call ran ray.init (so the caller may ray.shutdown)
    dashboard_url: str | None = None
    auth: str | None = None  # what the cluster asks of a client (AUTH_*); None: not known


def connect(address: str | None = None, *, namespace: str | None = None,
            home: Path | None = None, local_fallback: bool = False,
            local_options: dict | None = None, probe_timeout_s: float = PROBE_TIMEOUT_S,
            **init_kwargs) -> Connection:
    """`ray.init` to the network's cluster, found as every command finds it: `address`, else
    $RAY_ADDRESS, else the cluster recorded in the soma home; with nothing of these, an
    in-process local Ray (`ray.init(address="local", **local_options)`) if `local_fallback`,
    else NoClusterFound. A process already connected keeps its connection (a command called
    from Python, the tests' shared Ray).

    Raises a ClusterError (one line) within about 2 × `probe_timeout_s` when the cluster is
    gone or does not answer. Ray's log lines stay out of the terminal (QUIET_INIT)."""
    import ray

    if ray.is_initialized():
        return Connection(address=None, connected_here=False)
    target, record = resolve(address, home)
    options = {**QUIET_INIT, **init_kwargs}
    if namespace is not None:
        options["namespace"] = namespace
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if target is None:
        if not local_fallback:
            raise NoClusterFound(record_path(home))
        context = ray.init(address="local", **options, **(local_options or {}))
        keep_raylet_messages_in_logs()
        return Connection(address=None, local=True, dashboard_url=context.dashboard_url or None,
                          auth=process_auth())
    auth = probe(target, probe_timeout_s)
    context = ray.init(address=target, **options)
    keep_raylet_messages_in_logs()
    return Connection(address=target, record=record, dashboard_url=context.dashboard_url or None,
                      auth=auth)


RAYLET_MESSAGES_FILE = "soma-driver-raylet.log"


def keep_raylet_messages_in_logs() -> None:
    """Keep the raylet's messages to this driver (e.g. "(raylet) WARNING: 8 PYTHON worker
    processes have been started…") out of the terminal: Ray prints them from a thread of its
    own whatever `log_to_driver` says (ray._private.worker.listen_error_messages), so they go to
    RAYLET_MESSAGES_FILE in the session's log directory instead (Ray's logs). Other output is
    left as it is. Idempotent; call it after ray.init."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "keeps_raylet_messages", False):
        return

    def print_or_log(data, ignore_prefix):
        if data.get("pid") != "raylet":
            return printer(data, ignore_prefix)
        try:
            logs = Path(worker.global_worker.node.get_logs_dir_path())
            with open(logs / RAYLET_MESSAGES_FILE, "a") as file:
                for line in data.get("lines", ()):
                    file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (raylet) {line}\n")
        except Exception:  # noqa: BLE001 - a log line is never worth a failure
            pass

    print_or_log.keeps_raylet_messages = True
    worker.print_to_stdstream = print_or_log


# ---------------------------------------------------------------------------------- start / stop


def _port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens there, else a free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind(("", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ClusterStartFailed("no free port", None)


def _ray_start_command(temp_dir: str, dashboard: bool) -> tuple[list[str], str | None]:
    gcs = _port(PREFERRED_GCS_PORT)
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--temp-dir", temp_dir, "--port", str(gcs),
               "--ray-client-server-port", str(_port()),
               "--dashboard-agent-listen-port", str(_port()),
               "--disable-usage-stats", "--log-style", "record", "--log-color", "false"]
    if not dashboard:
        return command + ["--include-dashboard", "false"], None
    port = _port(PREFERRED_DASHBOARD_PORT)
    return command + ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(port)], \
        f"127.0.0.1:{port}"


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "it exited"
    errors = [line for line in lines if "error" in line.lower() or "Exception" in line]
    return (errors or lines or ["it exited without output"])[-1][-300:]


def start_detached(home: Path | None = None, timeout_s: float = START_TIMEOUT_S,
                   dashboard: bool = True) -> ClusterRecord:
    """Start a Ray head node that outlives this process and record it: `ray start --head
    --block` in a new session, its output in TEMP_DIR/ray-start.log, a private --temp-dir (so
    Ray's own ray_current_cluster file is never the machine-wide one) and free ports (tried
    once more if another process took a port in the meantime, or if the raylet missed Ray's
    fixed 30 s registration window on a loaded machine)."""
    try:
        return _start_detached(home, timeout_s, dashboard)
    except ClusterStartFailed as error:
        if not any(word in str(error).lower()
                   for word in ("already", "in use", "bind", "timed out during startup")):
            raise
        if error.log is not None and error.log.parent.name.startswith(TEMP_PREFIX):
            shutil.rmtree(error.log.parent, ignore_errors=True)
    return _start_detached(home, timeout_s, dashboard)


def _start_detached(home: Path | None, timeout_s: float, dashboard: bool) -> ClusterRecord:
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    log = Path(temp_dir) / "ray-start.log"
    command, dashboard_url = _ray_start_command(temp_dir, dashboard)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not env.get(AUTH_MODE_ENV):
        # `ray start --head` turns token auth on only where a token already exists; a cluster
        # soma starts has it on, as the in-process one `ray.init` starts does.
        ensure_token()
        env[AUTH_MODE_ENV] = AUTH_TOKEN
    # SIGTERM from `soma stop` ends the node at once (Ray would otherwise drain it for 30 s).
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    with open(log, "w") as out:
        supervisor = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      env=env, close_fds=True)
    address_file = Path(temp_dir) / "ray_current_cluster"
    deadline = time.monotonic() + timeout_s
    while not address_file.exists() or not address_file.read_text().strip():
        if supervisor.poll() is not None:
            raise ClusterStartFailed(_last_error(log), log)  # the log stays, for the user
        if time.monotonic() > deadline:
            supervisor.terminate()
            raise ClusterStartFailed(f"not ready within {timeout_s:g} s", log)
        time.sleep(0.1)
    started = _started(supervisor.pid)
    processes = {supervisor.pid: started, **_descendants(supervisor.pid)}
    record = ClusterRecord(
        address=address_file.read_text().strip(), kind="detached", pid=supervisor.pid,
        pid_started=started, processes=_describe(processes), temp_dir=temp_dir,
        dashboard_url=dashboard_url, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return write_record(record, home)


def record_foreground(address: str, dashboard_url: str | None,
                      home: Path | None = None) -> ClusterRecord:
    """Record the in-process Ray of a foreground `soma start` (this process), so the other
    commands find its network; `forget` it when the process stops."""
    pid = os.getpid()
    started = _started(pid)
    record = ClusterRecord(
        address=address, kind="foreground", pid=pid, pid_started=started,
        processes=_describe({pid: started, **_descendants(pid)}), dashboard_url=dashboard_url,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return write_record(record, home)


def stop_cluster(record: ClusterRecord, grace_s: float = STOP_GRACE_S) -> dict[int, float]:
    """End the recorded cluster and nothing else: SIGTERM to the supervisor (or to a foreground
    `soma start`, which then stops its network as on Ctrl-C), SIGKILL to any of the
    recorded processes or their descendants still running after `grace_s`; then remove the
    record and the cluster's temp dir. Returns the processes that could not be ended."""
    targets = record.live_processes()
    if record.running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(record.pid, signal.SIGTERM)
    else:  # the supervisor is gone: whatever it left behind gets SIGTERM itself
        _signal(targets, signal.SIGTERM)
    left = end_processes(targets, grace_s)
    forget(record)
    return left
