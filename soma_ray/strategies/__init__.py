"""Scripted participants (docs/game.md): the strategies of honest, lazy and fraudulent miners, of
challengers and of trainers, driven through the SDK (`SomaClient`) one step at a time; pure of Ray."""
from soma_ray.strategies.corpus import Corpus, corpus_files
from soma_ray.strategies.decide import FRAUD_KINDS, Mix, crowd_mix
from soma_ray.strategies.participants import (
    Challenger, Fraud, FraudulentMiner, HonestMiner, LazyMiner, PairModel, Participant, Stats, World,
)
from soma_ray.strategies.roster import ROLES, Spec, build, roster
from soma_ray.strategies.trainer import Trainer

__all__ = ["Challenger", "Corpus", "FRAUD_KINDS", "Fraud", "FraudulentMiner", "HonestMiner",
           "LazyMiner", "Mix", "PairModel", "Participant", "ROLES", "Spec", "Stats", "Trainer", "World", "build",
           "corpus_files", "crowd_mix", "roster"]
