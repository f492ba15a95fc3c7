"""`soma verify TARGET` and `soma challenge initiate|list|info`: audit a filled target yourself and
dispute it, over the gateway's HTTP only (the SDK's `verify`, `initiate_challenge`,
`get_challenges`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from soma_ray.cli.common import (
    BadArgument, KeyOption, RpcOption, ScoringUrlOption, WalletOption, fail, load_key, parse_amount, parse_id,
    print_table, run_participant, show_amount,
)
from soma_ray.participant import CHALLENGE_KINDS
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed
from soma_ray.wire import CHALLENGE_STATUSES

app = typer.Typer()  # `soma verify`, and the `challenge` group
challenge_app = typer.Typer(name="challenge", no_args_is_help=True,
                            help="Dispute a filled target's submission; the validators audit and decide.")
app.add_typer(challenge_app)

@app.command("verify")
def verify(target: Annotated[Optional[str], typer.Argument(help="A filled target's id: audit it.")] = None,
           data: Annotated[Optional[Path], typer.Option(
               "--data", help="Score this file instead (with --target and --model).")] = None,
           target_id: Annotated[Optional[str], typer.Option("--target", help="The target (with --data).")] = None,
           model: Annotated[Optional[str], typer.Option("--model", help="The model (with --data).")] = None,
           scoring_url: ScoringUrlOption = None, rpc_url: RpcOption = None) -> None:
    """`verify TARGET`: download a filled target's data, re-score it under all its models and say
    whether the submission's claims hold, with the numbers (what a validator's audit decides).

    `verify --data FILE --target ID --model ID` (the plan's): the file's embedding under the
    model, its distance to the target, and whether it is within the target's radius."""
    if data is not None:
        if target is not None or target_id is None or model is None:
            raise fail("--data needs --target and --model (and no TARGET argument)")
        return verify_data(data, target_id, model, scoring_url, rpc_url)
    if target is None and target_id is None:
        raise fail("give a filled target's id (or --data FILE --target ID --model ID)")
    chosen = target if target is not None else target_id

    async def action(client):
        finding = await client.verify(parse_id(chosen, "target id"))
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

    run_participant(rpc_url, action, scoring_url)


def verify_data(data: Path, target: str, model: str, scoring_url: str | None, rpc_url: str | None) -> None:
    from soma_ray.cli.data import read_file_for

    async def action(client):
        payload, _ = await read_file_for(client, data)
        found = await client.get_target(parse_id(target, "target id"))
        model_id = parse_id(model, "model id")
        response = await client.score(None, [model_id], found.embedding, data=payload)
        embedding = response.embedding_array()
        distance = cosine_distance_fixed(bytes(response.embedding), found.embedding)
        within = distance <= found.threshold_fixed
        shown = ", ".join(f"{v:.4f}" for v in embedding[:4])
        typer.echo(f"embedding: [{shown}, …] ({len(embedding)} dimensions) under model 0x{model_id.hex()}, "
                   f"loss {response.loss_score:.6f}")
        typer.echo(f"distance: {distance / DISTANCE_SCALE:.6f} to target 0x{found.id.hex()}, threshold "
                   f"{found.threshold_fixed / DISTANCE_SCALE:.6f}: {'within' if within else 'outside'} its radius")
        if model_id not in found.model_ids:
            typer.echo("note: the model is not one of the target's: a submission must name one of those")

    run_participant(rpc_url, action, scoring_url)


@challenge_app.command("initiate")
def initiate(
    target: Annotated[Optional[str], typer.Argument(help="The filled target's id (or --submission).")] = None,
    submission: Annotated[Optional[str], typer.Option("--submission", help="The submission to dispute.")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", "--type", help=f"{' or '.join(CHALLENGE_KINDS)}.")] = None,
    bond: Annotated[Optional[str], typer.Option("--bond", help="SOMA to post (default: the minimum).")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Challenge the submission that filled TARGET (or --submission ID), posting a bond (returned
    if you are right, with the miner's bond; paid to the miner if not)."""
    if (target is None) == (submission is None):
        raise fail("give the target's id or --submission (one of them)")
    if kind is None:
        raise fail(f"give --type ({' or '.join(CHALLENGE_KINDS)})")

    async def action(client):
        challenger = load_key(wallet, key)
        target_id = (parse_id(target, "target id") if target is not None
                     else (await client.get_submission(parse_id(submission, "submission id"))).target_id)
        challenge_id = await client.initiate_challenge(
            challenger, target_id, kind, None if bond is None else parse_amount(bond))
        info = await client.get_challenge(challenge_id)
        posted = "" if info is None else f", bond {show_amount(info.bond)}"
        typer.echo(f"challenge 0x{challenge_id.hex()} opened{posted}; the validators audit it now")

    run_participant(rpc_url, action)


def _rows(challenges):
    return [("0x" + c.id.hex(), "0x" + c.submission_id.hex(), "0x" + c.target_id.hex(), c.kind,
             show_amount(c.bond), c.opened_epoch, show_address(c.challenger), c.status) for c in challenges]


@challenge_app.command("list")
def list_challenges(
    target: Annotated[Optional[str], typer.Option("--target", help="Only on this target.")] = None,
    submission: Annotated[Optional[str], typer.Option("--submission", help="Only of this submission.")] = None,
    challenger: Annotated[Optional[str], typer.Option("--challenger", help="Only this challenger's.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only those your key opened.")] = False,
    status: Annotated[Optional[str], typer.Option(
        "--status", help=f"One of {', '.join(CHALLENGE_STATUSES)} [default: all].")] = None,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Challenges, the resolved and closed ones too (the index keeps what the chain deletes)."""
    async def action(client):
        if status is not None and status not in CHALLENGE_STATUSES:
            raise BadArgument(f"status {status!r}: one of {', '.join(CHALLENGE_STATUSES)}")
        who = load_key(wallet, key).address if mine else (None if challenger is None else parse_id(challenger, "address"))
        found = await client.challenge_history(
            None if submission is None else parse_id(submission, "submission id"), who,
            None if target is None else parse_id(target, "target id"), status)
        print_table(f"{len(found)} challenges",
                    ("challenge", "submission", "target", "kind", "bond", "epoch", "challenger", "status"),
                    _rows(found))

    run_participant(rpc_url, action)


@challenge_app.command("info")
def info(challenge: Annotated[str, typer.Argument(help="The challenge's id (0x...).")],
         rpc_url: RpcOption = None) -> None:
    """One challenge: its target, kind, bond, challenger, status (how it ended, once it has)."""
    async def action(client):
        found = await client.challenge_record(parse_id(challenge, "challenge id"))
        shown = {"challenge": "0x" + found.id.hex(), "target": "0x" + found.target_id.hex(),
                 "submission": "0x" + found.submission_id.hex(), "challenger": show_address(found.challenger),
                 "kind": found.kind, "bond": show_amount(found.bond), "opened epoch": found.opened_epoch,
                 "status": found.status}
        if found.closed_epoch is not None:
            shown["closed epoch"] = found.closed_epoch
        for name, value in shown.items():
            typer.echo(f"{name}: {value}")

    run_participant(rpc_url, action)
