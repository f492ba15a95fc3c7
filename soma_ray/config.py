"""What a network is, for everyone who runs or reaches it: settings, actor names, the data-dir
layout, placement, keys and genesis. The validators, the clock, the client, the CLI and the
launcher all import this module; it imports neither Ray nor any actor.

Layout of a data dir (one per network):

    DIR/network.json           the NetworkConfig below (a file written before a setting existed
                               gets its default)
    DIR/validator-<i>/db       validator i's LMDB store
    DIR/validator-<i>/validator.key   its secret key, when `keys == "files"` (mode 0600): the
                               32 raw bytes, or sealed with $SOMA_VALIDATOR_PASSWORD
                               (soma_ray/keyfile.py); refused when group or others may read it
    DIR/feeds/<name>.cursor    the last checkpoint sequence feed subscriber <name> acknowledged
    DIR/blobs/                 the blob store: submission data and encrypted weights
    DIR/genesis.json           the genesis, when it was written at creation (genesis weights)

Every actor is found by name (`<prefix>validator-<i>`, `<prefix>epoch-clock`) in the network's
Ray namespace, so a CLI in another process, a client or a restarted peer reaches it without
handles being passed around; `prefix` lets tests run several networks in one namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import msgspec

from soma_ray.files import FileTooLarge, write_atomic
from soma_ray.keyfile import (
    BadSealedFile, KdfLimits, KeyFileError, PrivateFileError, WrongPassphrase,
    is_sealed, read_private, seal, unseal,
)
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import enc_hook
from soma_ray.protocol.genesis import GenesisConfig, localnet_genesis_config, preset_keypair

DEFAULT_NAMESPACE = "soma"
CONFIG_FILE = "network.json"
KEY_FILE = "validator.key"
# The passphrase validator keys are sealed with, read from the environment of the process that
# reads or writes the key: on a testnet, the one `ray start` runs with on the validator's node.
VALIDATOR_PASSWORD_ENV = "SOMA_VALIDATOR_PASSWORD"
MAX_KEY_FILE_BYTES = 4096
GENESIS_FILE = "genesis.json"
# Chains a client can name instead of a namespace.
CHAINS = {"localnet": DEFAULT_NAMESPACE}

# Where each kind of actor may run. `resources` names custom Ray resources a node offers; in a
# validator's, "{index}" stands for its index, so a cluster whose node i offers {"validator<i>": 1}
# runs one validator per node. num_cpus 0 by default: the actors are I/O bound and a localnet
# shares 2 cores with everything else.
DEFAULT_PLACEMENT = {
    "validator": {"num_cpus": 0, "resources": {}},
    "clock": {"num_cpus": 0, "resources": {}},
    "target_state": {"num_cpus": 0, "resources": {}},
    "audit": {"num_cpus": 0, "resources": {}},
    "aggregator": {"num_cpus": 0, "resources": {}},
}


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
    # Bytes one validator's mempool holds at most, in all and per sender (node-local, like the
    # counts): beyond them, `MempoolBytesFull` and `SenderBytesFull` (429). 256 MiB bounds a
    # validator's pool whatever the transactions' sizes (the counts alone allowed 100,000 ×
    # 256 KiB); 16 MiB per sender still takes 64 transactions of max_tx_bytes, or thousands of
    # transfers (bench_localnet pipelines 1,500 per sender, ~200 bytes each).
    mempool_bytes: int = 256 * 1024 * 1024
    mempool_sender_bytes: int = 16 * 1024 * 1024
    # Seconds a transaction stays in a validator's mempool at most (node-local): one still
    # there then (its sender never sent the missing earlier nonce, or nothing commits) is
    # dropped and its submitter told `TransactionExpired`, freeing its sender's slot.
    mempool_ttl_s: int = 600
    # "preset": the localnet's fixed public keys (a validator whose disk was wiped keeps its
    # identity); "files": validator i's secret is DIR/validator-<i>/validator.key on its own node.
    keys: str = "preset"
    # A GenesisConfig as JSON (msgspec); None: the localnet genesis built from the settings above.
    genesis_file: str | None = None
    # Publish real weights for the localnet genesis models when the network is created (small
    # V1 models from fixed seeds, encrypted, in the blob store, keys public at genesis), so every
    # target can be scored and mined: `soma start localnet` does; tests opt in.
    genesis_weights: bool = False
    # Ray options per actor kind, merged over DEFAULT_PLACEMENT (see `actor_resources`).
    placement: dict = field(default_factory=dict)
    # Where Ray Serve's HTTP proxy listens: the gateway, blob store and scoring service (the
    # public surface; a Ray cluster runs one proxy, so the first network's setting holds).
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # The host participants reach the proxy at, in the URLs handed out (the gateway's, blob URLs
    # in manifests); None: http_host. Set it where Serve binds an address nobody outside can
    # use (0.0.0.0, or a private address behind a public one).
    public_host: str | None = None

    # ------------------------------------------------------------------ names

    def validator_name(self, index: int) -> str:
        return f"{self.prefix}validator-{index}"

    @property
    def clock_name(self) -> str:
        return f"{self.prefix}epoch-clock"

    @property
    def target_state_name(self) -> str:
        return f"{self.prefix}target-state"

    def app_name(self, service: str) -> str:
        """The Serve application name of `service` ("gateway", "blobs", "scoring")."""
        return f"{self.prefix}{service}"

    def route_prefix(self, service: str) -> str:
        """Its HTTP route: the gateway at the root ("/" or, for a prefixed test network,
        "/<prefix>"), the blob store and scoring service below it."""
        root = "/" + self.prefix.strip("-") if self.prefix else ""
        return (root or "/") if service == "gateway" else f"{root}/{service}"

    @property
    def public_url(self) -> str:
        """The gateway's URL, as participants reach it."""
        route = self.route_prefix("gateway")
        return f"http://{self.public_host or self.http_host}:{self.http_port}{'' if route == '/' else route}"

    # ------------------------------------------------------------------ the data dir

    def validator_dir(self, index: int) -> Path:
        return Path(self.data_dir) / f"validator-{index}"

    @property
    def blobs_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"

    def feed_cursor_path(self, subscriber: str) -> Path:
        return Path(self.data_dir) / "feeds" / f"{subscriber}.cursor"

    # ------------------------------------------------------------------ keys and genesis

    def validator_keypair(self, index: int) -> Keypair:
        if self.keys == "preset":
            return preset_keypair("validator", index)
        return read_validator_key(self.validator_dir(index) / KEY_FILE)

    def validator_public_keys(self) -> list[bytes]:
        """Every validator's public key, in index order, from the genesis (what a validator
        knows of its peers without reading their key files)."""
        return [v.public_key for v in self.genesis_config().validators]

    def genesis_config(self) -> GenesisConfig:
        if self.genesis_file is not None:
            return load_genesis_config(self.genesis_file)
        return localnet_genesis_config(
            [preset_keypair("validator", i).public_key for i in range(self.validators)],
            self.epoch_duration_ms, self.localnet, self.genesis_timestamp_ms)

    # ------------------------------------------------------------------ placement

    def actor_resources(self, kind: str, index: int | None = None) -> dict:
        """Ray actor options (num_cpus, num_gpus, resources) for one actor of `kind`."""
        merged = {**DEFAULT_PLACEMENT.get(kind, {"num_cpus": 0}), **self.placement.get(kind, {})}
        resources = {name.format(index=index): amount
                     for name, amount in merged.pop("resources", {}).items()}
        if resources:
            merged["resources"] = resources
        return merged


