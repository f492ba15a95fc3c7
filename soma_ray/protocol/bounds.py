"""Every variable-length field of every transaction kind, bounded on chain (issue 18).

`check_kind_fields(kind, params, committee_size)` raises the typed error of the first field out
of bounds. It runs twice: at admission (a kind that could only fail costs the network nothing
beyond its signature check) and at execution, first thing inside the kind's savepoint (a
proposer may include anything: the transaction then pays its fee and fails with the same error).

The bounds (a field not listed is fixed-size: an int, a bool, a Literal):

| fields | bound |
|---|---|
| addresses: Transfer/Faucet `recipient`, AddStake `pool_owner` | 32 bytes (`InvalidAddress`) |
| object ids: every `*_id`, SetCommission `target` (an address or a model id) | 32 bytes |
| hashes and commitments: `checksum`, `*_commitment`, `commitment`, `data_hash` | 32 bytes |
| keys: AddValidator `public_key`, RevealModel `decryption_key` | 32 bytes |
| signatures: `proof_of_possession`, a certificate's signatures | 64 bytes each |
| RevealSubmission `nonce` (the commitment's secret) | at most 32 bytes |
| URLs: a manifest's `url`, RevealSubmission `data_url` | http(s), at most `max_url_bytes` |
| AddValidator `network_address` | 1 to `max_url_bytes` bytes, printable ASCII |
| embeddings: RevealModel, RevealSubmission | exactly `embedding_dim` float32 (4 × dim bytes) |
| a weights manifest's `size` | 1 to `model_max_weight_size` |
| ResolveChallenge certificate | as many signer indices as signatures, at most the committee's size |

Errors: `InvalidAddress`, `FieldLengthMismatch{field, length, expected}`, `FieldTooLong{field,
length, max}`, `InvalidUrl{field, reason}`, `ValueOutOfRange{field, value, min, max}`,
`TooManyItems{field, count, max}`, `DataTooLarge` (a manifest's size above the maximum, as
before), `MalformedInput`/`EmbeddingDimensionMismatch` (an embedding's length, as before).
"""
from __future__ import annotations

from typing import Callable

from soma_ray.protocol import types as t
from soma_ray.protocol.errors import (
    DataTooLarge, EmbeddingDimensionMismatch, FieldLengthMismatch, FieldTooLong, InvalidAddress,
    InvalidUrl, MalformedInput, TooManyItems, ValueOutOfRange,
)
from soma_ray.protocol.params import Parameters

ID_BYTES = 32  # object ids, addresses, hashes, commitments, public and decryption keys
SIGNATURE_BYTES = 64
MAX_SUBMISSION_NONCE_BYTES = 32
URL_SCHEMES = ("http://", "https://")


def require_bytes(value: bytes, field: str, expected: int = ID_BYTES) -> None:
    if len(value) != expected:
        raise FieldLengthMismatch(field=field, length=len(value), expected=expected)


def require_address_field(value: bytes, field: str) -> None:
    if len(value) != ID_BYTES:
        raise InvalidAddress(field=field, length=len(value))


