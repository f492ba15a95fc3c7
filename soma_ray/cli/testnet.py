"""`soma testnet restart`, and the testnet file `soma start testnet --config FILE` reads.

The file (docs/operations.md; deploy/testnet.toml is an example) is read and checked here, all of
it before anything starts (`read_testnet_file`); actors/testnet.py launches. `soma start testnet`
(soma_ray/cli/start.py) joins the cluster (--address, RAY_ADDRESS or the recorded one; never a
new one: a testnet needs nodes that offer its validators' resources), starts the network
detached and returns; `soma status` and `soma stop` reach it with the same address and namespace.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import typer

from actors import network as net
from actors.testnet import RestartRefused, TestnetSettings, rolling_restart
from soma_ray import cluster
from soma_ray.cli.common import BadArgument, fail, parse_address
from soma_ray.cli.ops import AddressOption, NamespaceOption, parse_duration_ms
from soma_ray.config import DEFAULT_PLACEMENT
from soma_ray.files import FileTooLarge, read_bounded
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.genesis import genesis, preset_keypair
from soma_ray.protocol.params import BPS, SHANNONS_PER_SOMA

app = typer.Typer(name="testnet", help="Operate a running testnet.", no_args_is_help=True)

MAX_FILE_BYTES = 64 * 1024
MAX_VALIDATORS = 100
SCORING_DEVICES = ("auto", "cpu", "cuda")
PLACEMENT_OPTIONS = ("num_cpus", "num_gpus", "resources")
HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
# key: (its TOML type, the TestnetSettings field it sets where that is named otherwise)
_SCALARS = {
    "validators": (int, None),
    "epoch_duration": (str, "epoch_duration_ms"),
    "validator_stake": (int, None),
    "commission_bps": (int, None),
    "faucet": (bool, None),
    "namespace": (str, None),
    "http_host": (str, None),
    "public_host": (str, None),
    "http_port": (int, None),
    "services": (bool, None),
    "scoring_device": (str, None),
}


def read_testnet_settings(text: str, source: str = "testnet file") -> TestnetSettings:
    """The settings a testnet file holds, or a BadArgument naming the first thing wrong in it
    (unknown keys included: a misspelt setting would silently keep its default)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadArgument(f"{source}: not TOML ({error})") from None
    unknown = sorted(set(table) - set(_SCALARS) - {"data_dir", "balances", "placement"})
    if unknown:
        raise BadArgument(f"{source}: unknown settings {unknown}")
    data_dir = table.get("data_dir")
    if not isinstance(data_dir, str) or not Path(data_dir).expanduser().is_absolute():
        raise BadArgument(f"{source}: data_dir, an absolute path (the same on every node), is required")
    values = {"data_dir": str(Path(data_dir).expanduser())}
    for key, (kind, field_name) in _SCALARS.items():
        if key in table:
            # bool is an int in Python: `validators = true` must not read as 1
            if not isinstance(table[key], kind) or (kind is int and isinstance(table[key], bool)):
                raise BadArgument(f"{source}: {key} must be a {kind.__name__}")
            values[field_name or key] = table[key]
    check_scalars(values, source)
    values["balances"] = _balances(table.get("balances", {}), source)
    values["placement"] = _placement(table.get("placement", {}), source)
    settings = TestnetSettings(**values)
    _check_genesis(settings, source)
    return settings


