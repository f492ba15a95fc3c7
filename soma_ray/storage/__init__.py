"""LMDB persistence of a validator: state, certified checkpoints and consensus metadata."""

from soma_ray.storage.errors import (
    CheckpointNotFound,
    ConflictingCheckpoint,
    GenesisMismatch,
    InvalidEvidence,
    InvalidStateKey,
    NotInitialized,
    SequenceGap,
    StorageError,
    StoreFull,
    StoreInUse,
)
from soma_ray.storage.store import ValidatorStore

__all__ = [
    "CheckpointNotFound",
    "ConflictingCheckpoint",
    "GenesisMismatch",
    "InvalidEvidence",
    "InvalidStateKey",
    "NotInitialized",
    "SequenceGap",
    "StorageError",
    "StoreFull",
    "StoreInUse",
    "ValidatorStore",
]
