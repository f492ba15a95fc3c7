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

from typer.core import TyperGroup

from soma_ray.cli.common import (BadArgument, KeyOption, RpcOption, ScoringUrlOption, WalletOption, fail,
                                 in_words, load_key, parse_id, print_table, run_play, show_amount,
                                 show_distance)
from soma_ray.files import FileTooLarge, read_bounded
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.errors import ProtocolError
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import required_bond, submission_cost
from soma_ray.protocol.targets import DISTANCE_SCALE, cosine_distance_fixed
from soma_ray.protocol.submissions import LOSS_SCALE as LOSS_SCALE_CLI
from soma_ray.wire import MAX_PAGE, SUBMISSION_STATUSES, TargetView

app = typer.Typer()  # `soma score`, the `submit` and `data` groups
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


ScoringUrl = ScoringUrlOption


@app.command("score")
def score(file: FileArgument, target: TargetOption = None, scoring_url: ScoringUrl = None,
          rpc_url: RpcOption = None) -> None:
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

    run_play(rpc_url, action, scoring_url)


class SubmitGroup(TyperGroup):
    """`soma submit FILE` (today's form: the `file` command) beside the plan's `soma submit
    commit|reveal|list|info|claim-bond`: anything that is not a subcommand's name goes to `file`."""

    def resolve_command(self, ctx, args):
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return DEFAULT_SUBMIT, self.commands[DEFAULT_SUBMIT], args


DEFAULT_SUBMIT = "file"
submit_app = typer.Typer(
    name="submit", cls=SubmitGroup, no_args_is_help=True,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    help="Submit data: `soma submit FILE` scores, uploads and submits in one go; commit, reveal, "
         "list, info and claim-bond are the steps and the records.")
app.add_typer(submit_app)


