"""Launch, connect to and stop a network: named actors in one Ray namespace.

Layout of a data dir (one per network):

    DIR/network.json        what was launched: validator count, epoch duration, localnet flag,
                            genesis timestamp, mempool capacity, per-sender limit and TTL (a
                            file written before a setting existed gets its default)
    DIR/validator-<i>/      validator i's own disk: its LMDB store

Every actor is found by name (`<prefix>validator-<i>`, `<prefix>epoch-clock`) in the network's
namespace, so a CLI in another process, a client or a restarted peer reaches it without handles
being passed around. `prefix` lets tests run several networks in one Ray namespace.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import msgspec
import ray

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import genesis, preset_config, preset_keypair
from soma_ray.protocol.params import SHANNONS_PER_SOMA, localnet
from soma_ray.protocol.state import State
from soma_ray.storage import GenesisMismatch, ValidatorStore

DEFAULT_NAMESPACE = "soma"
CONFIG_FILE = "network.json"


@dataclass(frozen=True)
class NetworkConfig:
    data_dir: str
    validators: int = 4
    epoch_duration_ms: int = 60_000
    localnet: bool = True
    namespace: str = DEFAULT_NAMESPACE
    prefix: str = ""
    genesis_timestamp_ms: int = 0
    # Most transactions one validator's mempool holds; beyond it, submissions are refused with
    # `MempoolFull` (a node-local limit: validators need not agree on it).
    mempool_capacity: int = 100_000
    # What one sender may hold in a validator's mempool: at most this many transactions, with
    # nonces below its account nonce + this (node-local too). Beyond it, `SenderPoolFull` or
    # `NonceTooFarAhead`, so one key cannot take the whole pool. The default still lets one key
    # pipeline that many transactions at once (bench_localnet runs 1,500 per sender).
    mempool_per_sender: int = 2_000
    # Seconds a transaction stays in a validator's mempool at most (node-local): one still
    # there then (its sender never sent the missing earlier nonce, or nothing commits) is
    # dropped and its submitter told `TransactionExpired`, freeing its sender's slot.
    mempool_ttl_s: int = 600

    def validator_name(self, index: int) -> str:
        return f"{self.prefix}validator-{index}"

    @property
    def clock_name(self) -> str:
        return f"{self.prefix}epoch-clock"

    def validator_dir(self, index: int) -> Path:
        return Path(self.data_dir) / f"validator-{index}"

    def validator_keypair(self, index: int) -> Keypair:
        # The localnet preset keys: a validator whose disk was wiped keeps its identity.
        return preset_keypair("validator", index)


# Each validator key holds this much at genesis: it pays the fees of the faucet transactions
# the validator signs for users.
GENESIS_VALIDATOR_BALANCE = 1_000 * SHANNONS_PER_SOMA
GENESIS_MODELS = 3
GENESIS_USERS = 4


def build_genesis(network: NetworkConfig) -> State:
    """The localnet genesis every validator computes alike from the shared network config:
    the preset validators, models and users, plus a fee balance for each validator key."""
    parameters = msgspec.structs.replace(localnet(), epoch_duration_ms=network.epoch_duration_ms,
                                         allow_early_epoch_change=network.localnet)
    config = preset_config(parameters, network.validators, GENESIS_MODELS, GENESIS_USERS)
    fee_balances = [(network.validator_keypair(i).address, GENESIS_VALIDATOR_BALANCE)
                    for i in range(network.validators)]
    return genesis(msgspec.structs.replace(config, balances=config.balances + fee_balances,
                                           timestamp_ms=network.genesis_timestamp_ms))


class NetworkNotRunning(RuntimeError):
    """No validator of the named network answers in this Ray cluster."""

    def __init__(self, namespace: str, name: str):
        self.namespace = namespace
        self.name = name
        super().__init__(f"no actor {name!r} in Ray namespace {namespace!r}: is the network started?")


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


def save_config(config: NetworkConfig) -> None:
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.data_dir) / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1))


def load_config(data_dir: str) -> NetworkConfig | None:
    path = Path(data_dir) / CONFIG_FILE
    if not path.exists():
        return None
    return NetworkConfig(**json.loads(path.read_text()))


def prepare_data_dir(config: NetworkConfig, force_regenesis: bool) -> NetworkConfig:
    """Resume the network stored in the data dir, or start a new one there.

    A resumed network keeps its stored validator count (the keys and the genesis committee are
    on disk); only the namespace/prefix it is launched under come from `config`.
    """
    if force_regenesis and Path(config.data_dir).exists():
        shutil.rmtree(config.data_dir)
    stored = load_config(config.data_dir)
    if stored is not None:
        config = replace(stored, namespace=config.namespace, prefix=config.prefix)
    else:
        config = replace(config, genesis_timestamp_ms=int(time.time() * 1000))
    save_config(config)
    return config


def check_stored_genesis(config: NetworkConfig) -> None:
    """Raise DataDirMismatch, before any actor starts, if a validator's disk holds another
    genesis: the actor would otherwise fail (and be restarted) on every launch. Validators
    already running hold their stores open in their own processes, so they are skipped."""
    root = None
    for index in range(config.validators):
        path = config.validator_dir(index) / "db"
        if not path.exists() or _find(config.validator_name(index), config.namespace):
            continue
        root = root or build_genesis(config).state_root()
        try:
            ValidatorStore(path, genesis_digest=root).close()
        except GenesisMismatch:
            raise DataDirMismatch(config.data_dir, index) from None


def _actor_options(name: str, namespace: str, detached: bool) -> dict:
    # num_cpus=0: validators are I/O bound and the machine has 2 cores shared by everything.
    # max_restarts=-1: Ray restarts a crashed validator, which then recovers from its own disk.
    # max_task_retries: a call in flight when the process died is retried on the restarted one.
    options = dict(name=name, namespace=namespace, num_cpus=0, max_restarts=-1,
                   max_task_retries=3, get_if_exists=True)
    if detached:
        options["lifetime"] = "detached"
    return options


VALIDATOR_MAX_CONCURRENCY = 100_000


def launch_validator(config: NetworkConfig, index: int, detached: bool = False,
                     actor_class: type | None = None):
    """Start validator `index` (or return it if it runs): used at start and to bring one back.
    `actor_class` (default ValidatorActor) lets tests run a misbehaving validator in its place."""
    from actors.validator import ValidatorActor

    config.validator_dir(index).mkdir(parents=True, exist_ok=True)
    options = _actor_options(config.validator_name(index), config.namespace, detached)
    # An async actor runs at most max_concurrency calls at once (Ray's default: 1,000). Client
    # calls wait for finality; had they filled every slot, peers' consensus messages could not
    # get in and nothing would ever become final.
    options["max_concurrency"] = VALIDATOR_MAX_CONCURRENCY
    return ray.remote(actor_class or ValidatorActor).options(**options).remote(asdict(config), index)


def launch_clock(config: NetworkConfig, detached: bool = False):
    from actors.epoch_clock import EpochClock

    options = _actor_options(config.clock_name, config.namespace, detached)
    return ray.remote(EpochClock).options(**options).remote(asdict(config))


@dataclass
class Network:
    """Handles to a running network's actors."""

    config: NetworkConfig
    validators: list
    clock: object

    def validator(self, index: int):
        return self.validators[index]

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
        """Kill every actor of the network and wait until their names are free; their disks
        stay, so a later start resumes."""
        names = [self.config.validator_name(i) for i in range(self.config.validators)]
        for handle in [*self.validators, self.clock]:
            if handle is not None:
                ray.kill(handle, no_restart=True)
        for name in [*names, self.config.clock_name]:
            _wait_until_gone(name, self.config.namespace)


