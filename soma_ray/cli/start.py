"""`soma start localnet|scoring|testnet`: start a network (or a standalone scoring service).

`localnet` runs validators and the epoch clock (and, unless --no-services, the gateway and its
services; with --miners/--challengers a crowd of scripted participants), on the Ray cluster it
joins or starts; `testnet` reads a testnet file (`soma_ray.cli.testnet`) and starts one over a
Ray cluster's nodes.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import ray
import typer

from actors import network as net
from actors.audit import sampling_coverage
from actors.crowd import crowd_held_out, crowd_stats, launch_crowd, stop_crowd
from actors.testnet import ValidatorKeysRefused, ValidatorNodesMissing, start_testnet
from soma_ray import cluster
from soma_ray.cli.common import BadArgument, RpcOption, endpoints, fail
from soma_ray.cli.ops import AddressOption, NamespaceOption, parse_duration_ms, quiet_serve
from soma_ray.cli.testnet import check_scalars, read_testnet_file
from soma_ray.client import SomaClient
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.state import CHALLENGE
from soma_ray.protocol.targets import DISTANCE_SCALE
from soma_ray.node.sampling import Coverage
from soma_ray.strategies import Stats, crowd_mix, roster
from soma_ray.strategies.decide import LAZY_RATE, fraud_summary, fraud_table
from soma_ray.strategies.roster import MINER_ROLES, ROLES

app = typer.Typer(name="start", help="Start a network.", no_args_is_help=True)

STATUS_INTERVAL_S = 1.0
# The crowd's pause between rounds.
CROWD_PAUSE_S = 1.0


@dataclass
class RayTarget:
    """The cluster `soma start` runs the network on."""
    dashboard: str | None
    note: str  # one line: which cluster, and where it is recorded
    record: cluster.ClusterRecord | None = None  # the recorded cluster it uses, if any
    foreground: bool = False  # this process hosts the Ray (and its record)
    started: bool = False  # this command started the recorded cluster
    auth: str | None = None  # what the cluster asks of a client (cluster.AUTH_*); None: unknown


def ensure_ray(address: str | None, detach: bool, namespace: str,
               dashboard: bool = True) -> RayTarget:
    """Join the cluster at `address`, or the recorded one, or start one (and record it).

    Never what `auto` finds: on a shared machine that could be somebody else's test cluster. A
    recorded cluster that is still up is reused; one that is gone is cleaned up and replaced.
    A detached network must outlive this process, so it gets a `ray start --head --block`
    cluster (`cluster.start_detached`); otherwise this process hosts a local Ray that ends
    with it, recorded while it runs so that the other commands find it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    given = cluster.explicit_address(address)
    if given is not None:
        joined = cluster.connect(given, namespace=namespace)
        return RayTarget(joined.dashboard_url,
                         f"Ray cluster {given} (given; `soma stop` leaves it up)", auth=joined.auth)
    with cluster.locked():
        record, note = cluster.read_record(), ""
        if record is not None and not record.running():
            cluster.stop_cluster(record)  # whatever it left behind, its record, its temp dir
            note = f"the recorded Ray cluster {record.address} was not running (record removed); "
            record = None
        if record is not None:
            if record.kind == "foreground":
                raise cluster.ForegroundClusterRunning(record)
            try:
                joined = cluster.connect(record.address, namespace=namespace)
            except cluster.ClusterUnreachable as error:
                raise cluster.ClusterError(
                    f"{error}; `soma stop` ends the recorded cluster") from None
            return RayTarget(record.dashboard_url,
                             f"Ray cluster {record.address}: reused, recorded in {record.path}",
                             record, auth=joined.auth)
        if detach:
            record = cluster.start_detached(dashboard=dashboard)
            try:
                joined = cluster.connect(record.address, namespace=namespace)
            except BaseException:  # a cluster nobody can use: do not leave it behind
                ray.shutdown()
                cluster.stop_cluster(record)
                raise
            return RayTarget(record.dashboard_url,
                             f"{note}Ray cluster {record.address}: started, recorded in "
                             f"{record.path} (`soma stop` ends it)", record, started=True,
                             auth=joined.auth)
        if ray.is_initialized():  # called from Python on a connected process
            return RayTarget(None, f"{note}Ray cluster of this process")
        if not os.environ.get(cluster.AUTH_MODE_ENV):  # ray.init turns token auth on: its token
            cluster.ensure_token()                      # file private (Ray's follows the umask)
        context = ray.init(address="local", namespace=namespace, include_dashboard=dashboard,
                           **cluster.QUIET_INIT)
        cluster.keep_raylet_messages_in_logs()
        record = cluster.record_foreground(ray.get_runtime_context().gcs_address,
                                           context.dashboard_url)
        return RayTarget(context.dashboard_url,
                         f"{note}Ray cluster {record.address}: in this process until Ctrl-C, "
                         f"recorded in {record.path}", record, foreground=True,
                         auth=cluster.process_auth())


