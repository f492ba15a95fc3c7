"""`soma board`: read the board before choosing where to compete — the regions of the embedding
space (each model and the targets nearest to it), their hit rates and niches, the targets no
model reaches, and the leaderboard; `--plot` draws the 2-D map. With `--held-out`, the network's
held-out loss from the active models' weights (soma_ray/heldout.py), kept per epoch in a history
file, and the learning curve beside the map. Over the gateway (HTTP) only; the numbers come from
`soma_ray.board` (docs/board.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from soma_ray.board import (Board, build_board, held_out_point, learning_curve, merge_point, miner_standings,
                            model_standings)
from soma_ray.cli.common import BadArgument, RpcOption, fail, print_table, run_participant, show_amount
from soma_ray.client import SomaClient
from soma_ray.wire import MAX_PAGE, STATUSES
from soma_ray.protocol.crypto import show_address

PLOT_INCHES, PLOT_DPI = (8.0, 6.0), 100  # an 800 x 600 PNG
CURVE_INCHES = (14.0, 6.0)  # with --held-out: the map and the learning curve, 1400 x 600
LABEL_HEX = 8  # a model's label on the map: 0x and its first 8 hex digits

app = typer.Typer()


async def read_board(client: SomaClient, max_targets: int, limit: int):
    """Active models, up to `max_targets` targets of each status, and `limit` leaderboard rows.
    Statuses are read in their life order, so a target that moves on between two reads is
    kept in its later one."""
    models = await client.get_active_models()
    targets = {}
    for status in STATUSES:
        for target in await client.get_targets(status, limit=max_targets):
            targets[target.id] = target
    return models, list(targets.values()), await client.get_leaderboard(limit)


@app.command("board")
def board(
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the map into this PNG.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_PAGE,
                                       help="Rows of the leaderboard and of the far targets.")] = 10,
    max_targets: Annotated[int, typer.Option("--max-targets", min=1,
                                             help="Most targets read of each status.")] = 5_000,
    held_out: Annotated[bool, typer.Option(
        "--held-out", help="Also measure the network's held-out loss: downloads every active model's "
        "weights and scores the held-out corpus here (torch).")] = False,
    history: Annotated[Optional[Path], typer.Option(
        "--history", help="With --held-out: the learning curve's file, one point per epoch "
        "[default: $SOMA_HOME/board/held-out-<chain id>.json].", show_default=False)] = None,
    rpc_url: RpcOption = None,
) -> None:
    """The board: regions (model, targets, hits, hit rate, niche), far targets, the leaderboard;
    with --held-out the network's held-out loss and its learning curve."""
    async def action(client: SomaClient):
        models, targets, leaderboard = await read_board(client, max_targets, limit)
        measured = None
        if held_out:
            from soma_ray.heldout import HeldOut

            try:
                loss = await HeldOut().measure(client)
            except ValueError as error:  # no active model whose weights could be read
                raise BadArgument(f"--held-out: {error}") from None
            measured = ((await client.get_epoch()).epoch, loss, (await client.chain_id()).hex()[:16])
        return build_board(models, targets), models, leaderboard, measured

    found, models, leaderboard, measured = run_participant(rpc_url, action)
    print_regions(found)
    if found.far_targets:
        print_far_targets(found, limit)
    print_table("leaderboard: models", ("rank", "model", "wins", "earnings", "stake"), (
        (s.rank, show_address(s.model_id), s.wins, show_amount(s.earnings),
         "inactive" if s.stake is None else show_amount(s.stake))
        for s in model_standings(leaderboard, models)))
    print_table("leaderboard: miners", ("rank", "miner", "hits", "rewards"), (
        (s.rank, show_address(s.address), s.hits, show_amount(s.rewards)) for s in miner_standings(leaderboard)))
    curve = None
    if measured is not None:
        epoch, loss, chain = measured
        print_held_out(loss)
        curve = keep_point(history or default_history(chain), held_out_point(epoch, loss))
    if plot is not None:
        try:
            draw_map(found, plot, curve)
        except OSError as error:
            raise fail(f"cannot write {plot}: {error}") from None
        typer.echo(f"map written to {plot}" + ("" if curve is None else " with the learning curve"))


def default_history(chain: str) -> Path:
    from soma_ray.cluster import soma_home

    return soma_home() / "board" / f"held-out-{chain}.json"


