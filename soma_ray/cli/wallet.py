"""`soma wallet …`: create, list, show, export and import named keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from soma_ray.protocol.crypto import show_address
from soma_ray.wallet import WALLET_ENV, Wallet, WalletError

app = typer.Typer(name="wallet", help="Named Ed25519 keys in a private key file.", no_args_is_help=True)

WalletOption = Annotated[
    Optional[Path],
    typer.Option(
        "--wallet",
        envvar=WALLET_ENV,
        help="Key file (default ~/.soma/wallet.json).",
        show_default=False,
    ),
]
SetDefaultOption = Annotated[
    bool, typer.Option("--set-default", help="Make this key the default key.")
]


def _fail(err: WalletError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=1)


@app.command()
def new(
    name: Annotated[Optional[str], typer.Option("--name", help="Key name (default key-N).")] = None,
    set_default: SetDefaultOption = False,
    wallet: WalletOption = None,
) -> None:
    """Generate a new key; the first key of a wallet becomes its default."""
    try:
        w = Wallet.load(wallet)
        name, keypair = w.new_key(name, set_default)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"{name} {show_address(keypair.address)}")


@app.command("list")
def list_keys(wallet: WalletOption = None) -> None:
    """List the keys; `*` marks the default."""
    try:
        w = Wallet.load(wallet)
    except WalletError as err:
        raise _fail(err) from None
    for name, keypair in w.keys.items():
        mark = "*" if name == w.active else " "
        typer.echo(f"{mark} {name} {show_address(keypair.address)}")


@app.command()
def address(
    name: Annotated[
        Optional[str], typer.Argument(help="Key name (default: the default key).")
    ] = None,
    wallet: WalletOption = None,
) -> None:
    """Print a key's address."""
    try:
        keypair = Wallet.load(wallet).get(name)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(show_address(keypair.address))


@app.command()
def export(name: str, wallet: WalletOption = None) -> None:
    """Print a key's secret text (anyone who sees it controls the key)."""
    try:
        keypair = Wallet.load(wallet).get(name)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo("warning: this is a secret key; anyone who reads it owns the account", err=True)
    typer.echo(keypair.to_text())


@app.command("import")
def import_key(
    name: str,
    secret_text: Annotated[
        Optional[str],
        typer.Argument(help="somasecret1… text; read from a hidden prompt when left out."),
    ] = None,
    set_default: SetDefaultOption = False,
    wallet: WalletOption = None,
) -> None:
    """Add an existing key under NAME."""
    if secret_text is None:
        secret_text = typer.prompt("secret key text", hide_input=True)
    try:
        keypair = Wallet.load(wallet).import_key(name, secret_text, set_default)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"{name} {show_address(keypair.address)}")


@app.command("set-default")
def set_default_key(name: str, wallet: WalletOption = None) -> None:
    """Make NAME the default key."""
    try:
        Wallet.load(wallet).set_default(name)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"default key: {name}")
