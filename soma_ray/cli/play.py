"""`soma target|score|submit|data|stake|validator`: the miner's and the staker's commands.

They reach the network through its gateway over HTTP only (`run_participant`), like any
participant: no Ray. Every check that can refuse a command (the file's size, the target's
status, the distance, the bond, the audit window) runs before anything is uploaded or sent, so
a refused command costs nothing. The rule for the best targets and the output are in
docs/miner.md.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, NamedTuple, Optional

import typer

from soma_ray.cli.common import (BadArgument, KeyOption, RpcOption, WalletOption, fail, load_key,
                                 parse_address, parse_amount, parse_id, print_table,
                                 run_participant, show_amount)
from soma_ray.http_transport import GatewayError
from soma_ray.node.target_index import STATUSES, TargetView
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import claim_split, required_bond
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed
from soma_ray.wire import MAX_PAGE

target_app = typer.Typer(help="Targets: list, inspect, claim their rewards.", no_args_is_help=True)
data_app = typer.Typer(help="Submitted data.", no_args_is_help=True)
stake_app = typer.Typer(help="Delegate stake to validators.", no_args_is_help=True)
validator_app = typer.Typer(help="The validators.", no_args_is_help=True)

# The best-target search (docs/miner.md): the open targets it looks at (one index page), and the
# distinct model sets it scores the file under (one scoring request each).
MAX_CANDIDATES = MAX_PAGE
MAX_MODEL_SETS = 4
SHOWN_CANDIDATES = 5
DEFAULT_LIST_LIMIT = 100

TargetOption = Annotated[Optional[str], typer.Option(
    "--target", help="A target's id (default: the best open targets, see docs/miner.md).")]
FileArgument = Annotated[Path, typer.Argument(help="The data file.", show_default=False)]


# ----------------------------------------------------------------------------- pure parts


class Scored(NamedTuple):
    """A file scored for one target: the winning model, its loss and embedding, and the
    chain's own distance (fixed point) of that embedding to the target."""
    target: TargetView
    model_id: bytes
    loss: float
    embedding: bytes  # little-endian float32
    distance: int

    @property
    def hit(self) -> bool:
        return self.distance <= self.target.threshold_fixed


def show_distance(fixed: int) -> str:
    return f"{fixed / DISTANCE_SCALE:.6f}"


def show_bps(bps: int) -> str:
    return f"{bps / 100:.2f}%"


def show_optional(value) -> str:
    if value is None:
        return "-"
    return show_address(value) if isinstance(value, bytes) else str(value)


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


def read_data_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, reading at most one byte more than the network takes per submission
    (DataTooLarge beyond it: nothing is uploaded, scored or sent)."""
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
            size = max(len(data), path.stat().st_size)
    except FileNotFoundError:
        raise BadArgument(f"file {str(path)!r} does not exist") from None
    except OSError as error:
        raise BadArgument(f"file {str(path)!r} cannot be read: {error.strerror}") from None
    if size > max_bytes:
        raise errors.DataTooLarge(size=size, max=max_bytes)
    if not data:
        raise BadArgument(f"file {str(path)!r} is empty")
    return data


def model_sets_to_score(targets: list[TargetView], limit: int = MAX_MODEL_SETS) -> list[list[TargetView]]:
    """The open targets grouped by their model set (a file scores the same under one set: only
    the distance depends on the target), the `limit` sets with the most reward first. A set is
    its models in any order: targets list theirs nearest first, so one set comes in several."""
    groups: dict[frozenset[bytes], list[TargetView]] = {}
    for target in targets:
        groups.setdefault(frozenset(target.model_ids), []).append(target)
    ranked = sorted(groups.values(), key=lambda group: -sum(t.reward_pool for t in group))
    return ranked[:limit]


def scored_for(targets: list[TargetView], model_id: bytes, loss: float, embedding: bytes) -> list[Scored]:
    """One score (of one model set) for each of its targets, with the chain's distance."""
    return [Scored(t, model_id, loss, embedding, cosine_distance_fixed(embedding, t.embedding))
            for t in targets]


