"""Typed errors of the scoring service (serve/scoring.py), each a ProtocolError with named fields.

Over HTTP an error is `{"error": CODE, "fields": {...}}` (bytes fields as hex) with the status of
`STATUS`; through a DeploymentHandle it is raised as itself (wrapped by Ray in a RayTaskError that
is also an instance of it, so `except ModelUnavailable as e: e.model_id` works; `e.cause` is the
plain error).

Errors of the request's own making come from soma_ray.protocol.errors too: `MalformedInput`
(undecodable body, neither or both of data/data_url, no manifests, a key of the wrong length...),
`DataTooLarge` (data over max_submission_bytes), `EmbeddingDimensionMismatch`,
`NonFiniteEmbedding` and `ZeroEmbedding` (the target embedding).
"""
from __future__ import annotations

from typing import Any

from soma_ray.protocol.errors import ProtocolError

# Stages at which one model's weights can fail, in the order a load meets them.
STAGES = ("download", "size", "checksum", "decrypt", "load")


class ModelUnavailable(ProtocolError):
    """One of the request's models could not be used: its weights failed at `stage` (one of
    STAGES). Only the request naming these weights fails."""

    fields = ("model_id", "stage", "reason")
    template = "model {model_id} is unavailable ({stage}): {reason}"


class DataUnavailable(ProtocolError):
    """The data at `url` could not be downloaded (or did not have its declared size)."""

    fields = ("url", "reason")
    template = "could not get the data at {url}: {reason}"


class ScoringTimeout(ProtocolError):
    """The request did not finish within its timeout (downloads, loads and scoring together)."""

    fields = ("timeout_s",)
    template = "scoring did not finish within {timeout_s} s"


class RequestTooLarge(ProtocolError):
    """The HTTP body is longer than the service accepts (checked before it is decoded)."""

    fields = ("size", "max")
    template = "the request body is at least {size} bytes, the limit is {max}"


class ScoringUnavailable(ProtocolError):
    """The service could not score (its replicas kept failing); the request may be resent."""

    fields = ("reason",)
    template = "the scoring service is unavailable: {reason}"


STATUS = {
    "MalformedInput": 400,
    "EmbeddingDimensionMismatch": 400,
    "NonFiniteEmbedding": 400,
    "ZeroEmbedding": 400,
    "DataTooLarge": 413,
    "RequestTooLarge": 413,
    "ModelUnavailable": 422,
    "DataUnavailable": 422,
    "ScoringTimeout": 504,
    "ScoringUnavailable": 503,
}


def http_status(error: ProtocolError) -> int:
    """The HTTP status of a typed error: 4xx for anything about the request, 5xx only for the
    service's own failures (timeouts and unavailable replicas)."""
    return STATUS.get(error.code, 400)


def error_body(error: ProtocolError) -> dict[str, Any]:
    """`{"error": CODE, "fields": {...}}` with bytes fields as hex."""
    fields = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in error.values().items()}
    return {"error": error.code, "fields": fields}
