"""What every participant command shares: reading amounts, addresses and keys from the command
line, reaching the gateway over HTTP, showing amounts and distances, tables, and one-line errors
(protocol errors in words, `in_words`).

Nothing here imports Ray: a participant's commands talk to the network through its gateway only.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer

from soma_ray import chains
from soma_ray.cli.wallet import WalletOption
from soma_ray.client import CHAIN_URLS, SomaClient
from soma_ray.http_transport import GatewayError
from soma_ray.participant import as_id
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.targets import DISTANCE_SCALE
from soma_ray.s3 import S3ConfigError
from soma_ray.wallet import Wallet, WalletError

__all__ = ["BadArgument", "ChainOption", "KeyOption", "RpcOption", "ScoringUrlOption", "WalletOption",
           "add_chain_options", "chosen_chain", "fail", "in_words", "load_key",
           "parse_address", "parse_amount", "parse_id", "print_table", "run_participant", "run_play",
           "show_amount", "show_distance", "show_optional"]

KeyOption = Annotated[Optional[str], typer.Option("--key", help="Wallet key name (default key).")]
RpcOption = Annotated[Optional[str], typer.Option(
    "--rpc-url", envvar="SOMA_RPC_URL",
    help=f"The network's gateway (default {CHAIN_URLS['localnet']}, the localnet's).")]
ChainOption = Annotated[Optional[str], typer.Option(
    "--chain", envvar="SOMA_CHAIN", show_default=False,
    help="A network by name instead of --rpc-url: localnet, or one `soma network add` named.")]
ScoringUrlOption = Annotated[Optional[str], typer.Option(
    "--scoring-url", envvar="SOMA_SCORING_URL", show_default=False,
    help="A scoring service of your own (`soma start scoring`) [default: the network's, or the chain's].")]

# The --chain of the command running (every command that takes --rpc-url takes --chain too:
# `add_chain_options`).
_CHAIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("soma_chain", default=None)


def chosen_chain() -> str | None:
    return _CHAIN.get()


def with_chain_option(callback):
    """`callback` (a command taking `rpc_url`) with a `--chain` option too: the name is kept for
    `run_participant` while the command runs."""
    signature = inspect.signature(callback, eval_str=True)
    if "rpc_url" not in signature.parameters or "chain" in signature.parameters:
        return callback

    @functools.wraps(callback)
    def command(*args, chain: str | None = None, **kwargs):
        token = _CHAIN.set(chain)
        try:
            return callback(*args, **kwargs)
        finally:
            _CHAIN.reset(token)

    parameters = list(signature.parameters.values())
    parameters.append(inspect.Parameter("chain", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=ChainOption))
    command.__signature__ = signature.replace(parameters=parameters)
    command.__annotations__ = {**{p.name: p.annotation for p in parameters}}
    del command.__wrapped__  # typer reads the signature above, not the callback's
    return command


def add_chain_options(app: typer.Typer) -> None:
    """Give every command of `app` (and of its groups) that takes --rpc-url a --chain option."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = with_chain_option(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_chain_options(group.typer_instance)


def endpoints(rpc_url: str | None, scoring_url: str | None = None) -> tuple[str, str | None]:
    """The gateway and scoring URLs of the command line: --rpc-url or --chain (not both; neither:
    the localnet), and --scoring-url (else the chain's own)."""
    try:
        return chains.endpoints(rpc_url, chosen_chain(), scoring_url)
    except chains.ChainError as error:
        raise fail(str(error)) from None


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


def run_participant(rpc_url: str | None, action, scoring_url: str | None = None):
    """Run `action(client)` against the gateway over HTTP (what a participant does: no Ray);
    typed errors and an unreachable gateway become one-line messages in words, with numbers.
    The gateway: --rpc-url, else --chain's, else the localnet's."""
    gateway, scoring = endpoints(rpc_url, scoring_url)

    async def main():
        client = await SomaClient(rpc_url=gateway, scoring_url=scoring)
        try:
            client.read_from_latest()  # each command sees what earlier ones did
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except (ProtocolError, BadArgument, WalletError, ConnectionError, TimeoutError,
            OSError, chains.ChainError, S3ConfigError) as error:
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


def run_play(rpc_url: str | None, action, scoring_url: str | None = None):
    """`run_participant`, with protocol errors in words (`in_words`)."""
    async def worded(client):
        try:
            return await action(client)
        except ProtocolError as error:
            raise fail(in_words(error)) from None
        except GatewayError as error:
            raise fail(str(error)) from None

    return run_participant(rpc_url, worded, scoring_url)
