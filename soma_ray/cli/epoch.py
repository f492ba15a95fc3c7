"""`soma epoch advance`: end the localnet's current epoch now, over the gateway (HTTP)."""
from __future__ import annotations

import typer

from soma_ray.cli.common import RpcOption, run_participant
from soma_ray.client import SomaClient

app = typer.Typer(name="epoch", help="Epochs.", no_args_is_help=True)


@app.command("advance")
def advance(rpc_url: RpcOption = None) -> None:
    """Localnet: end the current epoch now."""
    async def action(client: SomaClient):
        typer.echo(f"epoch {await client.advance_epoch()}")

    run_participant(rpc_url, action)