@submit_app.command(DEFAULT_SUBMIT)
def submit(file: Annotated[Optional[Path], typer.Argument(help="The data file.", show_default=False)] = None,
           target: TargetOption = None,
           corpus: Annotated[Optional[str], typer.Option(
               "--corpus", help="Instead of a file: the first hit among a corpus source's items (a "
               "directory, a .jsonl or .parquet file, or hf:DATASET; soma_ray/sources.py).")] = None,
           tries: Annotated[int, typer.Option("--tries", min=1, help="Items of --corpus scored at most.")] = 20,
           scoring_url: ScoringUrl = None, wallet: WalletOption = None,
           key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Score, check, upload and submit a file (or the first hit of --corpus) to a target
    (default: the best open one).

    Refused before anything is uploaded or sent unless the file is a hit and you can pay its
    bond; the submission is a commit, then a reveal once the commit is final."""
    if (file is None) == (corpus is None):
        raise fail("give a data file or --corpus (not both)")
    miner = load_key(wallet, key)

    async def action(client):
        if file is not None:
            data, parameters = await read_file_for(client, file)
            scored = await chosen_target(client, data, target)
        else:
            data, parameters, scored = await first_hit(client, corpus, target, tries)
        refusal = submit_refusal(scored, parameters, await client.balance_shannons(miner.address), len(data))
        if refusal is not None:
            raise refusal
        url = await client.upload(data, signer=miner)
        submission = await client.submit_data(miner, scored.target.id, data, url, scored.model_id,
                                              scored.embedding, scored.distance / DISTANCE_SCALE, scored.loss)
        now = await client.get_target(scored.target.id)  # the index has seen the reveal
        typer.echo(f"submission {show_address(submission)} to target {show_address(now.id)} ({now.status})")
        typer.echo(f"bond {show_amount(required_bond(parameters, len(data)))}, model "
                   f"{show_address(scored.model_id)}, distance {show_distance(scored.distance)} "
                   f"<= {show_distance(scored.target.threshold_fixed)}, loss {scored.loss:.6f}")

    run_play(rpc_url, action, scoring_url)


async def first_hit(client, source: str, target: str | None, tries: int) -> tuple[bytes, Parameters, Scored]:
    """The first item of a corpus source (within `tries`) that hits a target (the one given, or
    the best open one)."""
    from soma_ray.sources import SourceError, iter_items

    parameters = (await client.get_system_state()).parameters
    nearest = None
    try:
        items = iter_items(source, max_bytes=parameters.max_submission_bytes)
        for _, data in zip(range(tries), items):
            try:
                scored = await (score_target(client, data, target, open_only=True) if target is not None
                                else _best(client, data))
            except NoHit as miss:
                scored = miss.nearest
            if scored.hit:
                return data, parameters, scored
            nearest = scored if nearest is None or scored.distance < nearest.distance else nearest
    except SourceError as error:
        raise BadArgument(str(error)) from None
    if nearest is None:
        raise BadArgument(f"corpus {source}: no item to score")
    raise fail(f"none of the first {tries} items of {source} hits; the nearest: {in_words(distance_error(nearest))}")


class NoHit(Exception):
    def __init__(self, nearest: Scored):
        self.nearest = nearest


async def _best(client, data: bytes) -> Scored:
    ranked, _ = await score_best(client, data)
    if not ranked[0].hit:
        raise NoHit(ranked[0])
    return ranked[0]


# ---------------------------------------------------------------------------------- the steps

SubmissionOption = Annotated[Optional[str], typer.Option("--submission", help="The submission's id.")]
DataOption = Annotated[Path, typer.Option("--data", help="The data file.")]
ModelIdOption = Annotated[Optional[str], typer.Option(
    "--model", help="The model the submission names (default: the target's winner on the data).")]


@submit_app.command("commit")
def submit_commit(target: Annotated[str, typer.Option("--target", help="The open target's id.")],
                  data: DataOption, model: ModelIdOption = None, scoring_url: ScoringUrl = None,
                  wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Score the data for the target, check it is a hit you can pay the bond of, and commit to it
    (hash commit-reveal); prints the submission's id and the nonce the reveal needs (kept in
    $SOMA_HOME/submissions too). Reveal with `soma submit reveal` before the reveal window ends."""
    from soma_ray.protocol.encoding import blake2b256
    from soma_ray.protocol.submissions import LOSS_SCALE
    from soma_ray.submission_store import SubmissionSecret, save_submission

    miner = load_key(wallet, key)

    async def action(client):
        payload, parameters = await read_file_for(client, data)
        scored = await score_target(client, payload, target, open_only=True)
        if model is not None and parse_id(model, "model id") != scored.model_id:
            raise BadArgument(f"model {model} is not the target's winner on this data (model "
                              f"{show_address(scored.model_id)} is): a submission naming it would be challenged")
        refusal = submit_refusal(scored, parameters, await client.balance_shannons(miner.address), len(payload))
        if refusal is not None:
            raise refusal
        data_hash, loss = blake2b256(payload), int(round(scored.loss * LOSS_SCALE))
        submission_id, nonce = await client.commit_submission(
            miner, scored.target.id, data_hash, len(payload), scored.model_id, scored.embedding, loss)
        path = save_submission(SubmissionSecret(submission_id, scored.target.id, scored.model_id, data_hash,
                                                len(payload), scored.embedding, loss, nonce))
        typer.echo(f"submission {show_address(submission_id)} committed to target {show_address(scored.target.id)}")
        typer.echo(f"nonce {show_address(nonce)} (kept in {path})")
        typer.echo(f"reveal: soma submit reveal --submission {show_address(submission_id)} --data {data}")

    run_play(rpc_url, action, scoring_url)


@submit_app.command("reveal")
def submit_reveal(data: DataOption, submission: SubmissionOption = None,
                  target: Annotated[Optional[str], typer.Option("--target", help="The target committed to.")] = None,
                  model: ModelIdOption = None,
                  nonce: Annotated[Optional[str], typer.Option(
                      "--nonce", help="The commit's nonce (default: the one `submit commit` kept).")] = None,
                  scoring_url: ScoringUrl = None, wallet: WalletOption = None, key: KeyOption = None,
                  rpc_url: RpcOption = None) -> None:
    """Upload the data and reveal the commit (`--submission ID`, or `--target ID`: your commit on
    it); the target is then filled, and challengeable until the epoch after next."""
    from soma_ray.protocol.encoding import blake2b256
    from soma_ray.protocol.submissions import LOSS_SCALE
    from soma_ray.submission_store import SubmissionSecret, SubmissionStoreError, load_submission

    if submission is None and target is None:
        raise fail("give --submission ID or --target ID")
    miner = load_key(wallet, key)

    async def action(client):
        payload, _ = await read_file_for(client, data)
        if submission is not None:
            ident = parse_id(submission, "submission id")
        else:
            found = await client.get_target(parse_id(target, "target id"))
            if found.submission_id is None or found.submitter != miner.address:
                raise BadArgument(f"target {target} holds no commit of yours")
            ident = found.submission_id
        try:
            secret = load_submission(ident)
        except SubmissionStoreError:
            if nonce is None:
                raise
            record = await client.get_submission(ident)
            scored = await score_target(client, payload, show_address(record.target_id))
            secret = SubmissionSecret(ident, record.target_id, parse_id(model, "model id") if model else scored.model_id,
                                      blake2b256(payload), len(payload), scored.embedding,
                                      int(round(scored.loss * LOSS_SCALE)), parse_id(nonce, "nonce"))
        if blake2b256(payload) != secret.data_hash or len(payload) != secret.data_size:
            raise BadArgument(f"{data} is not the data committed to (hash or size differ)")
        url = await client.upload(payload, signer=miner)
        await client.reveal_submission(miner, ident, secret.data_hash, secret.data_size, url, secret.model_id,
                                       secret.embedding, secret.loss_score, secret.nonce)
        now = await client.get_target(secret.target_id)
        typer.echo(f"submission {show_address(ident)} revealed: target {show_address(now.id)} is {now.status}, "
                   f"data at {url}")

    run_play(rpc_url, action, scoring_url)


def submission_row(s) -> list[str]:
    return [show_address(s.id), show_address(s.target_id), s.status, show_address(s.miner),
            show_amount(s.bond), str(s.commit_epoch), "-" if s.model_id is None else show_address(s.model_id)]


def submission_lines(s) -> list[str]:
    return [f"submission   {show_address(s.id)}", f"target       {show_address(s.target_id)}",
            f"status       {s.status}", f"miner        {show_address(s.miner)}",
            f"bond         {show_amount(s.bond)}", f"commit epoch {s.commit_epoch}",
            f"model        {'-' if s.model_id is None else show_address(s.model_id)}",
            f"data         {'-' if s.data_url is None else f'{s.data_url} ({s.data_size} bytes)'}",
            f"loss         {'-' if s.loss_score is None else f'{s.loss_score / LOSS_SCALE_CLI:.6f}'}",
            f"distance     {'-' if s.distance is None else show_distance(s.distance)}",
            f"closed epoch {'-' if s.closed_epoch is None else s.closed_epoch}"]


@submit_app.command("list")
def submit_list(miner: Annotated[Optional[str], typer.Option("--miner", help="Only this miner's.")] = None,
                mine: Annotated[bool, typer.Option("--mine", help="Only your key's.")] = False,
                target: Annotated[Optional[str], typer.Option("--target", help="Only on this target.")] = None,
                status: Annotated[Optional[str], typer.Option(
                    "--status", help=f"One of {', '.join(SUBMISSION_STATUSES)}.")] = None,
                limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
                wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Submissions (the closed ones too: claimed, slashed, dropped), in the order they were made."""
    who = load_key(wallet, key).address if mine else None

    async def action(client):
        if status is not None and status not in SUBMISSION_STATUSES:
            raise BadArgument(f"status {status!r}: one of {', '.join(SUBMISSION_STATUSES)}")
        found = await client.get_submissions(who or (None if miner is None else parse_id(miner, "address")),
                                             None if target is None else parse_id(target, "target id"),
                                             status, limit)
        print_table(f"{len(found)} submissions", ["submission", "target", "status", "miner", "bond",
                                                  "epoch", "model"], [submission_row(s) for s in found])

    run_play(rpc_url, action)


@submit_app.command("info")
def submit_info(submission: Annotated[str, typer.Argument(help="The submission's id.")],
                rpc_url: RpcOption = None) -> None:
    """One submission: its target, status, bond, model, data and scores."""
    async def action(client):
        typer.echo("\n".join(submission_lines(await client.get_submission(parse_id(submission, "submission id")))))

    run_play(rpc_url, action)


@submit_app.command("claim-bond")
def claim_bond(submission: Annotated[str, typer.Option("--submission", help="The submission's id.")],
               wallet: WalletOption = None, key: KeyOption = None, rpc_url: RpcOption = None) -> None:
    """Get a submission's bond back: claim its target (the bond returns to the miner with the
    reward, once the audit window has closed: two epochs after the fill)."""
    from soma_ray.cli.target import claim_refusal, claim_report

    claimer = load_key(wallet, key)

    async def action(client):
        record = await client.get_submission(parse_id(submission, "submission id"))
        if record.status in ("claimed", "slashed", "dropped"):
            raise BadArgument(f"submission {submission} is {record.status}: its bond is "
                              + ("back" if record.status == "claimed" else "gone" if record.status == "slashed"
                                 else "back or slashed with the commit"))
        found = await client.get_target(record.target_id)
        refusal = claim_refusal(found, (await client.get_epoch()).epoch)
        if refusal is not None:
            raise refusal
        parameters = (await client.get_system_state()).parameters
        await client.claim_rewards(claimer, found.id)
        typer.echo(f"bond {show_amount(record.bond)} back to {show_address(record.miner)}; "
                   f"{claim_report(found, parameters)}")

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