def check_scalars(values: dict, source: str) -> None:
    """Check the plain settings' ranges and turn them into their fields' units, in place."""
    def require(ok: bool, what: str) -> None:
        if not ok:
            raise BadArgument(f"{source}: {what}")

    require(1 <= values.get("validators", 1) <= MAX_VALIDATORS, f"validators: 1 to {MAX_VALIDATORS}")
    if "epoch_duration_ms" in values:
        try:
            values["epoch_duration_ms"] = parse_duration_ms(values["epoch_duration_ms"])
        except BadArgument as error:
            raise BadArgument(f"{source}: epoch_duration: {error}") from None
    if "validator_stake" in values:
        require(values["validator_stake"] > 0, "validator_stake: a positive number of SOMA")
        values["validator_stake"] *= SHANNONS_PER_SOMA
    require(0 <= values.get("commission_bps", 0) <= BPS, f"commission_bps: 0 to {BPS}")
    require(1 <= values.get("http_port", 1) <= 65535, "http_port: 1 to 65535")
    require(values.get("namespace", "x") != "", "namespace: not empty")
    for host in ("http_host", "public_host"):  # a bare host name or address, as URLs carry it
        require(HOST.fullmatch(values.get(host, "localhost")) is not None,
                f"{host}: a host name or IPv4 address (no scheme, port or path)")
    require(values.get("scoring_device", "auto") in SCORING_DEVICES,
            f"scoring_device: one of {', '.join(SCORING_DEVICES)}")


def _balances(table, source: str) -> tuple[tuple[bytes, int], ...]:
    """`[balances]` "0x<address>" = whole SOMA."""
    if not isinstance(table, dict):
        raise BadArgument(f"{source}: balances is a table of \"0x<address>\" = SOMA")
    found = []
    for address, amount in table.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise BadArgument(f"{source}: balance of {address}: a positive number of SOMA")
        found.append((parse_address(address), amount * SHANNONS_PER_SOMA))
    return tuple(found)


def _placement(table, source: str) -> dict:
    """`[placement.<kind>]` num_cpus, num_gpus, resources = {name = amount}."""
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise BadArgument(f"{source}: placement is a table of [placement.<kind>] tables")
    for kind, options in table.items():
        if kind not in DEFAULT_PLACEMENT:
            raise BadArgument(f"{source}: placement.{kind}: kinds are {', '.join(DEFAULT_PLACEMENT)}")
        if set(options) - set(PLACEMENT_OPTIONS):
            raise BadArgument(f"{source}: placement.{kind}: options are {', '.join(PLACEMENT_OPTIONS)}")
        amounts = [options.get("num_cpus", 0), options.get("num_gpus", 0)]
        resources = options.get("resources", {})
        if not isinstance(resources, dict):
            raise BadArgument(f"{source}: placement.{kind}.resources is a table of name = amount")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0
                   for a in amounts + list(resources.values())):
            raise BadArgument(f"{source}: placement.{kind}: amounts are numbers, at least 0")
    return table


def _check_genesis(settings: TestnetSettings, source: str) -> None:
    """The genesis must be computable (stakes and balances within the supply) before any key
    is made: tried with stand-in keys, under the same rules."""
    stand_ins = [preset_keypair("validator", i).public_key for i in range(settings.validators)]
    try:
        genesis(settings.genesis_config(stand_ins, 0))
    except ProtocolError as error:
        raise BadArgument(f"{source}: its genesis cannot be built: {error}") from None


def read_testnet_file(path: Path) -> TestnetSettings:
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except FileTooLarge:
        raise BadArgument(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a testnet file") from None
    except OSError as error:
        raise BadArgument(f"{path}: {error.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadArgument(f"{path}: not UTF-8 text") from None
    return read_testnet_settings(text, str(path))


@app.command("restart")
def restart_command(address: AddressOption = None,
                    namespace: NamespaceOption = net.DEFAULT_NAMESPACE) -> None:
    """Rolling restart (an upgrade, once the nodes have the new code): each validator's process
    in turn ends and starts again on its node from its data dir; the next waits until it has
    caught up. Needs every validator up."""
    try:
        cluster.connect(address, namespace=namespace)
        sequences = rolling_restart(net.connect(namespace))
    except (ConnectionError, net.NetworkNotRunning, RestartRefused, TimeoutError) as error:
        raise fail(str(error)) from None
    for index, sequence in enumerate(sequences):
        typer.echo(f"validator-{index}: restarted, caught up at checkpoint {sequence}")