DEFAULT_DASHBOARD_PORT = 8265


def dashboard_lines(dashboard: str | None, auth: str | None, testnet: bool = False,
                    environ=None) -> list[str]:
    """What `soma start` prints about Ray's dashboard at `dashboard` (host:port, None: not
    running): its URL and how to get in. A cluster with token auth (`auth`) answers every page
    with Ray's "Authentication Token Required" prompt, so the lines say where the token is
    (`cluster.token_source`, this machine's) and which command prints it. On a testnet the
    dashboard listens on the head's loopback only: the lines name the cluster launcher's port
    forward, and the token on the head."""
    if not dashboard:
        return ["Ray dashboard: not running"]
    url = f"http://{dashboard}"
    if testnet:
        port = dashboard.rpartition(":")[2]
        remote = "" if port == str(DEFAULT_DASHBOARD_PORT) else f" --remote-port {port}"
        lines = [f"Ray dashboard: {url} on the head; from your machine `ray dashboard "
                 f"cluster.yaml{remote}` (or your cluster config) forwards it to "
                 f"http://localhost:{DEFAULT_DASHBOARD_PORT}"]
        if auth == cluster.AUTH_TOKEN:
            lines.append(f"  it asks for the cluster's auth token: `ray exec cluster.yaml 'ray "
                         f"get-auth-token'` prints it (on the head: {cluster.token_source(environ)})")
        elif auth == cluster.AUTH_NONE:
            lines.append("  no auth token: this cluster runs without token authentication")
        return lines
    if auth == cluster.AUTH_TOKEN:
        return [f"Ray dashboard: {url}",
                f"  it asks for the cluster's auth token: `ray get-auth-token` prints it "
                f"(from {cluster.token_source(environ)}); paste it at the prompt"]
    if auth == cluster.AUTH_NONE:
        return [f"Ray dashboard: {url} (no auth token: Ray's token authentication is off, "
                f"{cluster.AUTH_MODE_ENV}=disabled)"]
    return [f"Ray dashboard: {url}"]


def status_line(found: list[dict | None], tx_per_s: float) -> str:
    up = [s for s in found if s is not None]
    if not up:
        return f"validators up 0/{len(found)}"
    epoch = max(s.epoch for s in up)
    height = max(s.sequence or 0 for s in up)
    return (f"epoch {epoch} | checkpoint {height} | {tx_per_s:.1f} tx/s | "
            f"validators up {len(up)}/{len(found)}")


@dataclass
class Game:
    """What the status line shows of the game, read each tick."""
    open_targets: int
    threshold: int  # fixed point
    challenges_open: int
    crowd: dict  # actors.crowd.crowd_stats
    sampling: Coverage | None = None  # the audit workers' sampling ledgers (None: no answer)
    held_out: dict | None = None  # the crowd's last measurement of the network's held-out loss


