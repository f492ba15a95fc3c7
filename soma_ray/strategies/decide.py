"""The scripted participants' decisions, pure: which targets to mine, whether a scored item is a
hit and where, which filled targets a challenger checks, what it challenges, the crowd's mix.

Distances are the chain's own (`cosine_distance_fixed`, fixed point), so a hit decided here is a
hit the chain accepts: a reveal never fails `DistanceExceedsThreshold` on a rounding difference.
"""
from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Sequence

from soma_ray.wire import TargetView
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.targets import (
    DISTANCE_SCALE, accepts_commit, challenge_allowed, cosine_distance_fixed,
)
from soma_ray.protocol.types import ChallengeKind

# What a fraudulent miner injects, in turn (spec §5 decides the verdict of each):
#   fake-score: real data, but a claimed embedding (the target's own) and loss nobody computed
#   wrong-hash: the bytes uploaded are not the bytes whose hash and size are revealed
#   withheld:   the data URL names a blob that was never uploaded (the data is unavailable)
FRAUD_KINDS = ("fake-score", "wrong-hash", "withheld")
# The challenge that catches each kind.
FRAUD_CHALLENGE: dict[str, ChallengeKind] = {
    "fake-score": "ScoreFraud", "wrong-hash": "DataFraud", "withheld": "DataFraud"}


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
    groups: dict[frozenset, list[TargetView]] = defaultdict(list)
    for target in targets:
        groups[frozenset(target.model_ids)].append(target)
    return max(groups.values(), key=len, default=[])


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
