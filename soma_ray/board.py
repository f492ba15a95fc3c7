"""The board: where models sit in the embedding space, where targets are drawn and hit, and where
few models compete (pure: numpy only, no Ray, no I/O). `soma board` reads it over HTTP and
prints or plots it; docs/board.md.

    board = build_board(client_models, client_targets)   # ModelView / TargetView of the SDK
    board.regions, board.far_targets, board.models[0].x

- **Map**: PCA of the models' and targets' unit embeddings (cosine geometry), by SVD of the
  centred rows, onto the first two components; each component's sign is fixed so that its
  largest loading is positive (the map does not flip between runs or with the rows' order).
- **Regions**: every target belongs to its nearest model by cosine distance (ties: the lower
  model id); a region is one model and the targets nearest to it.
- **Hits**: targets with a standing revealed submission (statuses filled, claimable, settled
  with a winning model); a region's hit rate is its hits over its targets.
- **Niches**: a region with at least NICHE_LOAD times the mean targets per region (many targets
  for one model), or with open targets farther from every model than their distance threshold
  (no model's embedding reaches them: the *far* targets).
- **Standings**: the leaderboard with ranks (ties share one) and each model's stake.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from soma_ray.protocol.errors import MalformedInput
from soma_ray.protocol.targets import as_embedding

HIT_STATUSES = ("filled", "claimable", "settled")
NICHE_LOAD = 1.5  # a region with this many times the mean targets per region is a niche


@dataclass(frozen=True)
class PlacedModel:
    model_id: bytes
    stake: int
    commission_bps: int
    x: float
    y: float


@dataclass(frozen=True)
class PlacedTarget:
    target_id: bytes
    status: str
    x: float
    y: float
    region: bytes | None  # the nearest model's id (None: no model on the board)
    distance: float | None  # cosine distance to that model
    threshold: float  # the target's distance threshold (cosine distance)
    hit: bool
    far: bool  # open, and farther from every model than its distance threshold


@dataclass(frozen=True)
class Region:
    model_id: bytes
    stake: int
    commission_bps: int
    targets: int
    open: int
    hits: int
    far: int  # open targets of this region that no model reaches
    niche: tuple[str, ...]  # why it is one: "many targets", "far targets"; () if not

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.targets if self.targets else None


@dataclass(frozen=True)
class Board:
    models: list[PlacedModel]  # by id
    targets: list[PlacedTarget]  # in the order given
    regions: list[Region]  # by model id, one per model

    @property
    def far_targets(self) -> list[PlacedTarget]:
        """The open targets no model reaches, farthest first."""
        unreachable = 2.0  # the largest cosine distance: no model on the board at all
        return sorted((t for t in self.targets if t.far),
                      key=lambda t: (-(unreachable if t.distance is None else t.distance), t.target_id))


@dataclass(frozen=True)
class ModelStanding:
    rank: int
    model_id: bytes
    wins: int
    earnings: int
    stake: int | None  # None: not an active model now


@dataclass(frozen=True)
class MinerStanding:
    rank: int
    address: bytes
    hits: int
    rewards: int


def build_board(models: Sequence, targets: Sequence) -> Board:
    """The board of `models` (ModelView-like: model_id, embedding, stake, commission_bps) and
    `targets` (TargetView-like: id, status, embedding, distance_threshold, winning_model_id).
    Embeddings must share one dimension and be finite (typed errors of as_embedding)."""
    models = sorted(models, key=lambda m: bytes(m.model_id))
    if len({bytes(m.model_id) for m in models}) < len(models):
        raise MalformedInput(reason="a model appears twice on the board")
    embeddings = [m.embedding for m in models] + [t.embedding for t in targets]
    if any(e is None for e in embeddings):
        raise MalformedInput(reason="a model on the board has no embedding")
    rows = _embedding_rows(embeddings)
    xy = project_2d(rows)
    unit_models, unit_targets = rows[:len(models)], rows[len(models):]
    nearest, distance = nearest_rows(unit_targets, unit_models)
    placed_models = [PlacedModel(bytes(m.model_id), m.stake, m.commission_bps, *map(float, xy[i]))
                     for i, m in enumerate(models)]
    placed_targets = []
    for j, t in enumerate(targets):
        found = nearest[j] >= 0
        d = float(distance[j]) if found else None
        unreached = d is None or d > t.distance_threshold
        placed_targets.append(PlacedTarget(
            bytes(t.id), t.status, *map(float, xy[len(models) + j]),
            region=placed_models[nearest[j]].model_id if found else None, distance=d,
            threshold=t.distance_threshold, hit=is_hit(t), far=t.status == "open" and unreached))
    return Board(placed_models, placed_targets, regions(placed_models, placed_targets))


def is_hit(target) -> bool:
    """A standing revealed submission fills it (the leaderboard's hit)."""
    return target.status in HIT_STATUSES and target.winning_model_id is not None


def _embedding_rows(embeddings: Sequence) -> np.ndarray:
    """Unit rows (float64) of embeddings of one dimension, the first one's."""
    dim = len(as_embedding(embeddings[0])) if embeddings else 0
    return unit_rows(np.array([as_embedding(e, dim) for e in embeddings], dtype=np.float64).reshape(-1, dim))


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero (cosine distance 1 to everything)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0.0, 1.0, norms)


