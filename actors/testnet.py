"""The testnet launcher: a network spread over a Ray cluster's nodes, one validator per node.

Each validator's key is generated on, and never leaves, the node that offers its custom resource
(`validator<i>`); the head builds the genesis from the public keys, every validator node keeps a
copy of it, and the network starts with `keys="files"` from there (actors/network.py). The
settings come from the testnet file that `soma start testnet --config` reads (soma_ray/cli/testnet.py).

Key files at rest (soma_ray/config.py): a key is sealed with $SOMA_VALIDATOR_PASSWORD when that
node's Ray runs with it, and a key file others may read is refused. Every launch, new or
resumed, first reads each validator's key on its node (`node_key`), so a refused key is one
error naming the validator, its file and the fix (`ValidatorKeysRefused`) before any validator
starts, not an actor dying on a node.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import ray

from actors import network as net
from soma_ray.config import (
    DEFAULT_NAMESPACE, GENESIS_FILE, KEY_FILE, NetworkConfig, ValidatorKeyError, load_config,
    write_validator_key,
)
from soma_ray.files import write_atomic
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import GenesisConfig, testnet_genesis_config
from soma_ray.protocol.params import SHANNONS_PER_SOMA

# Ray gives the head node this resource: the clock and the target index run there, beside the
# gateway and the blob store (Serve's proxy and apps start from the head's `soma start testnet`).
HEAD_RESOURCE = "node:__internal_head__"
ON_HEAD = {"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}}
TESTNET_PLACEMENT = {
    "validator": {"num_cpus": 0, "resources": {"validator{index}": 1}},
    "clock": ON_HEAD,
    "target_state": ON_HEAD,
}
# How long a launch waits for every validator's node to join (cloud workers take minutes).
NODE_TIMEOUT_S = 1_800.0


class ValidatorNodesMissing(TimeoutError):
    """No node offered some validators' placement in time: their keys could not be made."""

    def __init__(self, indices: list[int], timeout_s: float):
        self.indices = indices
        self.timeout_s = timeout_s
        super().__init__(
            f"no node of this cluster took validators {indices} within {timeout_s:g} s: each "
            "validator needs a node offering its placement's resources (by default validator<i>: "
            "ray start --resources='{\"validator<i>\": 1}', see cluster.yaml)")


class ValidatorKeysRefused(RuntimeError):
    """Some validators' key files were refused on their nodes (readable by others, sealed
    without the node's passphrase, missing, not the genesis key): nothing was started."""

    def __init__(self, refused: dict[int, str]):
        self.refused = refused
        super().__init__("validator keys refused on their nodes, nothing started: " + "; ".join(
            f"validator-{i}: {why}" for i, why in sorted(refused.items())))