def game_line(game: Game) -> str:
    """The game's part of the status line: hits (revealed submissions standing or not),
    open targets, the distance threshold, challenges open on chain and resolved (the crowd's),
    slashes the crowd's miners suffered, and their claims; the frauds injected, caught (slashed)
    and escaped (claimed although fraud), by kind as injected/caught/escaped; the honest and
    lazy miners slashed; the validators' sampling audits: fills audited within their window of
    those that needed it, and the fill-to-verdict latency p50."""
    miners = Stats()
    for role in MINER_ROLES:
        miners.add(game.crowd.get(role, Stats()))
    challengers = game.crowd.get("challenger", Stats())
    honest = sum(game.crowd.get(role, Stats()).slashes for role in ("honest", "lazy"))
    line = (f"hits {miners.submissions} | open {game.open_targets} | "
            f"threshold {game.threshold / DISTANCE_SCALE:.4f} | challenges open {game.challenges_open} "
            f"resolved {challengers.challenges_won + challengers.challenges_lost} | "
            f"slashes {miners.slashes} | claims {miners.claims}")
    if game.crowd.get("fraudulent") is not None:
        line += f" | {fraud_summary(fraud_table(game.crowd['fraudulent'].fraud_outcomes))}"
    line += f" | honest slashed {honest} | {sampling_part(game.sampling)}"
    trainers = game.crowd.get("trainer")
    if trainers is not None:  # the trainers' fine-tunes, and the network's held-out loss
        line += f" | fine-tunes {trainers.trainings} ({trainers.hit_items} hit items)"
        if game.held_out is not None:
            line += (f" | held-out {game.held_out['network_loss_bpb']:.3f} bpb "
                     f"(routed {game.held_out['network_routed_bpb']:.3f})")
    return line


def sampling_part(found: Coverage | None) -> str:
    if found is None:
        return "sampled: no answer"
    needed = found.assigned - found.moot
    ratio = "" if found.ratio is None else f" ({found.ratio:.0%})"
    p50 = "" if found.latency_p50_s is None else f" p50 {found.latency_p50_s:.1f} s"
    return f"sampled {found.audited}/{needed}{ratio}{p50}"


async def read_game(client: SomaClient, crowd: list, workers: list | None = None) -> Game:
    system = await client.get_system_state()
    stats = crowd_stats(crowd)
    losses = crowd_held_out(crowd) if "trainer" in stats else []
    return Game(len(await client.get_targets("open")), system.target_state.distance_threshold,
                len(await client.get_object_ids(CHALLENGE)), stats,
                sampling_coverage(workers or []), losses[-1] if losses else None)


def watch(network: net.Network, crowd: list | None = None) -> None:
    """Print the live status line until Ctrl-C (with the game's figures when a crowd plays)."""
    last_count, last_time = None, time.monotonic()
    loop = asyncio.new_event_loop()
    client = None if not crowd else loop.run_until_complete(
        SomaClient(namespace=network.config.namespace, prefix=network.config.prefix))
    while True:
        found = []
        for handle in network.validators:
            try:
                found.append(None if handle is None else ray.get(handle.status.remote(), timeout=5))
            except (ray.exceptions.RayError, TimeoutError):
                found.append(None)
        counts = [s.committed_transactions for s in found if s is not None]
        now = time.monotonic()
        count = max(counts, default=0)
        rate = 0.0 if last_count is None else (count - last_count) / (now - last_time)
        last_count, last_time = count, now
        line = status_line(found, rate)
        if client is not None:
            try:
                line += " | " + game_line(loop.run_until_complete(read_game(client, crowd, network.audit_workers)))
            except (ProtocolError, ray.exceptions.RayError, TimeoutError, ConnectionError):
                line += " | game: no answer"
        typer.echo("\r" + line.ljust(78), nl=False)
        time.sleep(STATUS_INTERVAL_S)


