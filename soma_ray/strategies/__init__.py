"""Scripted participants (docs/game.md): the strategies of honest, lazy and fraudulent miners and
of challengers, driven through the SDK (`SomaClient`) one step at a time; pure of Ray."""
from soma_ray.strategies.corpus import Corpus, corpus_files
from soma_ray.strategies.decide import FRAUD_KINDS, Mix, crowd_mix
from soma_ray.strategies.participants import (
    Challenger, Fraud, FraudulentMiner, HonestMiner, LazyMiner, Participant, Stats, World,
)
from soma_ray.strategies.roster import ROLES, Spec, build, roster

__all__ = ["Challenger", "Corpus", "FRAUD_KINDS", "Fraud", "FraudulentMiner", "HonestMiner",
           "LazyMiner", "Mix", "Participant", "ROLES", "Spec", "Stats", "World", "build",
           "corpus_files", "crowd_mix", "roster"]
