"""Who is in a crowd: one `Spec` per participant, each built into its strategy with keys and
seeds drawn from the crowd's seed (the same crowd replays the same choices)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.strategies.corpus import Corpus
from soma_ray.strategies.decide import Mix
from soma_ray.strategies.participants import (
    Challenger, FraudulentMiner, HonestMiner, LazyMiner, Participant,
)

MINER_ROLES = ("honest", "lazy", "fraudulent")
ROLES = (*MINER_ROLES, "challenger")


class Spec(NamedTuple):
    role: str  # one of ROLES
    index: int  # among the crowd's participants of that role


def roster(mix: Mix, challengers: int) -> list[Spec]:
    counts = (*mix, challengers)
    return [Spec(role, i) for role, count in zip(ROLES, counts) for i in range(count)]


def keypair_of(spec: Spec, seed: int) -> Keypair:
    return preset_keypair(f"crowd-{seed}-{spec.role}", spec.index)


def participant_seed(spec: Spec, seed: int) -> int:
    return int.from_bytes(keypair_of(spec, seed).address[:8], "little")


def build(spec: Spec, seed: int, files: list[Path], challengers: int,
          false_alarm_every: int = 0) -> Participant:
    """The participant `spec` stands for; miners read `files` (corpus.corpus_files) in their own
    order."""
    keypair, own_seed = keypair_of(spec, seed), participant_seed(spec, seed)
    if spec.role == "challenger":
        return Challenger(keypair, own_seed, spec.index, challengers, false_alarm_every)
    miner = {"honest": HonestMiner, "lazy": LazyMiner, "fraudulent": FraudulentMiner}[spec.role]
    return miner(keypair, own_seed, Corpus(files, own_seed))
