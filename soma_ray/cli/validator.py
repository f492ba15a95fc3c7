"""`soma validator list`: the current committee, over the gateway (HTTP)."""
from __future__ import annotations

import typer

from soma_ray.cli.common import RpcOption, print_table, run_play, show_amount
from soma_ray.protocol.crypto import show_address

app = typer.Typer(name="validator", help="The validators.", no_args_is_help=True)


def show_bps(bps: int) -> str:
    return f"{bps / 100:.2f}%"


@app.command("list")
def validator_list(rpc_url: RpcOption = None) -> None:
    """The current committee: stake, commission, voting power."""
    async def action(client):
        validators = await client.get_validators()
        print_table(f"{len(validators)} validators", ["address", "stake", "commission", "voting power"],
                    [[show_address(v.address), show_amount(v.stake), show_bps(v.commission_bps),
                      show_bps(v.voting_power)] for v in validators])

    run_play(rpc_url, action)