@dataclass(frozen=True)
class TestnetSettings:
    """What a testnet file says (see docs/operations.md); amounts in shannons."""
    data_dir: str  # the same path on every node
    validators: int = 4
    epoch_duration_ms: int = 3_600_000
    validator_stake: int = 100_000 * SHANNONS_PER_SOMA
    commission_bps: int = 500
    faucet: bool = False
    balances: tuple[tuple[bytes, int], ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    # Where Serve listens, and the host in the URLs it hands out (blobs): the head's address.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    public_host: str | None = None  # the host in those URLs where it differs (NetworkConfig)
    services: bool = True
    scoring_device: str = "auto"
    # Ray options per actor kind; a kind given here replaces its TESTNET_PLACEMENT entry.
    placement: dict = field(default_factory=dict)

    def network_config(self) -> NetworkConfig:
        return NetworkConfig(
            data_dir=self.data_dir, validators=self.validators,
            epoch_duration_ms=self.epoch_duration_ms, localnet=False, namespace=self.namespace,
            keys="files", genesis_file=str(Path(self.data_dir) / GENESIS_FILE),
            placement={**TESTNET_PLACEMENT, **self.placement},
            http_host=self.http_host, http_port=self.http_port, public_host=self.public_host)

    def genesis_config(self, public_keys: list[bytes], timestamp_ms: int) -> GenesisConfig:
        return testnet_genesis_config(public_keys, self.validator_stake, self.commission_bps,
                                      self.epoch_duration_ms, self.faucet, list(self.balances),
                                      timestamp_ms)


def node_key(config: dict, index: int, create: bool = True) -> tuple[bytes | None, str | None]:
    """Runs on validator `index`'s node: (its public key, None), or (None, why its key file is
    refused there). With `create`, a missing secret is generated here and kept in this node's
    data dir (0600; sealed with $SOMA_VALIDATOR_PASSWORD when this node's Ray has it). A key
    already there is kept, so a launch that failed half way and is run again does not change
    the committee."""
    network = NetworkConfig(**config)
    try:
        if create and not (network.validator_dir(index) / KEY_FILE).exists():
            write_validator_key(network, index, Keypair.generate())
        return network.validator_keypair(index).public_key, None
    except ValidatorKeyError as error:
        return None, str(error)


def check_node_keys(config: NetworkConfig, timeout_s: float = NODE_TIMEOUT_S,
                    create: bool = False) -> list[bytes]:
    """Read every validator's key on its node (creating missing ones with `create`); their
    public keys, or ValidatorKeysRefused naming each refused one. Without `create`, a key that
    is not the one the genesis names for its validator is refused too."""
    found = _on_each_validator_node(config, node_key, lambda i: (asdict(config), i, create),
                                    timeout_s)
    refused = {i: why for i, (_, why) in enumerate(found) if why is not None}
    if not create and not refused:
        expected = config.validator_public_keys()
        refused = {i: f"{config.validator_dir(i) / KEY_FILE} holds a key that is not validator "
                   f"{i}'s in the genesis" for i, (key, _) in enumerate(found) if key != expected[i]}
    if refused:
        raise ValidatorKeysRefused(refused)
    return [key for key, _ in found]


def keep_genesis(path: str, data: bytes) -> None:
    """Write the genesis file at `path` on this node (atomically: the head and a validator on
    one host write the same file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)


def _on_each_validator_node(config: NetworkConfig, function, args_of, timeout_s: float) -> list:
    """`function(*args_of(i))` as a task on validator i's node, for every i; their results."""
    task = ray.remote(function)
    refs = [task.options(**config.actor_resources("validator", i)).remote(*args_of(i))
            for i in range(config.validators)]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise ValidatorNodesMissing([i for i, ref in enumerate(refs) if ref in pending], timeout_s)
    return ray.get(refs)


def create_genesis(settings: TestnetSettings, timeout_s: float = NODE_TIMEOUT_S) -> None:
    """A new testnet: keys on their nodes, the genesis from their public keys, on the head and
    on every validator node."""
    config = settings.network_config()
    public_keys = check_node_keys(config, timeout_s, create=True)
    genesis = settings.genesis_config(public_keys, int(time.time() * 1000))
    data = msgspec.json.format(msgspec.json.encode(genesis))
    keep_genesis(config.genesis_file, data)
    _on_each_validator_node(config, keep_genesis, lambda i: (config.genesis_file, data), timeout_s)


def start_testnet(settings: TestnetSettings, detached: bool = True,
                  timeout_s: float = NODE_TIMEOUT_S) -> net.Network:
    """Start the testnet of `settings`, or resume the one its data dir holds (then the stored
    settings win, as for a localnet), with its services unless `settings.services` is off."""
    stored = load_config(settings.data_dir)
    if stored is None:
        create_genesis(settings, timeout_s)
    elif stored.keys == "files":
        check_node_keys(stored, timeout_s)
    network = net.start(settings.network_config(), detached=detached, ready_timeout_s=timeout_s)
    if settings.services:
        network.start_services(settings.scoring_device, detached)
    return network


class RestartRefused(RuntimeError):
    """A rolling restart needs every validator up: with one already down, restarting another
    could leave fewer than a quorum."""

    def __init__(self, down: list[int]):
        self.down = down
        super().__init__(f"validators {down} are not running: bring them back before a "
                         "rolling restart")


def pid_and_sequence(handle) -> tuple[int | None, int | None]:
    """(pid, checkpoint sequence) of a validator; (None, None) while it does not answer."""
    try:
        found = ray.get(handle.status.remote(), timeout=5)
    except (ray.exceptions.RayError, TimeoutError):
        return None, None
    return found.pid, found.sequence


def restart_in_place(network: net.Network, index: int, timeout_s: float = 300.0) -> int:
    """End validator `index`'s process and let Ray start it again where it runs, from its data
    dir, with the code installed on its node now (an upgrade); return its checkpoint sequence
    once it has caught up with the highest the others had when it went down."""
    target = max(pid_and_sequence(v)[1] or 0 for i, v in enumerate(network.validators) if i != index)
    old_pid = pid_and_sequence(network.validators[index])[0]
    ray.kill(network.validators[index], no_restart=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid, sequence = pid_and_sequence(network.validators[index])
        if pid not in (None, old_pid) and sequence is not None and sequence >= target:
            return sequence
        time.sleep(0.5)
    raise TimeoutError(f"validator {index} did not catch up to checkpoint {target} within "
                       f"{timeout_s:g} s of its restart")


def rolling_restart(network: net.Network, timeout_s: float = 300.0) -> list[int]:
    """Restart every validator in place, one at a time, each caught up before the next."""
    down = [i for i, v in enumerate(network.validators) if v is None or pid_and_sequence(v)[0] is None]
    if down:
        raise RestartRefused(down)
    return [restart_in_place(network, i, timeout_s) for i in range(len(network.validators))]
