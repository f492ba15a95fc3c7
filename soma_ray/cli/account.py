"""`soma faucet`, `soma balance`, `soma transfer`: an account's SOMA, over the gateway (HTTP)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from soma_ray.cli.common import (KeyOption, RpcOption, WalletOption, load_key, parse_address,
                                 parse_amount, run_participant, show_amount)
from soma_ray.client import SomaClient
from soma_ray.protocol.crypto import show_address

app = typer.Typer()


@app.command("faucet")
def faucet(
    amount: Annotated[str, typer.Argument(help="SOMA to receive.")] = "100",
    to: Annotated[Optional[str], typer.Option("--to", "--address", help="Recipient address (default: your key).")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Localnet faucet: get SOMA from the emission pool."""
    async def action(client: SomaClient):
        recipient = parse_address(to) if to else load_key(wallet, key).address
        await client.request_faucet(recipient, parse_amount(amount))
        typer.echo(f"{show_address(recipient)} now has {show_amount(await client.get_balance(recipient))}")

    run_participant(rpc_url, action)


@app.command("balance")
def balance(
    of: Annotated[Optional[str], typer.Argument(help="Address (default: your key).")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """The balance of an address."""
    async def action(client: SomaClient):
        owner = parse_address(of) if of else load_key(wallet, key).address
        typer.echo(show_amount(await client.get_balance(owner)))

    run_participant(rpc_url, action)


@app.command("transfer")
def transfer(
    recipient: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="SOMA to send.")],
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Send SOMA; returns once the transfer is in a certified checkpoint."""
    async def action(client: SomaClient):
        sender = load_key(wallet, key)
        effects = await client.transfer(sender, parse_address(recipient), parse_amount(amount))
        typer.echo(f"transferred {amount} SOMA (fee {effects.fee_charged} shannons); "
                   f"balance {show_amount(await client.get_balance(sender.address))}")

    run_participant(rpc_url, action)