def rank(scored: list[Scored]) -> list[Scored]:
    """Best first: the hits by reward (more first), then distance (nearer first); then the
    misses by how far they are over the threshold (least first)."""
    return sorted(scored, key=lambda s: (0, -s.target.reward_pool, s.distance) if s.hit
                  else (1, s.distance - s.target.threshold_fixed, 0))


def open_refusal(target: TargetView, epoch: int) -> ProtocolError | None:
    """Why a submission to `target` would be refused for its status (None: it is open)."""
    if target.status == "open":
        return None
    if target.status == "expired":
        return errors.TargetExpired(generation_epoch=target.generation_epoch, current_epoch=epoch)
    return errors.TargetNotOpen(status=target.status)


def distance_error(scored: Scored) -> ProtocolError:
    return errors.DistanceExceedsThreshold(distance=scored.distance, threshold=scored.target.threshold_fixed)


def submit_refusal(scored: Scored, parameters: Parameters, balance: int, size: int) -> ProtocolError | None:
    """What the chain would refuse a submission of `scored` for (the distance, or a bond plus
    the commit's and the reveal's fees the wallet cannot pay); None if nothing."""
    if not scored.hit:
        return distance_error(scored)
    needed = required_bond(parameters, size) + 2 * parameters.base_fee
    if balance < needed:
        return errors.InsufficientBalance(required=needed, available=balance)
    return None


def claim_refusal(target: TargetView, epoch: int) -> ProtocolError | None:
    """Why claiming `target` in chain epoch `epoch` would fail (None: let the chain decide).
    Claimable and expired targets pay; a filled one once its audit window has closed (the
    index may not have seen the epoch change yet)."""
    if target.status in ("claimable", "expired"):
        return None
    if target.status == "filled" and target.claimable_epoch is not None:
        if epoch >= target.claimable_epoch:
            return None
        return errors.AuditWindowOpen(claimable_epoch=target.claimable_epoch, current_epoch=epoch)
    return errors.TargetNotFilled(status=target.status.capitalize())


def claim_report(target: TargetView, parameters: Parameters) -> str:
    """What claiming `target` paid (its reward pool as the chain splits it)."""
    fee, miner, model = claim_split(parameters, target.reward_pool)
    if target.status == "expired":
        return f"paid: finder's fee {show_amount(fee)} to you; {show_amount(target.reward_pool - fee)} back to emissions"
    return (f"paid: finder's fee {show_amount(fee)} to you, {show_amount(miner)} to the miner "
            f"{show_optional(target.submitter)} (and its bond back), {show_amount(model)} to model "
            f"{show_optional(target.winning_model_id)}")


def in_words(error: ProtocolError) -> str:
    """A protocol error as a user reads it: distances as cosine distances, amounts in SOMA,
    each with the chain's own numbers."""
    if isinstance(error, errors.DistanceExceedsThreshold):
        return (f"not a hit: the distance {show_distance(error.distance)} is over the target's threshold "
                f"{show_distance(error.threshold)} ({error.distance} > {error.threshold} in 1e-9 units)")
    if isinstance(error, errors.InsufficientBalance):
        return (f"needs {show_amount(error.required)} ({error.required} shannons), "
                f"the account has {show_amount(error.available)}")
    if isinstance(error, errors.DataTooLarge):
        return f"the file is {error.size} bytes, the network takes at most {error.max} bytes per submission"
    return f"{error} ({error.code})"


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


def score_row(scored: Scored) -> list[str]:
    return [show_address(scored.target.id), show_amount(scored.target.reward_pool),
            show_distance(scored.distance), show_distance(scored.target.threshold_fixed),
            "hit" if scored.hit else "miss", f"{scored.loss:.6f}"]


