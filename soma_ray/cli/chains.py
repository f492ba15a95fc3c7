"""`soma network add|list|remove`: name a network once (`$SOMA_HOME/chains.json`,
soma_ray/chains.py), then reach it by name: `--chain NAME` on every command that takes
--rpc-url, `SomaClient(chain=NAME)` in code. "localnet" is built in."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from soma_ray import chains
from soma_ray.cli.common import fail

app = typer.Typer(name="network", help="Named networks: add, list, remove (then --chain NAME).",
                  no_args_is_help=True)


@app.command("add")
def add(name: Annotated[str, typer.Argument(help="The name (e.g. testnet).")],
        url: Annotated[str, typer.Argument(help="Its gateway's URL (http:// or https://).")],
        scoring_url: Annotated[Optional[str], typer.Option(
            "--scoring-url", help="A scoring service of your own to use with it.")] = None) -> None:
    """Name a network (a name given again is replaced)."""
    try:
        chain = chains.add_chain(name, url, scoring_url)
    except chains.ChainError as error:
        raise fail(str(error)) from None
    extra = "" if chain.scoring_url is None else f", scoring {chain.scoring_url}"
    typer.echo(f"{chain.name}: {chain.rpc_url}{extra} (in {chains.chains_path()})")


@app.command("list")
def list_chains() -> None:
    """Every name: the built-in ones and yours."""
    try:
        known = chains.known_chains()
    except chains.ChainError as error:
        raise fail(str(error)) from None
    for chain in known.values():
        extra = "" if chain.scoring_url is None else f" scoring {chain.scoring_url}"
        typer.echo(f"{chain.name} {chain.rpc_url}{extra}{' (built in)' if chain.builtin else ''}")


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The name to forget.")]) -> None:
    try:
        chain = chains.remove_chain(name)
    except chains.ChainError as error:
        raise fail(str(error)) from None
    typer.echo(f"removed {chain.name} ({chain.rpc_url})")
