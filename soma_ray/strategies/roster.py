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
    Challenger, FraudulentMiner, HonestMiner, LazyMiner, PairModel, Participant,
)
from soma_ray.strategies.trainer import Trainer, Training, niche_of, niche_sample

MINER_ROLES = ("honest", "lazy", "fraudulent")
ROLES = (*MINER_ROLES, "challenger", "trainer")


class Spec(NamedTuple):
    role: str  # one of ROLES
    index: int  # among the crowd's participants of that role


def roster(mix: Mix, challengers: int, trainers: int = 0) -> list[Spec]:
    counts = (*mix, challengers, trainers)
    return [Spec(role, i) for role, count in zip(ROLES, counts) for i in range(count)]


def keypair_of(spec: Spec, seed: int) -> Keypair:
    return preset_keypair(f"crowd-{seed}-{spec.role}", spec.index)


def participant_seed(spec: Spec, seed: int) -> int:
    return int.from_bytes(keypair_of(spec, seed).address[:8], "little")


def build(spec: Spec, seed: int, files: list[Path], challengers: int,
          false_alarm_every: int = 0, pair: PairModel | None = None, training: Training | None = None,
          train_steps: int | None = None) -> Participant:
    """The participant `spec` stands for; miners read `files` (corpus.corpus_files) in their own
    order. Fraudulent miners share `pair` (the owner–miner pair's model), when there is one.
    Trainers read their niche (trainer.NICHES, less the held-out slice) and fine-tune with
    `training` (`train_steps` steps an epoch, default fine_tune.TRAINER_STEPS)."""
    keypair, own_seed = keypair_of(spec, seed), participant_seed(spec, seed)
    if spec.role == "trainer":
        from soma_ray.heldout import stdlib_files
        from soma_ray.training.fine_tune import TRAINER_STEPS

        if training is None:
            raise ValueError("a trainer needs a Training (soma_ray/training/fine_tune.py)")
        niche = stdlib_files(niche_of(spec.index))
        return Trainer(keypair, own_seed, spec.index, niche, training, niche_sample(niche),
                       TRAINER_STEPS if train_steps is None else train_steps)
    if spec.role == "challenger":
        return Challenger(keypair, own_seed, spec.index, challengers, false_alarm_every)
    if spec.role == "fraudulent":
        return FraudulentMiner(keypair, own_seed, Corpus(files, own_seed), index=spec.index, pair=pair)
    miner = {"honest": HonestMiner, "lazy": LazyMiner}[spec.role]
    return miner(keypair, own_seed, Corpus(files, own_seed))
