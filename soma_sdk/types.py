"""The views `soma_sdk.SomaClient` answers with, in the reference SDK's names: ids and addresses
as 0x-hex strings, embeddings as lists of floats (the float32 values exactly), amounts where the
reference names them. Frozen dataclasses; each also reads as a mapping (`view["id"]`), since the
reference's examples use both forms.
"""
from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import numpy as np


def hex_id(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


def floats(embedding: bytes | None) -> list[float] | None:
    """Little-endian float32 bytes as Python floats (each float32 value exactly)."""
    if embedding is None:
        return None
    return np.frombuffer(bytes(embedding), dtype="<f4").astype(np.float64).tolist()


class _Mapping:
    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self.keys() else default


@dataclasses.dataclass(frozen=True)
class Target(_Mapping):
    id: str
    status: str  # open, filled, claimable, expired, settled
    embedding: list[float]
    model_ids: list[str]
    distance_threshold: float  # cosine distance
    reward_pool: int  # shannons
    generation_epoch: int
    bond_amount: int  # shannons: the least bond a commit posts
    submitter: str | None
    winning_model_id: str | None
    data_url: str | None  # None: the index's view does not carry it (fetch_submission_data)
    submission_id: str | None
    fill_epoch: int | None
    claimable_epoch: int | None
    threshold_fixed: int  # the chain's fixed point (distance_threshold x 1e9)

    @classmethod
    def of(cls, view) -> "Target":
        return cls(hex_id(view.id), view.status, floats(view.embedding), [hex_id(m) for m in view.model_ids],
                   view.distance_threshold, view.reward_pool, view.generation_epoch, view.bond_amount,
                   hex_id(view.submitter), hex_id(view.winning_model_id), None, hex_id(view.submission_id),
                   view.fill_epoch, view.claimable_epoch, view.threshold_fixed)


@dataclasses.dataclass(frozen=True)
class ActiveModel(_Mapping):
    model_id: str
    owner: str
    embedding: list[float] | None
    stake: int  # shannons: the model's pool
    commission_rate: int  # basis points
    has_pending_update: bool
    status: str

    @classmethod
    def of(cls, view) -> "ActiveModel":
        return cls(hex_id(view.model_id), hex_id(view.owner), floats(view.embedding), view.stake,
                   view.commission_bps, view.has_pending_update, view.status)


@dataclasses.dataclass(frozen=True)
class ModelManifest(_Mapping):
    model_id: str
    url: str
    checksum: bytes  # BLAKE2b-256 of the encrypted weights
    size: int
    decryption_key: bytes

    @classmethod
    def of(cls, manifest) -> "ModelManifest":
        return cls(hex_id(manifest.model_id), manifest.url, bytes(manifest.checksum), manifest.size,
                   bytes(manifest.decryption_key))


@dataclasses.dataclass(frozen=True)
class ScoreResult(_Mapping):
    winner: int  # index into the models scored
    loss_score: float
    embedding: list[float]
    distance: float  # cosine distance of the winner's embedding to the target
    losses: list[float]

    @classmethod
    def of(cls, response) -> "ScoreResult":
        return cls(response.winner, response.loss_score, floats(response.embedding), response.distance,
                   list(response.losses))


@dataclasses.dataclass(frozen=True)
class EpochInfo(_Mapping):
    epoch: int
    epoch_start_timestamp_ms: int
    epoch_duration_ms: int
    next_epoch_timestamp_ms: int

    @classmethod
    def of(cls, info) -> "EpochInfo":
        return cls(info.epoch, info.epoch_start_ms, info.epoch_duration_ms, info.next_epoch_ms)


@dataclasses.dataclass(frozen=True)
class FaucetResponse(_Mapping):
    status: str  # "Success" (a refusal raises)
    coins_sent: Decimal  # SOMA
    transaction_digest: str


@dataclasses.dataclass(frozen=True)
class TargetPage(_Mapping):
    targets: list[Target]
    next_page_token: str | None
