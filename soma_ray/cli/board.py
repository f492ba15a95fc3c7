"""`soma board`: read the board before choosing where to compete — the regions of the embedding
space (each model and the targets nearest to it), their hit rates and niches, the targets no
model reaches, and the leaderboard; `--plot` draws the 2-D map. Over the gateway (HTTP) only;
the numbers come from `soma_ray.board` (docs/board.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from soma_ray.board import Board, build_board, miner_standings, model_standings
from soma_ray.cli.common import RpcOption, fail, print_table, run_participant, show_amount
from soma_ray.client import SomaClient
from soma_ray.wire import MAX_PAGE, STATUSES
from soma_ray.protocol.crypto import show_address

PLOT_INCHES, PLOT_DPI = (8.0, 6.0), 100  # an 800 x 600 PNG
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
    rpc_url: RpcOption = None,
) -> None:
    """The board: regions (model, targets, hits, hit rate, niche), far targets, the leaderboard."""
    async def action(client: SomaClient):
        models, targets, leaderboard = await read_board(client, max_targets, limit)
        return build_board(models, targets), models, leaderboard

    found, models, leaderboard = run_participant(rpc_url, action)
    print_regions(found)
    if found.far_targets:
        print_far_targets(found, limit)
    print_table("leaderboard: models", ("rank", "model", "wins", "earnings", "stake"), (
        (s.rank, show_address(s.model_id), s.wins, show_amount(s.earnings),
         "inactive" if s.stake is None else show_amount(s.stake))
        for s in model_standings(leaderboard, models)))
    print_table("leaderboard: miners", ("rank", "miner", "hits", "rewards"), (
        (s.rank, show_address(s.address), s.hits, show_amount(s.rewards)) for s in miner_standings(leaderboard)))
    if plot is not None:
        try:
            draw_map(found, plot)
        except OSError as error:
            raise fail(f"cannot write {plot}: {error}") from None
        typer.echo(f"map written to {plot}")


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


def draw_map(found: Board, path: Path) -> None:
    """The map as a PNG: models as labelled diamonds, targets as dots in their region's colour
    (open ones filled, others faint; ringed red when no model reaches them), hits as stars."""
    from matplotlib.figure import Figure  # here only: no other command pays for matplotlib

    figure = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    axes = figure.add_subplot()
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