def project_2d(rows: np.ndarray) -> np.ndarray:
    """Each row's coordinates on the first two principal components (zeros where the data has
    fewer), signs fixed so that each component's largest loading is positive."""
    xy = np.zeros((len(rows), 2))
    if len(rows) < 2:
        return xy
    centred = rows - rows.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    for k in range(min(2, len(singular))):
        if singular[k] <= 1e-12 * max(singular[0], 1.0):
            break  # no spread along this component: its direction is arbitrary
        axis = components[k]
        axis = -axis if axis[np.argmax(np.abs(axis))] < 0 else axis
        xy[:, k] = centred @ axis
    return xy


def nearest_rows(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows: the index of each query's nearest reference by cosine distance (the lower
    index on ties; -1 with no references) and that distance."""
    if not len(references) or not len(queries):
        return np.full(len(queries), -1), np.full(len(queries), np.nan)
    distances = 1.0 - queries @ references.T
    nearest = np.argmin(distances, axis=1)
    return nearest, distances[np.arange(len(queries)), nearest]


def regions(models: Sequence[PlacedModel], targets: Sequence[PlacedTarget]) -> list[Region]:
    """One region per model: its targets, open ones, hits, far ones, and why it is a niche."""
    members: dict[bytes, list[PlacedTarget]] = {m.model_id: [] for m in models}
    for target in targets:
        if target.region is not None:
            members[target.region].append(target)
    mean = sum(map(len, members.values())) / len(models) if models else 0.0
    found = []
    for model in models:
        mine = members[model.model_id]
        far = sum(t.far for t in mine)
        niche = (("many targets",) if mine and len(mine) >= NICHE_LOAD * mean else ()) + \
            (("far targets",) if far else ())
        found.append(Region(model.model_id, model.stake, model.commission_bps, len(mine),
                            sum(t.status == "open" for t in mine), sum(t.hit for t in mine), far, niche))
    return found


def ranks(keys: Sequence) -> list[int]:
    """Competition ranks of rows already sorted best first: equal keys share a rank (1, 2, 2, 4)."""
    found = []
    for i, key in enumerate(keys):
        found.append(found[-1] if i and key == keys[i - 1] else i + 1)
    return found


def model_standings(leaderboard, models: Sequence) -> list[ModelStanding]:
    """The leaderboard's models (by wins, then earnings) with ranks and their stake if active."""
    stakes = {bytes(m.model_id): m.stake for m in models}
    rows = leaderboard.models
    return [ModelStanding(rank, bytes(s.model_id), s.wins, s.earnings, stakes.get(bytes(s.model_id)))
            for rank, s in zip(ranks([(s.wins, s.earnings) for s in rows]), rows)]


def miner_standings(leaderboard) -> list[MinerStanding]:
    """The leaderboard's miners (by hits, then rewards) with ranks."""
    rows = leaderboard.miners
    return [MinerStanding(rank, bytes(s.address), s.hits, s.rewards)
            for rank, s in zip(ranks([(s.hits, s.rewards) for s in rows]), rows)]


# -- the network's learning curve (soma board --held-out) --------------------------------------------
#
# `soma board --held-out` measures the network's held-out loss from the active models' weights
# (soma_ray/heldout.py, over the gateway like any participant) and keeps one point per epoch in a
# history file, so that the plot can draw the curve over the epochs the board has seen.


def held_out_point(epoch: int, loss) -> dict:
    """A history point of a `soma_ray.heldout.NetworkLoss` measured in `epoch`."""
    return {"epoch": epoch, "network_loss_bpb": loss.best_bpb, "network_routed_bpb": loss.routed_bpb,
            "models": {"0x" + m.model_id.hex(): m.bpb for m in loss.models}}


def merge_point(history: Sequence[dict], point: dict) -> list[dict]:
    """`history` with `point` in its epoch's place (a later measurement of an epoch replaces the
    earlier one), by epoch."""
    kept = {entry["epoch"]: entry for entry in history if isinstance(entry, dict) and "epoch" in entry}
    kept[point["epoch"]] = point
    return [kept[epoch] for epoch in sorted(kept)]


def learning_curve(history: Sequence[dict]) -> tuple[list[int], list[float], list[float]]:
    """(epochs, best, routed) of a history (or of `soma simulate --report`'s entries)."""
    points = sorted(history, key=lambda entry: entry["epoch"])
    return ([p["epoch"] for p in points], [p["network_loss_bpb"] for p in points],
            [p["network_routed_bpb"] for p in points])