@app.command("localnet")
def start_localnet(
    validators: Annotated[int, typer.Option("--validators", min=1, help="Number of validators.")] = 4,
    epoch_duration: Annotated[str, typer.Option("--epoch-duration", help="e.g. 60s, 5m.")] = "60s",
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Where validators keep their disks [default: ~/.soma/localnet, "
        "$SOMA_HOME/localnet when SOMA_HOME is set].", show_default=False)] = None,
    force_regenesis: Annotated[bool, typer.Option("--force-regenesis", help="Wipe the data dir and start a new chain.")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Keep running after this command; `soma stop` ends it.")] = False,
    mempool_capacity: Annotated[int, typer.Option(
        "--mempool-capacity", min=1, help="Most transactions one validator's mempool holds.")] = (
        net.NetworkConfig.mempool_capacity),
    mempool_per_sender: Annotated[int, typer.Option(
        "--mempool-per-sender", min=1, help="Most one sender may hold in a mempool.")] = (
        net.NetworkConfig.mempool_per_sender),
    mempool_ttl: Annotated[str, typer.Option(
        "--mempool-ttl", help="Drop a pooled transaction not committed within this, e.g. 10m.")] = (
        f"{net.NetworkConfig.mempool_ttl_s}s"),
    dashboard: Annotated[bool, typer.Option(
        "--dashboard/--no-dashboard",
        help="Run Ray's dashboard in a cluster this command starts.")] = True,
    services: Annotated[bool, typer.Option(
        "--services/--no-services",
        help="Start the gateway, blob store, scoring service and target index.")] = True,
    http_port: Annotated[int, typer.Option(
        "--http-port", min=1, max=65535, help="The gateway's port.")] = net.NetworkConfig.http_port,
    scoring_device: Annotated[str, typer.Option(
        "--scoring-device", help="auto (a GPU when the cluster has one), cpu or cuda.")] = "auto",
    miners: Annotated[int, typer.Option(
        "--miners", min=0, help="Scripted miners to run (honest, lazy and fraudulent).")] = 0,
    challengers: Annotated[int, typer.Option("--challengers", min=0, help="Scripted challengers.")] = 0,
    trainers: Annotated[int, typer.Option(
        "--trainers", min=0, help="Scripted model owners who fine-tune their model every epoch (a Ray Train "
        "job each) on the data of the hits it won and their own corpus.")] = 0,
    fraud_rate: Annotated[float, typer.Option(
        "--fraud-rate", min=0.0, max=1.0, help="Share of the miners that cheat.")] = 0.1,
    corpus: Annotated[Optional[Path], typer.Option(
        "--corpus", help="Directory the honest miners read [default: the stdlib's sources].",
        show_default=False)] = None,
    crowd_actors: Annotated[int, typer.Option(
        "--crowd-actors", min=1, help="Ray actors the scripted participants share.")] = 2,
    crowd_seed: Annotated[int, typer.Option("--crowd-seed", help="Seed of the participants' keys and choices.")] = 0,
    address: AddressOption = None,
    namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
) -> None:
    """Start (or resume from the data dir) a localnet of validators and the epoch clock.

    With --miners, --challengers or --trainers, a crowd of scripted participants plays the game on
    it (docs/game.md): round(miners x fraud-rate) cheat, a fifth of the others are lazy; trainers
    fine-tune their models every epoch (a Ray Train job each).

    Without --address it reuses the Ray cluster an earlier `soma start --detach` recorded (if
    still up), else starts one: with --detach a `ray start` cluster recorded in
    $SOMA_HOME/cluster.json for `soma stop`; without, a Ray inside this process."""
    try:
        duration_ms = parse_duration_ms(epoch_duration)
        ttl_s = -(-parse_duration_ms(mempool_ttl) // 1000)  # whole seconds, rounded up
        crowd = crowd_plan(miners, challengers, fraud_rate, corpus, crowd_actors, crowd_seed, services, trainers)
    except BadArgument as error:
        raise fail(str(error)) from None
    try:
        target = ensure_ray(address, detach, namespace, dashboard)
    except ConnectionError as error:  # cluster.ClusterError, or ray.init's own
        raise fail(str(error)) from None
    try:
        run_network(target, data_dir, validators, duration_ms, force_regenesis, detach, namespace,
                    scoring_device if services else None,
                    crowd, mempool_capacity=mempool_capacity, mempool_per_sender=mempool_per_sender,
                    mempool_ttl_s=ttl_s, http_port=http_port, genesis_weights=services)
    finally:
        if target.foreground:  # this process's Ray ends with it
            cluster.forget(target.record)


MODEL_SIZES = ("small", "v1")
DEFAULT_WEIGHTS_CACHE_GIB = 64


def network_model_config(rpc_url: str):
    """The V1 size the network at `rpc_url` scores with: its chain's embedding_dim (the small
    model's width, or V1's)."""
    from soma_ray.model import V1Config

    async def read() -> int:
        async with SomaClient(rpc_url) as client:
            return await client.get_embedding_dim()

    dim = asyncio.run(read())
    for config in (V1Config.small(), V1Config()):
        if config.embedding_dim == dim:
            return config
    raise BadArgument(f"the network at {rpc_url} has embedding_dim {dim}, which no V1 size has: give --config")


@app.command("scoring")
def start_scoring(
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (cuda needs a GPU here).")] = "auto",
    http_port: Annotated[int, typer.Option("--http-port", "--port", min=1, max=65535, help="Its port.")] = 8001,
    host: Annotated[str, typer.Option("--host", help="The address it listens on.")] = "127.0.0.1",
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="The weights cache (downloaded weights kept by checksum, at most "
        "--cache-gib) and Ray's logs [default: a temp dir, no cache].", show_default=False)] = None,
    cache_gib: Annotated[float, typer.Option("--cache-gib", min=0.1, help="Bound of the weights cache.")] = (
        DEFAULT_WEIGHTS_CACHE_GIB),
    config: Annotated[Optional[str], typer.Option(
        "--config", help="The model size: small or v1 [default: the network's, read from its chain].",
        show_default=False)] = None,
    small_model: Annotated[bool, typer.Option("--small-model", help="The small size (the reference's flag).")] = False,
    rpc_url: RpcOption = None,
) -> None:
    """A standalone scoring service for your own machine (GPU or CPU), in the foreground: the
    same batched, multiplexed scorer a network runs, at http://HOST:PORT/scoring, for the network
    it is pointed at (--rpc-url or --chain: it resolves model ids from that chain, downloads
    weights from its gateway, and serves its model size). Give the SDK `scoring_url=` (or
    `soma score --scoring-url`) to use it. Ctrl-C stops it."""
    from ray import serve

    from serve.scoring import scoring_app
    from soma_ray.model import V1Config

    gateway, _ = endpoints(rpc_url)
    try:
        if small_model and config not in (None, "small"):
            raise BadArgument("--small-model and --config v1 disagree")
        chosen = "small" if small_model else config
        if chosen is not None and chosen not in MODEL_SIZES:
            raise BadArgument(f"--config {chosen}: one of {', '.join(MODEL_SIZES)}")
        model = (network_model_config(gateway) if chosen is None
                 else V1Config.small() if chosen == "small" else V1Config())
    except (BadArgument, ProtocolError, ConnectionError) as error:
        raise fail(str(error)) from None
    options = {}
    cache = {}
    if data_dir is not None:
        root = data_dir.expanduser().resolve()
        options["_temp_dir"] = str(root / "ray")
        cache = {"weights_cache_dir": str(root / "weights"), "weights_cache_bytes": int(cache_gib * (1 << 30))}
    quiet_serve()
    ray.init(address="local", include_dashboard=False, **options, **cluster.QUIET_INIT)
    cluster.keep_raylet_messages_in_logs()
    try:
        # Before Serve starts: a missing GPU fails in a second.
        app = scoring_app(model, device=device, chain=gateway, allowed_origins=(gateway,), **cache)
        serve.start(http_options={"host": host, "port": http_port})
        serve.run(app, name="scoring", route_prefix="/scoring")
    except Exception as error:  # noqa: BLE001 - Serve's own errors (a taken port, no GPU): one line
        ray.shutdown()
        raise fail(str(error)) from None
    where = "" if not cache else f", weights cached in {cache['weights_cache_dir']}"
    typer.echo(f"scoring service ({device}, {'small' if model.embedding_dim == V1Config.small().embedding_dim else 'v1'} "
               f"model) for {gateway} at http://{host}:{http_port}/scoring{where}; Ctrl-C stops it")
    try:
        while True:
            time.sleep(STATUS_INTERVAL_S)
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
        serve.shutdown()
        ray.shutdown()


