"""`soma wallet …`: create, list, show, export and import named keys; encrypt the key file.

A wallet encrypted with a passphrase (`new --encrypt`, `encrypt`) opens with $SOMA_WALLET_PASSWORD
or a hidden prompt (soma_ray/wallet.py); every command here and every command that signs with it
asks the same way. A new passphrase comes from $SOMA_WALLET_PASSWORD when set (scripts), else a
hidden prompt typed twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from soma_ray.protocol.crypto import show_address
from soma_ray.wallet import PASSWORD_ENV, WALLET_ENV, Wallet, WalletError

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


def new_passphrase(use_env: bool = True) -> str:
    """A new passphrase: $SOMA_WALLET_PASSWORD (when `use_env` and set), else typed twice at a
    hidden prompt."""
    from_env = os.environ.get(PASSWORD_ENV) if use_env else None
    if from_env:
        return from_env
    return typer.prompt("new wallet passphrase", hide_input=True, confirmation_prompt=True)


@app.command()
def new(
    name: Annotated[Optional[str], typer.Option("--name", "--alias", help="Key name (default key-N).")] = None,
    set_default: Annotated[bool, typer.Option(
        "--set-default/--keep-default",
        help="Make the new key the default (active) key, as the reference CLI does; "
        "--keep-default leaves the default as it is.")] = True,
    encrypt: Annotated[bool, typer.Option(
        "--encrypt", help=f"Encrypt the key file with a passphrase (${PASSWORD_ENV}, else asked "
        "twice); an encrypted wallet stays encrypted without it.")] = False,
    wallet: WalletOption = None,
) -> None:
    """Generate a new key and make it the default (active) key (`soma faucet`, `soma wallet
    export` and every signing command then use it)."""
    try:
        w = Wallet.load(wallet)
        if encrypt and not w.encrypted:
            w.encrypt(new_passphrase())  # before the key is added: it never lands in the clear
        name, keypair = w.new_key(name, set_default)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"{name} {show_address(keypair.address)}")


@app.command("encrypt")
def encrypt_wallet(wallet: WalletOption = None) -> None:
    """Encrypt the key file with a passphrase, or give an encrypted one a new passphrase (the
    current one opens it first)."""
    try:
        w = Wallet.load(wallet)
        changing = w.encrypted
        w.encrypt(new_passphrase(use_env=not changing))
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"{w.path}: {'new passphrase set' if changing else 'encrypted'} "
               f"({len(w.keys)} key{'s' if len(w.keys) != 1 else ''})")


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
def export(name: Annotated[Optional[str], typer.Argument(
               help="Key name (default: the default key).")] = None,
           wallet: WalletOption = None) -> None:
    """Print a key's secret text (anyone who sees it controls the key): what
    `Keypair.from_secret_key` and SOMA_SECRET_KEY take."""
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


@app.command("switch")
def switch(name: Annotated[str, typer.Argument(help="The key to make the default.")],
           wallet: WalletOption = None) -> None:
    """Make NAME the default (active) key (the reference CLI's name for set-default)."""
    set_default_key(name, wallet)


@app.command("set-default")
def set_default_key(name: str, wallet: WalletOption = None) -> None:
    """Make NAME the default key."""
    try:
        Wallet.load(wallet).set_default(name)
    except WalletError as err:
        raise _fail(err) from None
    typer.echo(f"default key: {name}")
