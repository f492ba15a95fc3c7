"""The launcher: start, connect to and stop a network of named actors in one Ray namespace.

The settings, names and data-dir layout are soma_ray/config.py's; only the CLI and the tests
import this module.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import msgspec

import ray

from actors.audit import AuditWorker, audit_worker_name
from actors.challenge_aggregator import ChallengeAggregator, aggregator_name
from actors.epoch_clock import EpochClock
from soma_ray.handles import NetworkHandles, NetworkNotRunning, find_actor
from actors.target_state import launch_target_state
from soma_ray.handles import connect as find_network
from actors.validator import ValidatorActor
from soma_ray.config import (
    DEFAULT_NAMESPACE, GENESIS_FILE, NetworkConfig, prepare_data_dir, save_config, save_genesis_config,
)
from soma_ray.protocol.genesis import genesis
from soma_ray.protocol.types import WeightsManifest
from soma_ray.storage import GenesisMismatch, ValidatorStore

__all__ = ["DEFAULT_NAMESPACE", "DataDirMismatch", "Network", "NetworkConfig", "NetworkNotRunning",
           "connect", "launch_validator", "start"]

class DataDirMismatch(RuntimeError):
    """The data dir holds a chain this version does not compute the same genesis for (another
    protocol version, or another network's disks): resuming it would fork from its own past."""

    def __init__(self, data_dir: str, index: int):
        self.data_dir = data_dir
        self.index = index
        super().__init__(
            f"{data_dir}: validator {index}'s disk holds another genesis than this version "
            "computes for the stored network (a chain from an older soma-ray?); start a new "
            "chain there with --force-regenesis, or use another --data-dir")


def check_stored_genesis(config: NetworkConfig) -> None:
    """Raise DataDirMismatch, before any actor starts, if a validator's disk holds another
    genesis: the actor would otherwise fail (and be restarted) on every launch. Validators
    already running hold their stores open in their own processes, so they are skipped."""
    root = None
    for index in range(config.validators):
        path = config.validator_dir(index) / "db"
        if not path.exists() or find_actor(config.validator_name(index), config.namespace):
            continue
        root = root or genesis(config.genesis_config()).state_root()
        try:
            ValidatorStore(path, genesis_digest=root).close()
        except GenesisMismatch:
            raise DataDirMismatch(config.data_dir, index) from None


def _actor_options(config: NetworkConfig, kind: str, name: str, detached: bool,
                   index: int | None = None) -> dict:
    # Resources from the config's placement (num_cpus 0 by default: I/O bound actors).
    # max_restarts=-1: Ray restarts a crashed validator, which then recovers from its own disk.
    # max_task_retries: a call in flight when the process died is retried on the restarted one.
    options = dict(name=name, namespace=config.namespace, max_restarts=-1, max_task_retries=3,
                   get_if_exists=True, **config.actor_resources(kind, index))
    if detached:
        options["lifetime"] = "detached"
    return options


VALIDATOR_MAX_CONCURRENCY = 100_000


def launch_validator(config: NetworkConfig, index: int, detached: bool = False,
                     actor_class: type | None = None):
    """Start validator `index` (or return it if it runs): used at start and to bring one back.
    `actor_class` (default ValidatorActor) lets tests run a misbehaving validator in its place."""
    config.validator_dir(index).mkdir(parents=True, exist_ok=True)
    options = _actor_options(config, "validator", config.validator_name(index), detached, index)
    # An async actor runs at most max_concurrency calls at once (Ray's default: 1,000). Client
    # calls wait for finality; had they filled every slot, peers' consensus messages could not
    # get in and nothing would ever become final.
    options["max_concurrency"] = VALIDATOR_MAX_CONCURRENCY
    return ray.remote(actor_class or ValidatorActor).options(**options).remote(asdict(config), index)


def launch_clock(config: NetworkConfig, detached: bool = False):
    options = _actor_options(config, "clock", config.clock_name, detached)
    return ray.remote(EpochClock).options(**options).remote(asdict(config))


def launch_audit_worker(config: NetworkConfig, index: int, detached: bool = False):
    """Start validator `index`'s audit worker (or return it if it runs); Ray restarts it."""
    options = _actor_options(config, "audit", audit_worker_name(config, index), detached, index)
    return ray.remote(AuditWorker).options(**options).remote(asdict(config), index)


def launch_aggregator(config: NetworkConfig, index: int = 0, detached: bool = False):
    """Start challenge aggregator `index` (it signs with validator `index`'s key), or return it."""
    options = _actor_options(config, "aggregator", aggregator_name(config, index), detached, index)
    return ray.remote(ChallengeAggregator).options(**options).remote(asdict(config), index)


SERVICES = ("blobs", "scoring", "gateway")
# The least time an upload no transaction names is kept (serve/blobs.py RetentionPolicy).
RETENTION_GRACE_S = 3600.0
SERVICES_STOP_S = 60.0  # the replicas' graceful shutdown (Serve's default 20 s) with room


class Network(NetworkHandles):
    """Handles to a running network's actors, with the launcher's stop and relaunch, and its
    public services."""

    target_state: object = None  # the target index, once start_services launched it
    audit_workers: list | None = None  # one per validator, once start_services launched them
    aggregator: object = None  # the challenge aggregator, likewise

    def start_services(self, scoring_device: str = "auto", detached: bool = False,
                       limits: dict | None = None, trusted_proxies: tuple[str, ...] = ()) -> str:
        """Start the target index (it follows the checkpoint feed from 0) and deploy the network's
        public surface on Ray Serve — the blob store, the scoring service and the gateway — and
        return the gateway's URL; then start the audit duty: one audit worker per validator and
        a challenge aggregator (docs/audits.md). Serve's HTTP proxy starts on the config's host
        and port unless this Ray cluster runs one already (then that one serves).

        `limits`: the rate classes' limits of every public route (default: soma_ray.routes'
        RATE_LIMITS, or LOCALNET_RATE_LIMITS on a localnet); `trusted_proxies`: reverse proxies
        in front of Serve whose X-Forwarded-For names the client (docs/gateway.md)."""
        from ray import serve

        from serve.blobs import RetentionPolicy, blob_app
        from serve.gateway import gateway_app
        from serve.scoring import scoring_app, weights_file_bound
        from soma_ray.model.config import V1Config
        from soma_ray.routes import LOCALNET_RATE_LIMITS, RATE_LIMITS

        config = self.config
        # A named actor lives while its first handle does (or for good when detached): keep it.
        if self.target_state is None:
            self.target_state = launch_target_state(config, detached)
        parameters = config.genesis_config().parameters
        if limits is None:
            limits = LOCALNET_RATE_LIMITS if config.localnet else RATE_LIMITS
        chain = (config.namespace, config.prefix)
        public = {"limits": limits, "trusted_proxies": tuple(trusted_proxies)}
        model_config = V1Config.small()  # the network's model size: the scoring service's
        # An unnamed upload is kept two epochs at least (upload, commit, reveal next epoch).
        grace_s = max(RETENTION_GRACE_S, 2 * parameters.epoch_duration_ms / 1000)
        serve.start(http_options={"host": config.http_host, "port": config.http_port})
        apps = {
            # Weights only as large as the scoring service will load, not the chain's 8 GiB.
            "blobs": blob_app(str(config.blobs_dir), parameters.max_submission_bytes,
                              min(parameters.model_max_weight_size, weights_file_bound(model_config)),
                              config.public_url, network=chain,
                              retention_policy=RetentionPolicy(grace_s=grace_s), **public),
            "scoring": scoring_app(model_config, device=scoring_device,
                                   max_submission_bytes=parameters.max_submission_bytes,
                                   allowed_origins=(config.public_url,), chain=chain, **public),
            "gateway": gateway_app(config.namespace, config.prefix, localnet=config.localnet, **public),
        }
        # Deployed together: their replicas start at once rather than one app after another.
        serve.run_many([serve.RunTarget(apps[service], name=config.app_name(service),
                                        route_prefix=config.route_prefix(service)) for service in SERVICES])
        self.start_audits(detached)
        return config.public_url

    def start_audits(self, detached: bool = False) -> None:
        """Launch the audit workers and the aggregator (they need the scoring service to vote)."""
        if self.audit_workers is None:
            self.audit_workers = [launch_audit_worker(self.config, i, detached) for i in range(self.config.validators)]
        if self.aggregator is None:
            self.aggregator = launch_aggregator(self.config, 0, detached)

    def stop_audits(self) -> None:
        """Kill the audit workers and the aggregator (their feed cursors stay on disk)."""
        self.audit_workers = self.aggregator = None
        _kill_named(self._audit_names(), self.config.namespace)

    def _audit_names(self) -> list[str]:
        return [audit_worker_name(self.config, i) for i in range(self.config.validators)] + [
            aggregator_name(self.config, 0)]

    def stop_services(self) -> None:
        """Stop the audit duty and delete the network's Serve applications (those that run)."""
        from ray import serve

        config = self.config
        self.stop_audits()
        running = serve.status().applications  # empty where Serve never started
        names = [config.app_name(service) for service in SERVICES if config.app_name(service) in running]
        for name in names:  # deleted together: each replica's graceful shutdown overlaps the others'
            serve.delete(name, _blocking=False)
        _wait_for(lambda: not set(names) & set(serve.status().applications), SERVICES_STOP_S)

    def stop_validator(self, index: int) -> None:
        """Kill validator `index` for good (Ray does not restart it); its disk stays."""
        ray.kill(self.validators[index], no_restart=True)
        _wait_until_gone(self.config.validator_name(index), self.config.namespace)

    def relaunch_validator(self, index: int, timeout_s: float = 120.0,
                           actor_class: type | None = None) -> None:
        """Launch validator `index` again after `stop_validator`: it recovers and catches up."""
        self.validators[index] = launch_validator(self.config, index, actor_class=actor_class)
        ray.get(self.validators[index].start_consensus.remote(), timeout=timeout_s)

    def stop(self) -> None:
        """Take its services off Serve, kill every actor of the network and wait until their
        names are free; their disks stay, so a later start resumes."""
        self.stop_services()
        names = [self.config.validator_name(i) for i in range(self.config.validators)]
        names += [self.config.clock_name, self.config.target_state_name]
        _kill_named(names, self.config.namespace)


def _kill_named(names: list[str], namespace: str) -> None:
    """Kill the named actors that run (for good) and wait until their names are free."""
    for name in names:
        handle = find_actor(name, namespace)
        if handle is not None:
            ray.kill(handle, no_restart=True)
    for name in names:
        _wait_until_gone(name, namespace)


def _wait_for(done, timeout_s: float) -> None:
    """Poll `done()` until it holds or `timeout_s` passes (the caller checks what it needs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done():
        time.sleep(0.1)


def _wait_until_gone(name: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Ray frees an actor's name once the actor is dead; kill returns before that."""
    _wait_for(lambda: find_actor(name, namespace) is None, timeout_s)


def publish_genesis_weights(config: NetworkConfig) -> NetworkConfig:
    """Write the localnet genesis into the data dir with real weights for its models: each a
    seeded small V1 model, encrypted under a fresh key, put into the blob store, its manifest and
    key public in the genesis. Done once, when the network is created (the keys are random, so
    every validator must read the same genesis file rather than compute its own)."""
    import asyncio

    from serve.blobs import BlobStore, blob_url
    from soma_ray.model import genesis_model_weights
    from soma_ray.model.encryption import encrypt_bytes

    genesis_config = config.genesis_config()
    store = BlobStore(config.blobs_dir)
    models = []
    for i, spec in enumerate(genesis_config.models):
        encrypted, key = encrypt_bytes(genesis_model_weights(i))
        stored = asyncio.run(store.put_bytes(encrypted, genesis_config.parameters.model_max_weight_size))
        manifest = WeightsManifest(url=blob_url(config.public_url, stored.checksum),
                                   checksum=stored.checksum, size=stored.size)
        models.append(msgspec.structs.replace(spec, weights_manifest=manifest, decryption_key=key))
    path = Path(config.data_dir) / GENESIS_FILE
    save_genesis_config(msgspec.structs.replace(genesis_config, models=models), path)
    config = replace(config, genesis_file=str(path))
    save_config(config)
    return config


def start(config: NetworkConfig, force_regenesis: bool = False, detached: bool = False,
          ready_timeout_s: float = 120.0) -> Network:
    """Launch (or join) the network of `config` and wait until every actor has opened its disk."""
    config = prepare_data_dir(config, force_regenesis)
    if config.genesis_weights and config.genesis_file is None:  # a new network: once
        config = publish_genesis_weights(config)
    check_stored_genesis(config)
    clock = launch_clock(config, detached)
    validators = [launch_validator(config, i, detached) for i in range(config.validators)]
    ray.get([v.ready.remote() for v in validators] + [clock.ready.remote()],
            timeout=ready_timeout_s)
    # Peers are found by name, so consensus starts only once all exist.
    ray.get([v.start_consensus.remote() for v in validators], timeout=ready_timeout_s)
    return Network(config, validators, clock)


def connect(namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> Network:
    """A network started elsewhere (another process, a detached localnet), to stop or restart
    its validators; a validator that is not running has None in its place."""
    handles = find_network(namespace, prefix)
    return Network(handles.config, handles.validators, handles.clock)
