"""What every participant command shares: reading amounts, addresses and keys from the command
line, reaching the gateway over HTTP, showing amounts and distances, tables, and one-line errors
(protocol errors in words, `in_words`).

Nothing here imports Ray: a participant's commands talk to the network through its gateway only.
"""
from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer

from soma_ray.cli.wallet import WalletOption
from soma_ray.client import CHAIN_URLS, SomaClient
from soma_ray.http_transport import GatewayError
from soma_ray.participant import as_id
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.targets import DISTANCE_SCALE
from soma_ray.wallet import Wallet, WalletError

__all__ = ["BadArgument", "KeyOption", "RpcOption", "WalletOption", "fail", "in_words", "load_key",
           "parse_address", "parse_amount", "parse_id", "print_table", "run_participant", "run_play",
           "show_amount", "show_distance", "show_optional"]

KeyOption = Annotated[Optional[str], typer.Option("--key", help="Wallet key name (default key).")]
RpcOption = Annotated[Optional[str], typer.Option(
    "--rpc-url", envvar="SOMA_RPC_URL",
    help=f"The network's gateway (default {CHAIN_URLS['localnet']}, the localnet's).")]


class BadArgument(ValueError):
    """A command-line value that cannot be read (duration, amount, address, id, file)."""


def parse_amount(text: str) -> int:
    """An amount in SOMA (decimals allowed, down to one shannon) → shannons."""
    try:
        shannons = Decimal(text) * SHANNONS_PER_SOMA
    except InvalidOperation:
        raise BadArgument(f"amount {text!r} is not a number") from None
    if shannons <= 0 or shannons != shannons.to_integral_value():
        raise BadArgument(f"amount {text!r}: a positive number of SOMA, at most 9 decimals")
    return int(shannons)


def parse_id(text: str, what: str = "id") -> bytes:
    """A 0x-hex object id or address (32 bytes) → bytes, or a BadArgument naming `what`."""
    try:
        return as_id(text, f"an {what}" if what[0] in "aeiou" else f"a {what}")
    except ProtocolError:  # MalformedInput: not hex, or not 32 bytes
        raise BadArgument(f"{what} {text!r}: expected 0x followed by 64 hex digits") from None


def parse_address(text: str) -> bytes:
    return parse_id(text, "address")


def show_amount(shannons: int) -> str:
    return f"{Decimal(shannons) / SHANNONS_PER_SOMA:f} SOMA"


def show_distance(fixed: int) -> str:
    return f"{fixed / DISTANCE_SCALE:.6f}"


def show_optional(value) -> str:
    if value is None:
        return "-"
    return show_address(value) if isinstance(value, bytes) else str(value)


def fail(message: str) -> typer.Exit:
    """Print `message` as one `error:` line (a multi-line one from Ray: its first line)."""
    lines = str(message).strip().splitlines() or ["failed"]
    typer.echo(f"error: {lines[0]}", err=True)
    return typer.Exit(code=1)


def run_participant(rpc_url: str | None, action):
    """Run `action(client)` against the gateway over HTTP (what a participant does: no Ray);
    typed errors and an unreachable gateway become one-line messages in words, with numbers."""
    async def main():
        client = await SomaClient(rpc_url=rpc_url or CHAIN_URLS["localnet"])
        try:
            client.read_from_latest()  # each command sees what earlier ones did
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except (ProtocolError, BadArgument, WalletError, ConnectionError, TimeoutError,
            OSError) as error:
        raise fail(str(error)) from None


def load_key(wallet: Path | None, key: str | None):
    try:
        return Wallet.load(wallet).get(key)
    except WalletError as error:
        raise fail(str(error)) from None


def print_table(title: str, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    """A rich table on stdout (plain text when stdout is not a terminal); ids are never cut."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console(width=200).print(table)


def in_words(error: ProtocolError) -> str:
    """A protocol error as a user reads it: distances as cosine distances, amounts in SOMA,
    each with the chain's own numbers."""
    if isinstance(error, errors.DistanceExceedsThreshold):
        return (f"not a hit: the distance {show_distance(error.distance)} is over the target's threshold "
                f"{show_distance(error.threshold)} ({error.distance} > {error.threshold} in 1e-9 units)")
    if isinstance(error, errors.InsufficientBalance):
        return (f"needs {show_amount(error.required)} ({error.required} shannons), "
                f"the account has {show_amount(error.available)}")
    if isinstance(error, errors.DataTooLarge):
        return f"the file is {error.size} bytes, the network takes at most {error.max} bytes per submission"
    return f"{error} ({error.code})"


def run_play(rpc_url: str | None, action):
    """`run_participant`, with protocol errors in words (`in_words`)."""
    async def worded(client):
        try:
            return await action(client)
        except ProtocolError as error:
            raise fail(in_words(error)) from None
        except GatewayError as error:
            raise fail(str(error)) from None

    return run_participant(rpc_url, worded)
