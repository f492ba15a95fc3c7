"""The scripted participants' decisions, pure: which targets to mine, whether a scored item is a
hit and where, which filled targets a challenger checks, what it challenges, the crowd's mix.

Distances are the chain's own (`cosine_distance_fixed`, fixed point), so a hit decided here is a
hit the chain accepts: a reveal never fails `DistanceExceedsThreshold` on a rounding difference.
"""
from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Sequence

import numpy as np

from soma_ray.wire import TargetView
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.targets import (
    DISTANCE_SCALE, accepts_commit, challenge_allowed, cosine_distance_fixed,
)
from soma_ray.node.audit import TOLERANCE_SCALE, within_tolerance
from soma_ray.protocol.types import ChallengeKind

# What a fraudulent miner injects (spec §5 and issue 20 decide the verdict of each):
#   fake-score:     real data, but a claimed embedding (the target's own) and loss nobody computed
#   wrong-hash:     the bytes uploaded are not the bytes whose hash and size are revealed
#   withheld:       the data URL names a blob that was never uploaded (the data is unavailable)
#   shave:          true scores, but the claimed embedding nudged towards the target so that the
#                   chain's distance is within the threshold while the true one is outside it
#                   by `margin` × audit_tolerance (within 1×: not fraud, by definition)
#   wrong-winner:   true scores of a model other than the lowest-loss one
#   broken-weights: an owner–miner pair: the miner claims the pair's model (claims nobody can
#                   check without it) and the owner makes its weights unloadable after the fill
FRAUD_KINDS = ("fake-score", "wrong-hash", "withheld", "shave", "wrong-winner", "broken-weights")
# The challenge that catches each kind.
FRAUD_CHALLENGE: dict[str, ChallengeKind] = {
    "fake-score": "ScoreFraud", "wrong-hash": "DataFraud", "withheld": "DataFraud", "shave": "ScoreFraud",
    "wrong-winner": "ScoreFraud", "broken-weights": "ScoreFraud"}
# What fraudulent miners play, in turn: (kind, margin in audit tolerances for a shave). Miner i
# starts at plan PLAN_STRIDE × i, so a few miners over a few epochs play every plan.
FRAUD_PLANS: tuple[tuple[str, float | None], ...] = (
    ("fake-score", None), ("wrong-hash", None), ("withheld", None), ("shave", 0.5),
    ("shave", 2.0), ("wrong-winner", None), ("broken-weights", None), ("shave", 10.0), ("shave", 5.0))
PLAN_STRIDE = 4
# The margins shaves aim at (a shave whose band has no item tries the nearest other).
SHAVE_MARGINS = tuple(sorted({m for kind, m in FRAUD_PLANS if kind == "shave"}))


def fraud_plans(miner_index: int, count: int) -> list[tuple[str, float | None]]:
    """The plans fraudulent miner `miner_index` tries for its `count`-th fraud (0-based): its
    scheduled one first, then the others in turn (a plan it cannot play now is skipped)."""
    start = miner_index * PLAN_STRIDE + count
    return [FRAUD_PLANS[(start + k) % len(FRAUD_PLANS)] for k in range(len(FRAUD_PLANS))]


def fraud_label(kind: str, margin: float | None, is_fraud: bool) -> str:
    """The row of the detection report a fraud counts in: its kind, and for a shave the band of
    its true margin (in audit tolerances); a shave or a wrong winner within the tolerance is not
    fraud by definition."""
    if not is_fraud:
        return f"{kind} within tolerance (not fraud)"
    if kind != "shave" or margin is None:
        return kind
    for upper in (2, 5, 10):
        if margin <= upper:
            return f"shave ≤{upper}x"
    return "shave >10x"


class Hit(NamedTuple):
    target: TargetView
    distance: int  # fixed point (1e-9), the chain's

    @property
    def distance_score(self) -> float:
        return self.distance / DISTANCE_SCALE


class Mix(NamedTuple):
    honest: int
    lazy: int
    fraudulent: int


def minable(targets: Sequence[TargetView], epoch: int) -> list[TargetView]:
    """Targets a miner may commit to now: open in this epoch, nobody's commit on them, models
    to score with."""
    return [t for t in targets if t.status == "open" and accepts_commit(t.generation_epoch, epoch)
            and t.submission_id is None and t.model_ids]


def largest_model_group(targets: Sequence[TargetView]) -> list[TargetView]:
    """The targets that share the most common model set (one score of an item under that set
    gives its distance to each of them), in the given order; ties: the set met first."""
    return next(iter(model_groups(targets)), [])


def model_groups(targets: Sequence[TargetView]) -> list[list[TargetView]]:
    """The targets grouped by model set, largest group first (ties: the set met first), each in
    the given order."""
    groups: dict[frozenset, list[TargetView]] = defaultdict(list)
    for target in targets:
        groups[frozenset(target.model_ids)].append(target)
    return sorted(groups.values(), key=len, reverse=True)