def winner_lines(shown: list[Scored]) -> list[str]:
    """The winning model of each model set among `shown` (one per set: the loss is the set's)."""
    winners = dict.fromkeys((s.model_id, s.loss) for s in shown)
    return [f"winner model {show_address(model)}, loss {loss:.6f}" for model, loss in winners]


def score_lines(scored: Scored) -> list[str]:
    verdict = "hit" if scored.hit else "miss"
    if scored.target.status != "open":
        verdict += f" (but the target is {scored.target.status}: it takes no submission)"
    return [f"target     {show_address(scored.target.id)} ({scored.target.status})",
            f"winner     model {show_address(scored.model_id)}, loss {scored.loss:.6f}",
            f"distance   {show_distance(scored.distance)} vs threshold "
            f"{show_distance(scored.target.threshold_fixed)}: {verdict}"]


# ----------------------------------------------------------------------------- shells


def run_play(rpc_url: str | None, action):
    """`run_participant`, with protocol errors in this module's words."""
    async def worded(client):
        try:
            return await action(client)
        except ProtocolError as error:
            raise fail(in_words(error)) from None
        except GatewayError as error:
            raise fail(str(error)) from None

    return run_participant(rpc_url, worded)


async def read_file_for(client, path: Path) -> tuple[bytes, Parameters]:
    parameters = (await client.get_system_state()).parameters
    return read_data_file(path, parameters.max_submission_bytes), parameters


async def score_under(client, data: bytes, targets: list[TargetView]) -> list[Scored]:
    """Score `data` once under the model set the `targets` share."""
    manifests = await client.get_model_manifests(targets[0])
    response = await client.score(None, manifests, targets[0].embedding, data=data)
    return scored_for(targets, manifests[response.winner].model_id, response.loss_score, response.embedding)


async def score_best(client, data: bytes) -> tuple[list[Scored], int]:
    """The open targets scored (best first, see `rank`) and how many targets were open."""
    targets = await client.get_targets("open", limit=MAX_CANDIDATES)
    if not targets:
        raise fail("there are no open targets")
    groups = model_sets_to_score(targets)
    scored = await asyncio.gather(*(score_under(client, data, group) for group in groups))
    return rank([s for found in scored for s in found]), len(targets)


async def score_target(client, data: bytes, target_text: str, open_only: bool = False) -> Scored:
    """`data` scored for the target given on the command line (with `open_only`: refused
    before scoring unless that target takes submissions)."""
    target = await client.get_target(parse_id(target_text, "target id"))
    refusal = open_refusal(target, (await client.get_epoch()).epoch) if open_only else None
    if refusal is not None:
        raise refusal
    [scored] = await score_under(client, data, [target])
    return scored


@target_app.command("list")
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


@target_app.command("info")
def target_info(target: Annotated[str, typer.Argument(help="The target's id.")],
                rpc_url: RpcOption = None) -> None:
    """Everything the index knows of one target."""
    async def action(client):
        typer.echo("\n".join(target_lines(await client.get_target(parse_id(target, "target id")))))

    run_play(rpc_url, action)


@target_app.command("claim")
def claim(
    target: Annotated[Optional[str], typer.Argument(help="The target's id.")] = None,
    claim_all: Annotated[bool, typer.Option("--all", help="Every claimable target.")] = False,
    wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None,
) -> None:
    """Claim a target's rewards (two epochs after its fill), or --all claimable ones.

    The miner, the model and you (the finder's fee) are paid; an expired target pays you the
    finder's fee. With --all each target is reported: paid, or why not (then exit code 1)."""
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


def score(file: FileArgument, target: TargetOption = None, rpc_url: RpcOption = None) -> None:
    """Score a file against a target (or the best open targets): winner, loss, distance, hit."""
    async def action(client):
        data, _ = await read_file_for(client, file)
        if target is not None:
            typer.echo("\n".join(score_lines(await score_target(client, data, target))))
            return
        ranked, tried = await score_best(client, data)
        shown = ranked[:SHOWN_CANDIDATES]
        print_table(f"the best of {len(ranked)} targets scored ({tried} open)",
                    ["target", "reward", "distance", "threshold", "hit", "loss"], [score_row(s) for s in shown])
        typer.echo("\n".join(winner_lines(shown)))

    run_play(rpc_url, action)