def _printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def require_url(url: str, field: str, params: Parameters) -> None:
    """http:// or https://, a host, printable ASCII without spaces, at most max_url_bytes.
    A plain string rule rather than a URL parser's: every validator must decide it alike, and
    parsers differ between library versions."""
    size = len(url.encode())
    if size > params.max_url_bytes:
        raise FieldTooLong(field=field, length=size, max=params.max_url_bytes)
    scheme = next((s for s in URL_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise InvalidUrl(field=field, reason="it must start with http:// or https://")
    if not _printable_ascii(url):
        raise InvalidUrl(field=field, reason="only printable ASCII without spaces is allowed")
    if not url[len(scheme):].split("/", 1)[0]:
        raise InvalidUrl(field=field, reason="it names no host")


def require_embedding_bytes(embedding: bytes, params: Parameters) -> None:
    """4 × embedding_dim bytes (the values themselves are checked by the kind)."""
    if len(embedding) % 4:
        raise MalformedInput(reason=f"embedding of {len(embedding)} bytes is not float32 values")
    if len(embedding) // 4 != params.embedding_dim:
        raise EmbeddingDimensionMismatch(expected=params.embedding_dim, got=len(embedding) // 4)


def require_manifest(manifest: t.WeightsManifest, params: Parameters) -> None:
    require_url(manifest.url, "weights_manifest.url", params)
    require_bytes(manifest.checksum, "weights_manifest.checksum")
    if manifest.size > params.model_max_weight_size:
        raise DataTooLarge(size=manifest.size, max=params.model_max_weight_size)
    if manifest.size < 1:
        raise ValueOutOfRange(field="weights_manifest.size", value=manifest.size, min=1,
                              max=params.model_max_weight_size)


def require_certificate(certificate, committee_size: int) -> None:
    indices, signatures = certificate.signer_indices, certificate.signatures
    for field, items in (("certificate.signer_indices", indices), ("certificate.signatures", signatures)):
        if len(items) > committee_size:
            raise TooManyItems(field=field, count=len(items), max=committee_size)
    if len(indices) != len(signatures):
        raise FieldLengthMismatch(field="certificate.signatures", length=len(signatures), expected=len(indices))
    for signature in signatures:
        require_bytes(signature, "certificate.signatures[]", SIGNATURE_BYTES)


def _ids(*names: str) -> Callable:
    def check(kind, params: Parameters, committee_size: int) -> None:
        for name in names:
            require_bytes(getattr(kind, name), name)
    return check


def _transfer(kind, params, committee_size) -> None:
    require_address_field(kind.recipient, "recipient")


def _add_stake(kind, params, committee_size) -> None:
    require_address_field(kind.pool_owner, "pool_owner")


def _add_validator(kind: t.AddValidator, params, committee_size) -> None:
    require_bytes(kind.public_key, "public_key")
    require_bytes(kind.proof_of_possession, "proof_of_possession", SIGNATURE_BYTES)
    size = len(kind.network_address.encode())
    if size > params.max_url_bytes:
        raise FieldTooLong(field="network_address", length=size, max=params.max_url_bytes)
    if not kind.network_address or not _printable_ascii(kind.network_address):
        raise InvalidUrl(field="network_address", reason="1 or more printable ASCII characters without spaces")


def _commit_model(kind: t.CommitModel, params, committee_size) -> None:
    require_bytes(kind.model_id, "model_id")
    require_manifest(kind.weights_manifest, params)
    for name in ("weights_commitment", "embedding_commitment", "key_commitment"):
        require_bytes(getattr(kind, name), name)


def _reveal_model(kind: t.RevealModel, params, committee_size) -> None:
    require_bytes(kind.model_id, "model_id")
    require_bytes(kind.decryption_key, "decryption_key")
    require_embedding_bytes(kind.embedding, params)


def _reveal_submission(kind: t.RevealSubmission, params, committee_size) -> None:
    require_bytes(kind.submission_id, "submission_id")
    require_bytes(kind.data_hash, "data_hash")
    require_url(kind.data_url, "data_url", params)
    require_bytes(kind.model_id, "model_id")
    require_embedding_bytes(kind.embedding, params)
    if len(kind.nonce) > MAX_SUBMISSION_NONCE_BYTES:
        raise FieldTooLong(field="nonce", length=len(kind.nonce), max=MAX_SUBMISSION_NONCE_BYTES)


def _resolve_challenge(kind: t.ResolveChallenge, params, committee_size) -> None:
    require_bytes(kind.challenge_id, "challenge_id")
    require_certificate(kind.certificate, committee_size)


def _none(kind, params, committee_size) -> None:
    pass


CHECKS: dict[type, Callable] = {
    t.Transfer: _transfer,
    t.Faucet: _transfer,
    t.AddStake: _add_stake,
    t.WithdrawStake: _ids("staked_id"),
    t.AddValidator: _add_validator,
    t.RemoveValidator: _none,
    t.SetCommission: _ids("target"),
    t.CreateModel: _none,
    t.CommitModel: _commit_model,
    t.RevealModel: _reveal_model,
    t.AddStakeToModel: _ids("model_id"),
    t.DeactivateModel: _ids("model_id"),
    t.ReportModel: _ids("model_id"),
    t.UndoReportModel: _ids("model_id"),
    t.CommitSubmission: _ids("target_id", "commitment"),
    t.RevealSubmission: _reveal_submission,
    t.InitiateChallenge: _ids("submission_id"),
    t.ResolveChallenge: _resolve_challenge,
    t.ClaimRewards: _ids("target_id"),
}


def check_kind_fields(kind, params: Parameters, committee_size: int) -> None:
    """Raise the typed error of the first out-of-bounds field of `kind` (see the module table)."""
    CHECKS[type(kind)](kind, params, committee_size)