def hits_within(embedding: bytes, targets: Sequence[TargetView]) -> list[Hit]:
    """The targets whose threshold `embedding` is within, nearest first (ties by id)."""
    hits = [Hit(t, cosine_distance_fixed(embedding, t.embedding)) for t in targets]
    return sorted((h for h in hits if h.distance <= h.target.threshold_fixed),
                  key=lambda h: (h.distance, h.target.id))


def assigned_to(target_id: bytes, index: int, count: int) -> bool:
    """Whether challenger `index` of `count` checks this target: each filled target is checked
    by exactly one of them, so none is scored twice."""
    return int.from_bytes(blake2b256(bytes(target_id))[:8], "little") % count == index


def challengeable(target: TargetView, epoch: int) -> bool:
    """A filled target whose challenge window is still open (§2, `challenge_allowed`)."""
    return (target.status == "filled" and target.fill_epoch is not None
            and challenge_allowed(target.fill_epoch, epoch))


def challenge_to_open(fraud: ChallengeKind | None, checked: int, false_alarm_every: int) -> ChallengeKind | None:
    """The challenge a challenger opens after checking its `checked`-th target (1-based), given
    the fraud its re-scoring found (`verify`'s finding: None when the claims hold): that fraud's
    kind; for a target whose claims hold, a (losing) ScoreFraud challenge every
    `false_alarm_every`-th time (0: never), so that the miner-wins path is exercised too."""
    if fraud is not None:
        return fraud
    if false_alarm_every and checked % false_alarm_every == 0:
        return "ScoreFraud"
    return None


# The share of a crowd's miners that are lazy (the crowd `soma start localnet` and `soma simulate` run).
LAZY_RATE = 0.2
# Each participant's faucet grant: bonds on the localnet are a few hundred thousand shannons.
FUND_AMOUNT = 100 * SHANNONS_PER_SOMA


def crowd_mix(miners: int, fraud_rate: float, lazy_rate: float) -> Mix:
    """How many of `miners` cheat (round(miners × fraud_rate)) and how many are lazy (of the
    rest, round(miners × lazy_rate)); the others are honest."""
    if not 0 <= fraud_rate <= 1 or not 0 <= lazy_rate <= 1:
        raise ValueError("fraud and lazy rates are fractions in [0, 1]")
    fraudulent = round(miners * fraud_rate)
    lazy = min(round(miners * lazy_rate), miners - fraudulent)
    return Mix(miners - fraudulent - lazy, lazy, fraudulent)


def split_evenly(items: Sequence, parts: int) -> list[list]:
    """`items` dealt round-robin into `parts` lists (each role spread over every actor)."""
    return [list(items[i::parts]) for i in range(parts)]


# ------------------------------------------------------------------------------ shaving
#
# An item's loss and embedding under a model are means over its 1024-byte chunks (one batch of
# up to 16 chunks), and a chunk's statistics do not depend on its neighbours (nor, but for
# rounding, on its position: attention sees relative positions). So a miner that scored a pool
# of chunks once per model knows, without scoring again, the scores of every item made of them:
# a cheap search over multisets of the pool finds an item whose true distance to a target lies
# just outside its threshold by the margin it wants, and its claimed embedding is nudged in.

MAX_ITEM_CHUNKS = 16  # one scoring batch: the means stay exact


class PoolScores(NamedTuple):
    """A pool of full chunks scored under each of a model set, each model alone."""
    chunks: list[bytes]
    model_ids: list[bytes]
    losses: np.ndarray  # [chunks, models]
    embeddings: np.ndarray  # [chunks, models, D] float64


class ShavePlan(NamedTuple):
    counts: tuple[int, ...]  # how many times each pool chunk the item holds
    model: int  # the winner's index in the pool's model set
    target: TargetView
    margin: float  # predicted: (true distance − threshold) / audit_tolerance

    def data(self, pool: PoolScores) -> bytes:
        return b"".join(chunk * n for chunk, n in zip(pool.chunks, self.counts))


