"""`soma start localnet`, `soma stop`, `soma status`, `soma faucet|balance|transfer`, `soma epoch advance`.

Mount with `register(app)`: it adds the `start` and `epoch` groups and the top-level commands.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Optional

import ray
import typer

from actors import network as net
from soma_ray.cli.wallet import WalletOption
from soma_ray.client import SomaClient
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.wallet import Wallet, WalletError

start_app = typer.Typer(help="Start a network.", no_args_is_help=True)
epoch_app = typer.Typer(help="Epochs.", no_args_is_help=True)

DEFAULT_DATA_DIR = Path("~/.soma/localnet")
STATUS_INTERVAL_S = 1.0
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)?$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, None: 1_000}

NamespaceOption = Annotated[str, typer.Option("--namespace", help="Ray namespace of the network.")]
AddressOption = Annotated[
    Optional[str], typer.Option("--address", envvar="RAY_ADDRESS",
                                help="Ray cluster address (default: the running local cluster).")
]
KeyOption = Annotated[Optional[str], typer.Option("--key", help="Wallet key name (default key).")]


class BadArgument(ValueError):
    """A command-line value that cannot be read (duration, amount, address)."""


def parse_duration_ms(text: str) -> int:
    """'60s', '5m', '500ms', '1h' or plain seconds → milliseconds (positive)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise BadArgument(f"duration {text!r}: use a positive number with ms, s, m or h")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_amount(text: str) -> int:
    """An amount in SOMA (decimals allowed, down to one shannon) → shannons."""
    try:
        shannons = Decimal(text) * SHANNONS_PER_SOMA
    except InvalidOperation:
        raise BadArgument(f"amount {text!r} is not a number") from None
    if shannons <= 0 or shannons != shannons.to_integral_value():
        raise BadArgument(f"amount {text!r}: a positive number of SOMA, at most 9 decimals")
    return int(shannons)


def parse_address(text: str) -> bytes:
    hex_part = text[2:] if text.startswith("0x") else text
    try:
        address = bytes.fromhex(hex_part)
    except ValueError:
        address = b""
    if len(address) != 32:
        raise BadArgument(f"address {text!r}: expected 0x followed by 64 hex digits")
    return address


def show_amount(shannons: int) -> str:
    return f"{Decimal(shannons) / SHANNONS_PER_SOMA:f} SOMA"


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def run_client(address: str | None, namespace: str, action):
    """Connect a SomaClient and run `action(client)`; typed errors become one-line messages."""
    async def main():
        client = await SomaClient(address=address, namespace=namespace)
        return await action(client)

    try:
        return asyncio.run(main())
    except (ProtocolError, net.NetworkNotRunning, BadArgument, WalletError, ConnectionError,
            PermissionError, TimeoutError) as error:
        raise fail(str(error)) from None


def load_key(wallet: Path | None, key: str | None):
    try:
        return Wallet.load(wallet).get(key)
    except WalletError as error:
        raise fail(str(error)) from None


# ---------------------------------------------------------------------------------- start / stop


