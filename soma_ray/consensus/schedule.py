"""Stake-weighted leader rotation, deterministic from (height, round) and the committee."""
from __future__ import annotations

from math import gcd

from soma_ray.protocol.crypto import Committee


def leader_cycle(committee: Committee) -> list[int]:
    """One cycle of smooth weighted round robin over member indices.

    Each member appears in proportion to its voting power, and its turns are spread out (no
    member leads twice in a row unless its power demands it), so a crashed leader costs few
    consecutive rounds. The cycle is the powers divided by their gcd, at most 10000 slots.
    """
    powers = [m.voting_power for m in committee.members]
    divisor = 0
    for power in powers:
        divisor = gcd(divisor, power)
    weights = [power // divisor for power in powers]
    total = sum(weights)
    current = [0] * len(weights)
    cycle = []
    for _ in range(total):
        for index, weight in enumerate(weights):
            current[index] += weight
        chosen = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[chosen] -= total
        cycle.append(chosen)
    return cycle


class LeaderSchedule:
    """`leader(height, round)`: consecutive rounds and heights walk along the weighted cycle."""

    def __init__(self, committee: Committee) -> None:
        self._cycle = leader_cycle(committee)

    def leader(self, height: int, round: int) -> int:
        return self._cycle[(height + round) % len(self._cycle)]
