"""`soma verify TARGET` and `soma challenge initiate|list|info`: audit a filled target yourself and
dispute it, over the gateway's HTTP only (the SDK's `verify`, `initiate_challenge`,
`get_challenges`)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from soma_ray.cli.common import (
    KeyOption, RpcOption, WalletOption, fail, load_key, parse_amount, parse_id, print_table, run_participant,
    show_amount,
)
from soma_ray.participant import CHALLENGE_KINDS, ChallengeInfo
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.targets import DISTANCE_SCALE

app = typer.Typer()  # `soma verify`, and the `challenge` group
challenge_app = typer.Typer(name="challenge", no_args_is_help=True,
                            help="Dispute a filled target's submission; the validators audit and decide.")
app.add_typer(challenge_app)

TargetArgument = Annotated[str, typer.Argument(help="The target's id (0x...).")]


@app.command("verify")
def verify(target: TargetArgument, rpc_url: RpcOption = None) -> None:
    """Download a filled target's data, re-score it under all its models and say whether the
    submission's claims hold, with the numbers (what a validator's audit decides)."""
    async def action(client):
        finding = await client.verify(parse_id(target, "target id"))
        typer.echo(f"claims hold: {'yes' if finding.claims_hold else 'no'} -> a validator votes {finding.verdict}"
                   f"{'' if finding.fraud is None else f' ({finding.fraud})'}")
        typer.echo(f"reason: {finding.reason}")
        recomputed = "n/a" if finding.recomputed_loss is None else f"{finding.recomputed_loss:.6g}"
        typer.echo(f"loss: claimed {finding.claimed_loss:.6g}, recomputed {recomputed}")
        distance = "n/a" if finding.distance is None else f"{finding.distance / DISTANCE_SCALE:.6f}"
        typer.echo(f"distance: recomputed {distance}, threshold {finding.threshold / DISTANCE_SCALE:.6f}")
        if finding.best_model is not None:
            typer.echo(f"lowest-loss model: 0x{finding.best_model.hex()} ({finding.best_loss:.6g})")
        for model_id in finding.report:
            typer.echo(f"model 0x{model_id.hex()} could not be loaded")

    run_participant(rpc_url, action)


@challenge_app.command("initiate")
def initiate(
    target: TargetArgument,
    kind: Annotated[str, typer.Option("--kind", help=f"{' or '.join(CHALLENGE_KINDS)}.")],
    bond: Annotated[Optional[str], typer.Option("--bond", help="SOMA to post (default: the minimum).")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Challenge the submission that filled TARGET, posting a bond (returned if you are right,
    with the miner's bond; paid to the miner if not)."""
    async def action(client):
        challenger = load_key(wallet, key)
        challenge_id = await client.initiate_challenge(
            challenger, parse_id(target, "target id"), kind, None if bond is None else parse_amount(bond))
        info = await client.get_challenge(challenge_id)
        posted = "" if info is None else f", bond {show_amount(info.bond)}"
        typer.echo(f"challenge 0x{challenge_id.hex()} opened{posted}; the validators audit it now")

    run_participant(rpc_url, action)


def _rows(challenges: list[ChallengeInfo]):
    return [("0x" + c.id.hex(), "0x" + c.target_id.hex(), c.kind, show_amount(c.bond), c.opened_epoch,
             show_address(c.challenger), c.status) for c in challenges]


@challenge_app.command("list")
def list_challenges(
    target: Annotated[Optional[str], typer.Option("--target", help="Only on this target.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only those your key opened.")] = False,
    status: Annotated[Optional[str], typer.Option("--status", help="open (the chain keeps no other).")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """The open challenges (a resolved one is gone from the chain: see its target)."""
    async def action(client):
        challenger = load_key(wallet, key).address if mine else None
        found = await client.get_challenges(None if target is None else parse_id(target, "target id"),
                                            challenger, status)
        print_table(f"{len(found)} open challenges",
                    ("challenge", "target", "kind", "bond", "epoch", "challenger", "status"), _rows(found))

    run_participant(rpc_url, action)


@challenge_app.command("info")
def info(challenge: Annotated[str, typer.Argument(help="The challenge's id (0x...).")],
         rpc_url: RpcOption = None) -> None:
    """One challenge: its target, kind, bond, challenger; or that it is no longer open."""
    async def action(client):
        found = await client.get_challenge(parse_id(challenge, "challenge id"))
        if found is None:
            raise fail(f"challenge {challenge} is not open: resolved, closed or never opened "
                       "(its target's status and the balances say how it went)")
        shown = {"challenge": "0x" + found.id.hex(), "target": "0x" + found.target_id.hex(),
                 "submission": "0x" + found.submission_id.hex(), "challenger": show_address(found.challenger),
                 "kind": found.kind, "bond": show_amount(found.bond), "opened epoch": found.opened_epoch,
                 "status": found.status}
        for name, value in shown.items():
            typer.echo(f"{name}: {value}")

    run_participant(rpc_url, action)