def _wait_until_gone(name: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Ray frees an actor's name once the actor is dead; kill returns before that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _find(name, namespace) is not None:
        time.sleep(0.1)


def start(config: NetworkConfig, force_regenesis: bool = False, detached: bool = False,
          ready_timeout_s: float = 120.0) -> Network:
    """Launch (or join) the network of `config` and wait until every actor has opened its disk."""
    config = prepare_data_dir(config, force_regenesis)
    check_stored_genesis(config)
    clock = launch_clock(config, detached)
    validators = [launch_validator(config, i, detached) for i in range(config.validators)]
    ray.get([v.ready.remote() for v in validators] + [clock.ready.remote()],
            timeout=ready_timeout_s)
    # Peers are found by name, so consensus starts only once all exist.
    ray.get([v.start_consensus.remote() for v in validators], timeout=ready_timeout_s)
    return Network(config, validators, clock)


def connect(namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> Network:
    """Handles to a network started elsewhere (another process, a detached localnet); a
    validator that is not running has None in its place."""
    clock_name = f"{prefix}epoch-clock"
    try:
        clock = ray.get_actor(clock_name, namespace=namespace)
    except ValueError:
        raise NetworkNotRunning(namespace, clock_name) from None
    config = NetworkConfig(**ray.get(clock.config.remote()))
    validators = [_find(config.validator_name(i), namespace) for i in range(config.validators)]
    if not any(validators):
        raise NetworkNotRunning(namespace, config.validator_name(0))
    return Network(config, validators, clock)


def _find(name: str, namespace: str):
    """The named actor, or None when it is not running (a stopped validator)."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