@app.command("testnet")
def start_testnet_command(
    config: Annotated[Path, typer.Option("--config", help="The testnet file (TOML).")],
    http_host: Annotated[Optional[str], typer.Option(
        "--http-host", help="Overrides the file's http_host (the head's address).")] = None,
    public_host: Annotated[Optional[str], typer.Option(
        "--public-host", help="Overrides the file's public_host (the address participants use).")] = None,
    node_timeout: Annotated[str, typer.Option(
        "--node-timeout", help="How long to wait for the validators' nodes, e.g. 30m.")] = "30m",
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Start even on a Ray cluster without token authentication (one "
        "nobody else can reach).")] = False,
    address: AddressOption = None,
) -> None:
    """Start (or resume from its data dir) a testnet on a running Ray cluster: validator i on the
    node that offers resource validator<i>, its key made there; the clock, the target index and
    the services on the head. Returns once it runs; `soma stop --address ...` stops it.

    Refuses a cluster that does not require Ray's auth token (RAY_AUTH_MODE=token on every
    node: whoever reaches an open cluster's ports runs code on it) unless --insecure."""
    try:
        settings = read_testnet_file(config)
        timeout_s = parse_duration_ms(node_timeout) / 1000
        hosts = {name: host for name, host in (("http_host", http_host), ("public_host", public_host))
                 if host is not None}
        check_scalars(hosts, "the command line")
    except BadArgument as error:
        raise fail(str(error)) from None
    settings = replace(settings, **hosts)
    quiet_serve()
    try:
        auth, warning = testnet_auth(address, insecure)
        joined = cluster.connect(address, namespace=settings.namespace)
        if warning:
            typer.echo(warning, err=True)
        network = start_testnet(settings, detached=True, timeout_s=timeout_s)
    except (ConnectionError, ValidatorNodesMissing, ValidatorKeysRefused,
            net.DataDirMismatch) as error:
        raise fail(str(error)) from None
    stored = network.config
    typer.echo(f"testnet of {stored.validators} validators in Ray namespace {stored.namespace!r}, "
               f"epochs of {stored.epoch_duration_ms / 1000:g} s, data in {stored.data_dir} on "
               "each node (a resumed testnet keeps its stored settings)")
    typer.echo(f"gateway: {stored.public_url}" if settings.services
               else "gateway: not started (services = false)")
    for line in dashboard_lines(joined.dashboard_url, joined.auth or auth, testnet=True):
        typer.echo(line)


