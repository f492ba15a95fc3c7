"""`soma target list|info|claim`: the targets the index lists, one target in full, and claiming
their rewards. Over the gateway (HTTP) only; a claim the chain would refuse (the audit window
still open) is refused before it is sent. docs/miner.md."""
from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer

from soma_ray.cli.common import (BadArgument, KeyOption, RpcOption, WalletOption, fail, in_words,
                                 load_key, parse_id, print_table, run_play, show_amount,
                                 show_distance, show_optional)
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import claim_split
from soma_ray.protocol.targets import claimable_epoch, is_claimable
from soma_ray.wire import STATUSES, TargetView

app = typer.Typer(name="target", help="Targets: list, inspect, claim their rewards.", no_args_is_help=True)

DEFAULT_LIST_LIMIT = 100


def read_status(status: str | None, mine: bool) -> str | None:
    """The index's status filter of `target list` (None: every status). Without --status:
    open targets, or all of them with --mine (a miner's targets are filled, not open)."""
    if status is None:
        return None if mine else "open"
    chosen = status.lower()
    if chosen == "all":
        return None
    if chosen not in STATUSES:
        raise BadArgument(f"status {status!r}: one of {', '.join(STATUSES)} or all")
    return chosen


def claim_refusal(target: TargetView, epoch: int) -> ProtocolError | None:
    """Why claiming `target` in chain epoch `epoch` would fail (None: let the chain decide).
    Claimable and expired targets pay; a filled one once its audit window has closed
    (`is_claimable`: the index may not have seen the epoch change yet)."""
    if target.status in ("claimable", "expired"):
        return None
    if target.status == "filled" and target.fill_epoch is not None:
        if is_claimable(target.fill_epoch, epoch):
            return None
        return errors.AuditWindowOpen(claimable_epoch=claimable_epoch(target.fill_epoch),
                                      current_epoch=epoch)
    return errors.TargetNotFilled(status=target.status.capitalize())


def claim_report(target: TargetView, parameters: Parameters) -> str:
    """What claiming `target` paid (its reward pool as the chain splits it)."""
    fee, miner, model = claim_split(parameters, target.reward_pool)
    if target.status == "expired":
        return f"paid: finder's fee {show_amount(fee)} to you; {show_amount(target.reward_pool - fee)} back to emissions"
    return (f"paid: finder's fee {show_amount(fee)} to you, {show_amount(miner)} to the miner "
            f"{show_optional(target.submitter)} (and its bond back), {show_amount(model)} to model "
            f"{show_optional(target.winning_model_id)}")


def target_row(target: TargetView) -> list[str]:
    return [show_address(target.id), target.status, show_amount(target.reward_pool),
            show_distance(target.threshold_fixed), str(len(target.model_ids)),
            show_amount(target.bond_amount), show_optional(target.fill_epoch)]


def target_lines(target: TargetView) -> list[str]:
    return [
        f"target           {show_address(target.id)}",
        f"status           {target.status}",
        f"reward           {show_amount(target.reward_pool)}",
        f"threshold        {show_distance(target.threshold_fixed)} (cosine distance)",
        f"generated epoch  {target.generation_epoch}",
        f"min bond         {show_amount(target.bond_amount)}",
        *(f"model            {show_address(m)}" for m in target.model_ids),
        f"submission       {show_optional(target.submission_id)}",
        f"miner            {show_optional(target.submitter)}",
        f"winning model    {show_optional(target.winning_model_id)}",
        f"fill epoch       {show_optional(target.fill_epoch)}",
        f"claimable epoch  {show_optional(target.claimable_epoch)}",
    ]


@app.command("list")
def list_targets(
    status: Annotated[Optional[str], typer.Option(
        help=f"One of {', '.join(STATUSES)}, all [default: open; all with --mine].")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only the targets your key filled.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many targets.")] = DEFAULT_LIST_LIMIT,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Targets in the order the chain created them: id, status, reward, threshold, models, bond."""
    submitter = load_key(wallet, key).address if mine else None

    async def action(client):
        chosen = read_status(status, mine)
        targets = await client.get_targets(chosen, limit=limit, submitter=submitter)
        print_table(f"{len(targets)} {chosen or 'all'} targets",
                    ["id", "status", "reward", "threshold", "models", "min bond", "fill epoch"],
                    [target_row(t) for t in targets])

    run_play(rpc_url, action)


@app.command("info")
def target_info(target: Annotated[str, typer.Argument(help="The target's id.")],
                rpc_url: RpcOption = None) -> None:
    """Everything the index knows of one target."""
    async def action(client):
        typer.echo("\n".join(target_lines(await client.get_target(parse_id(target, "target id")))))

    run_play(rpc_url, action)


@app.command("claim")
def claim(
    target: Annotated[Optional[str], typer.Argument(help="The target's id.")] = None,
    target_id: Annotated[Optional[str], typer.Option("--target-id", help="The target's id (the guide's form).")] = None,
    claim_all: Annotated[bool, typer.Option("--all", help="Every claimable target.")] = False,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Claim a target's rewards (two epochs after its fill), or --all claimable ones.

    The miner, the model and you (the finder's fee) are paid; an expired target pays you the
    finder's fee. With --all each target is reported: paid, or why not (then exit code 1)."""
    if target is not None and target_id is not None and target != target_id:
        raise fail("give the target id once (TARGET or --target-id)")
    target = target if target is not None else target_id
    if (target is None) == (not claim_all):
        raise fail("give a target id or --all (not both)")
    claimer = load_key(wallet, key)

    async def action(client):
        parameters = (await client.get_system_state()).parameters
        if claim_all:
            await claim_every(client, claimer, parameters)
            return
        found = await client.get_target(parse_id(target, "target id"))
        refusal = claim_refusal(found, (await client.get_epoch()).epoch)
        if refusal is not None:
            raise refusal
        await client.claim_rewards(claimer, found.id)
        typer.echo(f"{show_address(found.id)}: {claim_report(found, parameters)}")

    run_play(rpc_url, action)


async def claim_every(client, claimer, parameters: Parameters) -> None:
    """Claim every claimable target at once (one transaction each), reporting each; exit code 1
    if any was not paid (e.g. somebody claimed it first)."""
    claimable = await client.get_targets("claimable")
    if not claimable:
        typer.echo("no claimable targets")
        return
    outcomes = await asyncio.gather(*(client.claim_rewards(claimer, t.id) for t in claimable),
                                    return_exceptions=True)
    for found, outcome in zip(claimable, outcomes):
        if isinstance(outcome, BaseException) and not isinstance(outcome, ProtocolError):
            raise outcome
        said = f"not paid: {in_words(outcome)}" if isinstance(outcome, ProtocolError) else claim_report(found, parameters)
        typer.echo(f"{show_address(found.id)}: {said}")
    if any(isinstance(o, ProtocolError) for o in outcomes):
        raise typer.Exit(code=1)
