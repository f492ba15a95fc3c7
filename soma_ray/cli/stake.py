"""`soma stake add|withdraw|list`: delegate SOMA to a validator's pool, over the gateway (HTTP)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from soma_ray.cli.common import (KeyOption, RpcOption, WalletOption, load_key, parse_address,
                                 parse_amount, parse_id, print_table, run_play, show_amount)
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.staking import stake_is_active

app = typer.Typer(name="stake", help="Delegate stake to validators.", no_args_is_help=True)


@app.command("add")
def stake_add(
    validator: Annotated[str, typer.Argument(help="The validator's address.")],
    amount: Annotated[str, typer.Argument(help="SOMA to stake.")],
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Delegate SOMA to a validator's pool; it earns from the next epoch."""
    staker = load_key(wallet, key)

    async def action(client):
        pool_owner, shannons = parse_address(validator), parse_amount(amount)
        staked = await client.add_stake(staker, pool_owner, shannons)
        typer.echo(f"stake {show_address(staked)}: {show_amount(shannons)} with validator "
                   f"{show_address(pool_owner)}, active from the next epoch")

    run_play(rpc_url, action)


@app.command("withdraw")
def stake_withdraw(
    staked: Annotated[str, typer.Argument(help="The stake's id (see `soma stake list`).")],
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Withdraw a stake: refunded now if it is not active yet, else paid at the epoch change."""
    staker = load_key(wallet, key)

    async def action(client):
        staked_id = parse_id(staked, "stake id")
        epoch = (await client.get_epoch()).epoch
        mine = {s.staked_id: s for s in await client.get_stakes(staker.address)}
        if staked_id not in mine:
            raise errors.ObjectNotFound(kind=f"stake of {show_address(staker.address)}", id=staked_id)
        await client.withdraw_stake(staker, staked_id)
        stake = mine[staked_id]
        when = ("paid at the next epoch change" if stake_is_active(stake.activation_epoch, epoch)
                else "refunded now")
        typer.echo(f"stake {show_address(staked_id)} withdrawn: {show_amount(stake.value)} {when}")

    run_play(rpc_url, action)


@app.command("list")
def stake_list(
    address: Annotated[Optional[str], typer.Argument(help="Whose stakes [default: your key's].")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """The stakes an address holds and what each is worth now."""
    mine = None if address else load_key(wallet, key).address

    async def action(client):
        owner = mine or parse_address(address)
        stakes = await client.get_stakes(owner)
        print_table(f"{len(stakes)} stakes of {show_address(owner)}",
                    ["stake", "pool of", "principal", "active from epoch", "value now"],
                    [[show_address(s.staked_id), show_address(s.pool_owner), show_amount(s.principal),
                      str(s.activation_epoch), show_amount(s.value)] for s in stakes])

    run_play(rpc_url, action)