def testnet_auth(address: str | None, insecure: bool) -> tuple[str, str | None]:
    """Before a testnet joins its cluster: what the cluster asks of a client (`cluster.probe`)
    and the warning to print, or cluster.ClusterNotClosed (`cluster.check_testnet_auth`). A
    process already connected (called from Python) is checked at its own cluster's address."""
    if ray.is_initialized():
        target = ray.get_runtime_context().gcs_address
        auth = cluster.auth_mode(target)
    else:
        target, _ = cluster.resolve(address)
        if target is None:
            raise cluster.NoClusterFound(cluster.record_path())
        auth = cluster.probe(target)
    return auth, cluster.check_testnet_auth(target, auth, insecure)


@dataclass
class CrowdPlan:
    specs: list
    actors: int
    seed: int
    corpus: str | None

    def describe(self) -> str:
        counts = {role: sum(s.role == role for s in self.specs) for role in ROLES}
        if not counts["trainer"]:
            del counts["trainer"]
        return ("crowd: " + ", ".join(f"{n} {role}" for role, n in counts.items())
                + f" in {self.actors} actor(s), seed {self.seed}")


def crowd_plan(miners: int, challengers: int, fraud_rate: float, corpus: Path | None, actors: int,
               seed: int, services: bool, trainers: int = 0) -> CrowdPlan | None:
    """The crowd the options ask for (None: no participants); BadArgument when it cannot play."""
    if not miners and not challengers and not trainers:
        return None
    if not services:
        raise BadArgument("--miners, --challengers and --trainers need the services (scoring, blobs): "
                          "drop --no-services")
    if corpus is not None and not corpus.expanduser().is_dir():
        raise BadArgument(f"--corpus {corpus}: not a directory")
    specs = roster(crowd_mix(miners, fraud_rate, LAZY_RATE), challengers, trainers)
    return CrowdPlan(specs, min(actors, len(specs)), seed, None if corpus is None else str(corpus.expanduser()))


