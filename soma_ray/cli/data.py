"""`soma score`, `soma submit` and `soma data download`: a miner's data scored against the targets,
submitted to one, and a submission's data read back.

They reach the network through its gateway over HTTP only (`run_play`), like any participant: no
Ray. Every check that can refuse a submission (the file's size, the target's status, the
distance, the bond) runs before anything is uploaded or sent, so a refused command costs
nothing. The rule for the best targets and the output are in docs/miner.md.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, NamedTuple, Optional

import typer

from soma_ray.cli.common import (BadArgument, KeyOption, RpcOption, WalletOption, fail, in_words,
                                 load_key, parse_id, print_table, run_play, show_amount,
                                 show_distance)
from soma_ray.files import FileTooLarge, read_bounded
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import required_bond, submission_cost
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed
from soma_ray.wire import MAX_PAGE, TargetView

app = typer.Typer()  # `soma score` and `soma submit`, and the `data` group
data_app = typer.Typer(name="data", help="Submitted data.", no_args_is_help=True)
app.add_typer(data_app)

# The best-target search (docs/miner.md): the open targets it looks at (one index page), and the
# distinct model sets it scores the file under (one scoring request each).
MAX_CANDIDATES = MAX_PAGE
MAX_MODEL_SETS = 4
SHOWN_CANDIDATES = 5

TargetOption = Annotated[Optional[str], typer.Option(
    "--target", help="A target's id (default: the best open targets, see docs/miner.md).")]
FileArgument = Annotated[Path, typer.Argument(help="The data file.", show_default=False)]


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


def read_data_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, reading at most one byte more than the network takes per submission
    (DataTooLarge beyond it: nothing is uploaded, scored or sent)."""
    try:
        data = read_bounded(path, max_bytes)
    except FileTooLarge as large:
        raise errors.DataTooLarge(size=large.size, max=max_bytes) from None
    except FileNotFoundError:
        raise BadArgument(f"file {str(path)!r} does not exist") from None
    except OSError as error:
        raise BadArgument(f"file {str(path)!r} cannot be read: {error.strerror}") from None
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
    """Why a submission to `target` would be refused for its status (None: it is open; the index
    derives "open" and "expired" from the chain's rule, `accepts_commit`)."""
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
    needed = submission_cost(parameters, size)
    if balance < needed:
        return errors.InsufficientBalance(required=needed, available=balance)
    return None


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


@app.command("score")
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


@app.command("submit")
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
