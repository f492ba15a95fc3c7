"""soma-ray: the SOMA network on Ray. What a participant uses is importable from here:

    from soma_ray import SomaClient, Keypair, SHANNONS_PER_SOMA, errors

    client = await SomaClient(chain="localnet")
    try:
        await client.transfer(Keypair.generate(), recipient, 5 * SHANNONS_PER_SOMA)
    except errors.InsufficientBalance as refused:
        ...

- the client: `SomaClient` (the async SDK over the gateway's HTTP routes) and `FinalityTimeout`;
- keys: `Keypair`;
- the views the client returns (`soma_ray.wire`): `EpochInfo`, `TargetView`, `TargetPage`,
  `NearbyTarget`, `ModelView`, `ModelManifest`, `Leaderboard`, `ModelScore`, `MinerScore`,
  `ScoreResponse`, `Uploaded`, `IndexStatus`, `Health`; and `StakeInfo`, `ValidatorInfo`,
  `ChallengeInfo`, `AuditFinding`;
- the errors: `errors` (`soma_ray.protocol.errors`: every typed error of spec §8, by its code),
  `ProtocolError` (their base) and the common ones by name (`__all__` lists them);
- amounts: `SHANNONS_PER_SOMA` (1 SOMA; `SomaClient.to_shannons`/`to_soma` convert).

Names load on first use, so `import soma_ray` (or any part of the library) loads neither the
SDK's HTTP client nor numpy, and nothing here ever loads Ray or torch.

Public API / internals: the names above (`__all__`), the chain's objects they carry
(`soma_ray.protocol.types`) and the `soma` command line are the public API; docs/gateway.md
("Public API") describes it. Everything else is internal and may change without notice: the
node and the validator's parts (`soma_ray.node`, `soma_ray.storage`, `soma_ray.consensus`,
`soma_ray.epoch_schedule`), the protocol's rule modules (`soma_ray.protocol.state`,
`execution`, `checkpoint`, `context`, `sim` and the `process_*` modules: the executable spec,
to read, not to build on), the transports and the route table (`soma_ray.http_transport`,
`soma_ray.ray_transport`, `soma_ray.transport`, `soma_ray.routes`, `soma_ray.handles`,
`soma_ray.fetch`), the wire module's encoders (its view structs are public), the cluster and
metric plumbing (`soma_ray.cluster`, `soma_ray.metrics`, `soma_ray.picklable`) and the CLI's
modules (`soma_ray.cli`). The Ray shells (`actors/`, `serve/`) are not part of the library.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

_WIRE = "soma_ray.wire"
_ERRORS = "soma_ray.protocol.errors"
_PARTICIPANT = "soma_ray.participant"

# Public name -> the module that defines it.
_EXPORTS = {
    # the client
    "SomaClient": "soma_ray.client",
    "FinalityTimeout": "soma_ray.client",
    # keys
    "Keypair": "soma_ray.protocol.crypto",
    # views
    "EpochInfo": _WIRE,
    "TargetView": _WIRE,
    "TargetPage": _WIRE,
    "NearbyTarget": _WIRE,
    "ModelView": _WIRE,
    "ModelManifest": _WIRE,
    "Leaderboard": _WIRE,
    "ModelScore": _WIRE,
    "MinerScore": _WIRE,
    "ScoreResponse": _WIRE,
    "Uploaded": _WIRE,
    "IndexStatus": _WIRE,
    "Health": _WIRE,
    "StakeInfo": _PARTICIPANT,
    "ValidatorInfo": _PARTICIPANT,
    "ChallengeInfo": _PARTICIPANT,
    "AuditFinding": "soma_ray.node.audit",
    # errors: the base, the ones a participant meets most, and the module for the rest
    "ProtocolError": _ERRORS,
    "UnknownProtocolError": _ERRORS,
    "MalformedInput": _ERRORS,
    "InsufficientBalance": _ERRORS,
    "InsufficientFee": _ERRORS,
    "BadNonce": _ERRORS,
    "MempoolFull": _ERRORS,
    "SenderPoolFull": _ERRORS,
    "NonceTooFarAhead": _ERRORS,
    "TransactionExpired": _ERRORS,
    "ObjectNotFound": _ERRORS,
    "NotFound": _ERRORS,
    "FaucetDisabled": _ERRORS,
    "FaucetRateLimited": _ERRORS,
    "TargetNotOpen": _ERRORS,
    "TargetExpired": _ERRORS,
    "DistanceExceedsThreshold": _ERRORS,
    "InsufficientBond": _ERRORS,
    "ChallengeWindowClosed": _ERRORS,
    "ModelHasNoWeights": _ERRORS,
    "ModelUnavailable": _ERRORS,
    "ScoringTimeout": _ERRORS,
    # amounts
    "SHANNONS_PER_SOMA": "soma_ray.protocol.params",
}
_MODULES = {"errors": _ERRORS}

__all__ = [*_EXPORTS, *_MODULES]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from soma_ray.client import FinalityTimeout, SomaClient
    from soma_ray.node.audit import AuditFinding
    from soma_ray.participant import ChallengeInfo, StakeInfo, ValidatorInfo
    from soma_ray.protocol import errors
    from soma_ray.protocol.crypto import Keypair
    from soma_ray.protocol.errors import (
        BadNonce, ChallengeWindowClosed, DistanceExceedsThreshold, FaucetDisabled,
        FaucetRateLimited, InsufficientBalance, InsufficientBond, InsufficientFee, MalformedInput,
        MempoolFull, ModelHasNoWeights, ModelUnavailable, NonceTooFarAhead, NotFound,
        ObjectNotFound, ProtocolError, ScoringTimeout, SenderPoolFull, TargetExpired,
        TargetNotOpen, TransactionExpired, UnknownProtocolError,
    )
    from soma_ray.protocol.params import SHANNONS_PER_SOMA
    from soma_ray.wire import (
        EpochInfo, Health, IndexStatus, Leaderboard, MinerScore, ModelManifest, ModelScore,
        ModelView, NearbyTarget, ScoreResponse, TargetPage, TargetView, Uploaded,
    )


def __getattr__(name: str):
    import importlib

    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:  # a submodule (`from soma_ray import wire`) is imported by the import system instead
        raise AttributeError(f"module 'soma_ray' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