def margin_band(want: float) -> tuple[float, float]:
    """The true margins (in tolerances) a shave aiming at `want` accepts: within the tolerance
    for want ≤ 1, else clearly outside it and at most `want`."""
    return (0.4 * want, min(0.9, 1.6 * want)) if want <= 1 else (max(1.2, 0.6 * want), want)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def sparse_mixtures(chunks: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` items of 1 to 4 distinct pool chunks, each repeated so that an item holds at
    most MAX_ITEM_CHUNKS: [samples, chunks] counts. Few ingredients keep the mixtures spread
    (the means of many random chunks all sit near the pool's mean)."""
    counts = np.zeros((samples, chunks), dtype=np.int64)
    kinds = rng.integers(1, min(4, chunks) + 1, samples)
    for row, k in enumerate(kinds):
        picked = rng.choice(chunks, size=k, replace=False)
        counts[row, picked] = rng.integers(1, MAX_ITEM_CHUNKS // k + 1, k)
    return counts


def plan_shaves(pool: PoolScores, targets: Sequence[TargetView], want: float, tolerance: int,
                rng: np.random.Generator, samples: int = 40_000) -> list[ShavePlan]:
    """Items of the pool whose predicted true distance to one of `targets` (all of the pool's
    model set) is outside its threshold by a margin in `margin_band(want)`, best first. The
    winner must lead the second model by a clear gap (the prediction holds)."""
    if not targets or not pool.chunks:
        return []
    counts = sparse_mixtures(len(pool.chunks), samples, rng)
    sizes = counts.sum(axis=1)
    weights = counts / sizes[:, None]
    losses = weights @ pool.losses  # [samples, models]
    order = np.sort(losses, axis=1)
    winner = np.argmin(losses, axis=1)
    clear = (order[:, 1] - order[:, 0] if losses.shape[1] > 1 else np.full(samples, np.inf)) > 1e-3
    embeddings = np.einsum("sp,pmd->smd", weights, pool.embeddings)[np.arange(samples), winner]
    goals = np.stack([np.frombuffer(t.embedding, "<f4").astype(np.float64) for t in targets])
    distance = 1.0 - _unit(embeddings) @ _unit(goals).T  # [samples, targets]
    thresholds = np.array([t.threshold_fixed for t in targets], dtype=np.float64)
    margin = (distance * DISTANCE_SCALE - thresholds) / tolerance
    low, high = margin_band(want)
    found = sorted((abs(margin[s, t] - want), s, t) for s, t in zip(*np.nonzero((margin > low) & (margin <= high)))
                   if clear[s])
    plans: dict[tuple, ShavePlan] = {}
    for _, s, t in found:
        plan = ShavePlan(tuple(int(c) for c in counts[s]), int(winner[s]), targets[t], float(margin[s, t]))
        plans.setdefault((plan.counts, plan.target.id), plan)
    return list(plans.values())[:8]


def nudge(embedding: np.ndarray, target_embedding: bytes, threshold: int, tolerance: int
          ) -> tuple[np.ndarray, float] | None:
    """The least nudge of `embedding` towards the target that brings the chain's distance within
    `threshold`: each element moved against the distance's gradient by s × its tolerance
    (atol + rtol·|x|). Returns (the float32 embedding, s): s ≤ 1 stays within the audit's
    element-wise tolerance. None when no s up to 10⁶ does it."""
    e = np.asarray(embedding, dtype=np.float64)
    t = np.frombuffer(target_embedding, "<f4").astype(np.float64)
    cos = float(e @ t / (np.linalg.norm(e) * np.linalg.norm(t)))
    towards = np.sign(t / np.linalg.norm(t) - cos * e / np.linalg.norm(e))
    box = (1.0 + np.abs(e)) * (tolerance / TOLERANCE_SCALE)

    def moved(s: float) -> np.ndarray:
        return (e + s * towards * box).astype("<f4")

    def inside(s: float) -> bool:
        return cosine_distance_fixed(moved(s), target_embedding) <= threshold

    high = 1.0
    while not inside(high):
        high *= 2
        if high > 1e6:
            return None
    low = 0.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if inside(middle) else (middle, high)
    return moved(high), high


def is_shave_fraud(claimed: np.ndarray, true: np.ndarray, true_distance: int, threshold: int,
                   tolerance: int) -> bool:
    """Whether claims with embedding `claimed` are fraud by the audit's definition, when the
    truth is `true` at `true_distance` (the scores otherwise true)."""
    return not within_tolerance(claimed, true, tolerance) or true_distance > threshold + tolerance


def second_best(losses: Sequence[float]) -> int | None:
    """The model with the second-lowest loss (None with fewer than two finite losses)."""
    finite = sorted((loss, i) for i, loss in enumerate(losses) if np.isfinite(loss))
    return finite[1][1] if len(finite) > 1 else None


# ------------------------------------------------------------------------------ the report


class FraudTally(NamedTuple):
    injected: int
    caught: int  # slashed: undone by a ChallengerWins
    escaped: int  # claimed (paid) although fraud
    held: int  # claimed, within the tolerance (not fraud)


def fraud_table(outcomes: dict[str, int]) -> dict[str, FraudTally]:
    """`Stats.fraud_outcomes` ("<label>|<outcome>" → count) by label, sorted."""
    rows: dict[str, dict[str, int]] = {}
    for key, count in outcomes.items():
        label, outcome = key.rsplit("|", 1)
        rows.setdefault(label, {})[outcome] = rows.get(label, {}).get(outcome, 0) + count
    return {label: FraudTally(*(row.get(o, 0) for o in ("injected", "caught", "escaped", "held")))
            for label, row in sorted(rows.items())}


def fraud_summary(table: dict[str, FraudTally]) -> str:
    """One line: the frauds' totals (claims within the tolerance left out), then each row as
    injected/caught/escaped."""
    frauds = {label: row for label, row in table.items() if "not fraud" not in label}
    injected, caught, escaped = (sum(getattr(r, f) for r in frauds.values()) for f in ("injected", "caught", "escaped"))
    rows = ", ".join(f"{label} {r.injected}/{r.caught}/{r.escaped}" for label, r in table.items())
    return f"frauds {injected} caught {caught} escaped {escaped}" + (f" ({rows})" if rows else "")