def keep_point(path: Path, point: dict) -> list[dict]:
    """The history in `path` with `point` merged in, written back (atomically); a file that
    cannot be read starts a new history, one that cannot be written is one error line."""
    from soma_ray.files import write_atomic

    try:
        history = json.loads(path.read_text())
        history = history if isinstance(history, list) else []
    except (OSError, ValueError):
        history = []
    history = merge_point(history, point)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(history, indent=1) + "\n").encode())
    except OSError as error:
        raise fail(f"cannot write {path}: {error}") from None
    typer.echo(f"held-out history: {path} ({len(history)} epochs)")
    return history


def print_held_out(loss) -> None:
    print_table(f"held-out loss (bits per byte, {loss.items} items): network {loss.best_bpb:.3f} "
                f"(best model per item), {loss.routed_bpb:.3f} (routed by embedding)",
                ("model", "stake", "bpb", "best on", "routed"), (
        (show_address(m.model_id), show_amount(m.stake), f"{m.bpb:.3f}", m.best_items, m.routed_items)
        for m in loss.models))


def print_regions(found: Board) -> None:
    print_table(f"regions ({len(found.targets)} targets, {len(found.models)} models)",
                ("model", "stake", "commission", "targets", "open", "hits", "hit rate", "far", "niche"), (
        (show_address(r.model_id), show_amount(r.stake), f"{r.commission_bps / 100:g}%", r.targets, r.open,
         r.hits, "-" if r.hit_rate is None else f"{r.hit_rate:.0%}", r.far, ", ".join(r.niche) or "-")
        for r in found.regions))


def print_far_targets(found: Board, limit: int) -> None:
    print_table("open targets no model reaches", ("target", "nearest model", "distance", "threshold"), (
        (show_address(t.target_id), "-" if t.region is None else show_address(t.region),
         "-" if t.distance is None else f"{t.distance:.4f}", f"{t.threshold:.4f}")
        for t in found.far_targets[:limit]))


def draw_map(found: Board, path: Path, curve: list[dict] | None = None) -> None:
    """The map as a PNG: models as labelled diamonds, targets as dots in their region's colour
    (open ones filled, others faint; ringed red when no model reaches them), hits as stars. With
    a learning curve (held-out history points), the curve beside it."""
    from matplotlib.figure import Figure  # here only: no other command pays for matplotlib

    figure = Figure(figsize=PLOT_INCHES if curve is None else CURVE_INCHES, dpi=PLOT_DPI)
    axes = figure.add_subplot(1, 1 if curve is None else 2, 1)
    if curve is not None:
        draw_curve(figure.add_subplot(1, 2, 2), curve)
    colour = {m.model_id: f"C{i % 10}" for i, m in enumerate(found.models)}
    groups = (
        ("open target", lambda t: t.status == "open", dict(marker="o", s=18, alpha=0.9)),
        ("other target", lambda t: t.status != "open" and not t.hit, dict(marker="o", s=10, alpha=0.25)),
        ("hit", lambda t: t.hit, dict(marker="*", s=90, alpha=0.95)),
    )
    for label, chosen, style in groups:
        points = [t for t in found.targets if chosen(t)]
        if points:
            axes.scatter([t.x for t in points], [t.y for t in points], label=label,
                         c=[colour.get(t.region, "grey") for t in points],
                         edgecolors="red", linewidths=[1.5 if t.far else 0.0 for t in points], **style)
    for m in found.models:
        axes.scatter([m.x], [m.y], marker="D", s=80, c=colour[m.model_id], edgecolors="black", zorder=3)
        axes.annotate(show_address(m.model_id)[:2 + LABEL_HEX], (m.x, m.y), xytext=(5, 5),
                      textcoords="offset points", fontsize=8)
    axes.set_title(f"the board: models {len(found.models)}, targets {len(found.targets)}, "
                   f"hits {sum(t.hit for t in found.targets)}")
    axes.set_xlabel("first principal component")
    axes.set_ylabel("second principal component")
    if found.targets:
        axes.legend(loc="best", fontsize=8)
    figure.savefig(path, format="png", dpi=PLOT_DPI)


def draw_curve(axes, history: list[dict]) -> None:
    """The network's held-out loss by epoch: both definitions."""
    epochs, best, routed = learning_curve(history)
    axes.plot(epochs, best, marker="o", label="network: best model per item")
    axes.plot(epochs, routed, marker="s", label="network: routed by embedding")
    axes.set_title("the network's held-out loss")
    axes.set_xlabel("epoch")
    axes.set_ylabel("bits per byte")
    axes.legend(loc="best", fontsize=8)