def run_network(target: RayTarget, data_dir: Path | None, validators: int, duration_ms: int,
                force_regenesis: bool, detach: bool, namespace: str, scoring_device: str | None,
                crowd: CrowdPlan | None = None, **settings) -> None:
    """Start the network (and, unless `scoring_device` is None, its services; then the crowd)."""
    data_dir = data_dir or cluster.soma_home() / "localnet"
    config = net.NetworkConfig(data_dir=str(data_dir.expanduser()), validators=validators,
                               epoch_duration_ms=duration_ms, namespace=namespace, **settings)
    quiet_serve()
    try:
        network = net.start(config, force_regenesis=force_regenesis, detached=detach)
        gateway = None if scoring_device is None else network.start_services(scoring_device, detach)
        players = [] if crowd is None else start_crowd(network, crowd, detach)
    except BaseException as error:
        if target.started:  # a cluster started for this network only: do not leave it behind
            ray.shutdown()
            cluster.stop_cluster(target.record)
        if isinstance(error, net.DataDirMismatch):
            raise fail(str(error)) from None
        raise
    typer.echo(f"localnet of {network.config.validators} validators in Ray namespace "
               f"{namespace!r}, epochs of {network.config.epoch_duration_ms / 1000:g} s, "
               f"data in {network.config.data_dir} (a resumed network keeps its stored settings)")
    typer.echo(target.note)
    typer.echo(f"gateway: {gateway}" if gateway else "gateway: not started (--no-services)")
    if crowd is not None:
        typer.echo(crowd.describe())
    for line in dashboard_lines(target.dashboard, target.auth):
        typer.echo(line)
    if detach:
        typer.echo("running detached; `soma stop` stops it")
        return
    # `soma stop` (SIGTERM) and a closed terminal (SIGHUP) stop it as Ctrl-C does, in place of
    # the default or the handler ray.init installs (it exits at once, leaving the network's
    # actors to die with their owner); a signal ignored on purpose (nohup) stays ignored.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler)
    try:
        watch(network, players)
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
        stop_crowd(network.config.namespace, network.config.prefix)
        network.stop()
        ray.shutdown()


def start_crowd(network: net.Network, crowd: CrowdPlan, detach: bool) -> list:
    """Launch and fund the crowd's actors, then set them playing."""
    players = launch_crowd(network.config, crowd.specs, crowd.actors, crowd.seed, crowd.corpus,
                           detached=detach)
    ray.get([p.start.remote(CROWD_PAUSE_S) for p in players])
    return players