def ensure_ray(address: str | None, detach: bool, namespace: str) -> str | None:
    """Join the cluster at `address`, or start one; returns the dashboard URL.

    Without an address a new cluster is started rather than joining whatever `auto` finds: on
    a shared machine that could be somebody else's test cluster. A detached network must
    outlive this process, so it gets a `ray start --head` cluster; otherwise this process hosts
    a local Ray that ends with it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        return ray.init(address=address, namespace=namespace, log_to_driver=False,
                        logging_level=logging.ERROR).dashboard_url
    if not detach:
        context = ray.init(address="local", namespace=namespace, include_dashboard=True,
                           log_to_driver=False, logging_level=logging.ERROR)
        return context.dashboard_url
    ray_cli = Path(sys.executable).with_name("ray")
    started = subprocess.run([str(ray_cli), "start", "--head", "--dashboard-host", "127.0.0.1",
                              "--disable-usage-stats"], capture_output=True, text=True)
    if started.returncode != 0:
        raise fail(f"could not start a Ray cluster: {started.stderr.strip()[-300:]}")
    return ray.init(address="auto", namespace=namespace, log_to_driver=False,
                    logging_level=logging.ERROR).dashboard_url


def status_line(found: list[dict | None], tx_per_s: float) -> str:
    up = [s for s in found if s is not None]
    if not up:
        return f"validators up 0/{len(found)}"
    epoch = max(s["epoch"] for s in up)
    height = max(s["sequence"] or 0 for s in up)
    return (f"epoch {epoch} | checkpoint {height} | {tx_per_s:.1f} tx/s | "
            f"validators up {len(up)}/{len(found)}")


def watch(network: net.Network) -> None:
    """Print the live status line until Ctrl-C."""
    last_count, last_time = None, time.monotonic()
    while True:
        found = []
        for handle in network.validators:
            try:
                found.append(None if handle is None else ray.get(handle.status.remote(), timeout=5))
            except (ray.exceptions.RayError, TimeoutError):
                found.append(None)
        counts = [s["committed_transactions"] for s in found if s is not None]
        now = time.monotonic()
        count = max(counts, default=0)
        rate = 0.0 if last_count is None else (count - last_count) / (now - last_time)
        last_count, last_time = count, now
        typer.echo("\r" + status_line(found, rate).ljust(78), nl=False)
        time.sleep(STATUS_INTERVAL_S)


@start_app.command("localnet")
def start_localnet(
    validators: Annotated[int, typer.Option("--validators", min=1, help="Number of validators.")] = 4,
    epoch_duration: Annotated[str, typer.Option("--epoch-duration", help="e.g. 60s, 5m.")] = "60s",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where validators keep their disks.")] = DEFAULT_DATA_DIR,
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
    address: AddressOption = None,
    namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
) -> None:
    """Start (or resume from the data dir) a localnet of validators and the epoch clock."""
    try:
        duration_ms = parse_duration_ms(epoch_duration)
        ttl_s = -(-parse_duration_ms(mempool_ttl) // 1000)  # whole seconds, rounded up
    except BadArgument as error:
        raise fail(str(error)) from None
    dashboard = ensure_ray(address, detach, namespace)
    config = net.NetworkConfig(data_dir=str(data_dir.expanduser()), validators=validators,
                               epoch_duration_ms=duration_ms, namespace=namespace,
                               mempool_capacity=mempool_capacity,
                               mempool_per_sender=mempool_per_sender, mempool_ttl_s=ttl_s)
    try:
        network = net.start(config, force_regenesis=force_regenesis, detached=detach)
    except net.DataDirMismatch as error:
        raise fail(str(error)) from None
    typer.echo(f"localnet of {network.config.validators} validators in Ray namespace "
               f"{namespace!r}, epochs of {network.config.epoch_duration_ms / 1000:g} s, "
               f"data in {network.config.data_dir} (a resumed network keeps its stored settings)")
    typer.echo(f"Ray dashboard: http://{dashboard}" if dashboard else "Ray dashboard: not running")
    if detach:
        typer.echo("running detached; `soma stop` stops it")
        return
    try:
        watch(network)
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
        network.stop()
        ray.shutdown()


def stop(address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE) -> None:
    """Stop a running (detached) network; its data dir stays, so `soma start` resumes it."""
    try:
        if not ray.is_initialized():
            ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
                     logging_level=logging.ERROR)
        network = net.connect(namespace)
    except (ConnectionError, net.NetworkNotRunning) as error:
        raise fail(str(error)) from None
    network.stop()
    typer.echo(f"stopped the network in namespace {namespace!r} (the Ray cluster stays up)")


# ---------------------------------------------------------------------------------- client commands


def status(address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE) -> None:
    """Each validator's epoch, checkpoint height, state root, mempool size and the
    equivocation evidence it holds."""
    async def action(client: SomaClient):
        for index, found in enumerate(await client.status()):
            if found is None:
                typer.echo(f"validator-{index}: down")
            else:
                typer.echo(f"validator-{index}: epoch {found['epoch']} checkpoint {found['sequence']} "
                           f"root {found['state_root'][:16]}… mempool {found['mempool']} "
                           f"evidence {found['evidence']}")

    run_client(address, namespace, action)


def faucet(
    amount: Annotated[str, typer.Argument(help="SOMA to receive.")] = "100",
    to: Annotated[Optional[str], typer.Option("--to", help="Recipient address (default: your key).")] = None,
    wallet: WalletOption = None, key: KeyOption = None,
    address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
) -> None:
    """Localnet faucet: get SOMA from the emission pool."""
    async def action(client: SomaClient):
        recipient = parse_address(to) if to else load_key(wallet, key).address
        await client.request_faucet(recipient, parse_amount(amount))
        typer.echo(f"{show_address(recipient)} now has {show_amount(await client.get_balance(recipient))}")

    run_client(address, namespace, action)


def balance(
    of: Annotated[Optional[str], typer.Argument(help="Address (default: your key).")] = None,
    wallet: WalletOption = None, key: KeyOption = None,
    address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
) -> None:
    """The balance of an address."""
    async def action(client: SomaClient):
        owner = parse_address(of) if of else load_key(wallet, key).address
        typer.echo(show_amount(await client.get_balance(owner)))

    run_client(address, namespace, action)


def transfer(
    recipient: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="SOMA to send.")],
    wallet: WalletOption = None, key: KeyOption = None,
    address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
) -> None:
    """Send SOMA; returns once the transfer is in a certified checkpoint."""
    async def action(client: SomaClient):
        sender = load_key(wallet, key)
        effects = await client.transfer(sender, parse_address(recipient), parse_amount(amount))
        typer.echo(f"transferred {amount} SOMA (fee {effects.fee_charged} shannons); "
                   f"balance {show_amount(await client.get_balance(sender.address))}")

    run_client(address, namespace, action)


@epoch_app.command("advance")
def advance(address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE) -> None:
    """Localnet: end the current epoch now."""
    async def action(client: SomaClient):
        typer.echo(f"epoch {await client.advance_epoch()}")

    run_client(address, namespace, action)


def register(app: typer.Typer) -> None:
    """Mount these commands on the `soma` app."""
    app.add_typer(start_app, name="start")
    app.add_typer(epoch_app, name="epoch")
    for command in (stop, status, faucet, balance, transfer):
        app.command(command.__name__)(command)
