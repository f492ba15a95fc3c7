"""Typed errors of the consensus core.

Defined and registered in `soma_ray.protocol.errors`, the one registry of every error that can
reach another process (so a client decodes them without importing the consensus package), and
re-exported here.
"""
from soma_ray.protocol.errors import CheckpointChainBroken, SafetyStateAhead, ValueNotCertified

__all__ = ["CheckpointChainBroken", "SafetyStateAhead", "ValueNotCertified"]
