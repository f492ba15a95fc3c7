"""Tendermint-style BFT consensus as pure message handlers (docs/consensus.md).

Transport-free and clock-free: the validator actor feeds messages and timer expiries into a
`ConsensusCore` and performs the outputs it returns, in order.
"""
from soma_ray.consensus.chain import verify_checkpoint_chain
from soma_ray.consensus.core import Application, ConsensusCore, TimeoutConfig
from soma_ray.consensus.errors import CheckpointChainBroken, SafetyStateAhead, ValueNotCertified
from soma_ray.consensus.messages import (
    Broadcast,
    CertifiedValue,
    CommitCertificate,
    Decide,
    EvidenceFound,
    FallenBehind,
    PeerBehind,
    PersistSafetyState,
    Proposal,
    ProposalEquivocation,
    SafetyState,
    Send,
    SetTimer,
    Step,
    Vote,
    VoteEquivocation,
    value_digest,
    verify_certified_value,
    verify_commit_certificate,
)
from soma_ray.consensus.schedule import LeaderSchedule

__all__ = [
    "Application", "Broadcast", "CertifiedValue", "CheckpointChainBroken", "CommitCertificate",
    "ConsensusCore", "Decide", "EvidenceFound", "FallenBehind", "LeaderSchedule", "PeerBehind",
    "PersistSafetyState", "Proposal", "ProposalEquivocation", "SafetyState", "SafetyStateAhead",
    "Send", "SetTimer", "Step", "TimeoutConfig", "ValueNotCertified", "Vote", "VoteEquivocation",
    "value_digest", "verify_certified_value", "verify_checkpoint_chain", "verify_commit_certificate",
]