def save_config(config: NetworkConfig) -> None:
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(config.data_dir) / CONFIG_FILE, json.dumps(asdict(config), indent=1).encode())


def load_config(data_dir: str) -> NetworkConfig | None:
    path = Path(data_dir) / CONFIG_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    known = {f.name for f in fields(NetworkConfig)}
    return NetworkConfig(**{name: value for name, value in stored.items() if name in known})


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


def load_genesis_config(path: str | os.PathLike) -> GenesisConfig:
    """A GenesisConfig from its JSON file (bytes fields in base64, as msgspec writes them)."""
    return msgspec.json.decode(Path(path).read_bytes(), type=GenesisConfig)


def save_genesis_config(config: GenesisConfig, path: str | os.PathLike) -> None:
    write_atomic(path, msgspec.json.format(msgspec.json.encode(config, enc_hook=enc_hook)))


class ValidatorKeyError(KeyFileError):
    """A validator key file that cannot be used (missing, readable by others, sealed without
    its passphrase, not a key): the message names the file and the fix. A validator whose key
    is refused does not start (its actor dies with this error; Ray does not restart an actor
    whose constructor raised), and the testnet launcher checks every key on its node first."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"validator key {path}: {reason}")

    def __reduce__(self):  # it crosses Ray's process boundaries (an actor's death cause)
        return type(self), (self.path, self.reason)


def write_validator_key(config: NetworkConfig, index: int, keypair: Keypair,
                        passphrase: str | None = None, limits: KdfLimits | None = None) -> None:
    """Keep validator `index`'s secret on its own disk, readable by its owner only (0600):
    sealed with `passphrase`, else with $SOMA_VALIDATOR_PASSWORD when it is set, else raw."""
    path = config.validator_dir(index) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    passphrase = passphrase or os.environ.get(VALIDATOR_PASSWORD_ENV) or None
    data = keypair.secret if passphrase is None else seal(keypair.secret, passphrase, limits)
    write_atomic(path, data, durable=True)  # 0600


def read_validator_key(path: Path, passphrase: str | None = None) -> Keypair:
    """The keypair in a validator key file, or ValidatorKeyError: refused when group or others
    may access it (checked on the open descriptor); a sealed one opens with `passphrase`, else
    $SOMA_VALIDATOR_PASSWORD (never a prompt: validators run unattended)."""
    path = Path(path)
    try:
        data = read_private(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise ValidatorKeyError(path, "missing (a testnet launch writes it on the validator's "
                                "node; restore it from a backup)") from None
    except FileTooLarge:
        raise ValidatorKeyError(path, f"over {MAX_KEY_FILE_BYTES} bytes: not a key") from None
    except PrivateFileError as error:
        if error.mode is not None:
            raise ValidatorKeyError(path, f"mode {error.mode:04o}: group or others may read it, "
                                    f"and a key file must be its owner's only; run chmod 600 "
                                    f"{path}") from None
        raise ValidatorKeyError(path, error.reason) from None
    if len(data) == 32:
        return Keypair.from_secret(data)
    if not is_sealed(data):
        raise ValidatorKeyError(path, "neither a 32-byte secret nor an encrypted key file")
    source = "the passphrase" if passphrase else VALIDATOR_PASSWORD_ENV
    passphrase = passphrase or os.environ.get(VALIDATOR_PASSWORD_ENV)
    if not passphrase:
        raise ValidatorKeyError(path, f"encrypted, and {VALIDATOR_PASSWORD_ENV} is not set where "
                                "it is read (on a testnet: in the environment `ray start` runs "
                                "with on this validator's node)")
    try:
        secret = unseal(data, passphrase, path, source)
    except WrongPassphrase:
        raise ValidatorKeyError(path, f"{source} does not open it (wrong passphrase, or the "
                                "file was altered)") from None
    except BadSealedFile as error:
        raise ValidatorKeyError(path, error.reason) from None
    if len(secret) != 32:
        raise ValidatorKeyError(path, "the encrypted secret is not 32 bytes")
    return Keypair.from_secret(secret)