def submit(file: FileArgument, target: TargetOption = None, wallet: WalletOption = None,
           key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Score, check, upload and submit a file to a target (default: the best open one).

    Refused before anything is uploaded or sent unless the file is a hit and you can pay its
    bond; the submission is a commit, then a reveal once the commit is final."""
    miner = load_key(wallet, key)

    async def action(client):
        data, parameters = await read_file_for(client, file)
        scored = await chosen_target(client, data, target)
        refusal = submit_refusal(scored, parameters, await client.get_balance(miner.address), len(data))
        if refusal is not None:
            raise refusal
        url = await client.upload(data)
        submission = await client.submit_data(miner, scored.target.id, data, url, scored.model_id,
                                              scored.embedding, scored.distance / DISTANCE_SCALE, scored.loss)
        now = await client.get_target(scored.target.id)  # the index has seen the reveal
        typer.echo(f"submission {show_address(submission)} to target {show_address(now.id)} ({now.status})")
        typer.echo(f"bond {show_amount(required_bond(parameters, len(data)))}, model "
                   f"{show_address(scored.model_id)}, distance {show_distance(scored.distance)} "
                   f"<= {show_distance(scored.target.threshold_fixed)}, loss {scored.loss:.6f}")

    run_play(rpc_url, action)


async def chosen_target(client, data: bytes, target_text: str | None) -> Scored:
    """The target a submission goes to, scored: the one given (refused unless open) or the best."""
    if target_text is None:
        ranked, tried = await score_best(client, data)
        if not ranked[0].hit:
            raise fail(f"the file hits none of the {len(ranked)} open targets scored ({tried} open); "
                       f"the nearest: {in_words(distance_error(ranked[0]))}")
        return ranked[0]
    return await score_target(client, data, target_text, open_only=True)


@data_app.command("download")
def download(
    target: Annotated[str, typer.Argument(help="A filled target's id.")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write it [default: ./<target id>.bin].")] = None,
    rpc_url: RpcOption = None,
) -> None:
    """The data a target's submission revealed, checked against the chain's hash and size."""
    async def action(client):
        target_id = parse_id(target, "target id")
        path = out or Path(f"{show_address(target_id)}.bin")
        data = await client.fetch_submission_data(target_id)
        path.write_bytes(data)
        typer.echo(f"wrote {len(data)} bytes to {path} (their hash and size are the chain's)")

    run_play(rpc_url, action)


@stake_app.command("add")
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


@stake_app.command("withdraw")
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
        when = "refunded now" if stake.activation_epoch > epoch else "paid at the next epoch change"
        typer.echo(f"stake {show_address(staked_id)} withdrawn: {show_amount(stake.value)} {when}")

    run_play(rpc_url, action)


@stake_app.command("list")
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


@validator_app.command("list")
def validator_list(rpc_url: RpcOption = None) -> None:
    """The current committee: stake, commission, voting power."""
    async def action(client):
        validators = await client.get_validators()
        print_table(f"{len(validators)} validators", ["address", "stake", "commission", "voting power"],
                    [[show_address(v.address), show_amount(v.stake), show_bps(v.commission_bps),
                      show_bps(v.voting_power)] for v in validators])

    run_play(rpc_url, action)


def register(app: typer.Typer) -> None:
    """Mount these commands on the `soma` app."""
    app.add_typer(target_app, name="target")
    app.add_typer(data_app, name="data")
    app.add_typer(stake_app, name="stake")
    app.add_typer(validator_app, name="validator")
    app.command("score")(score)
    app.command("submit")(submit)
