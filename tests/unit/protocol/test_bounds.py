"""Every variable-length field of every transaction kind is bounded on chain (issue 18,
soma_ray/protocol/bounds.py): a valid kind passes, each field out of its bound is the typed
error, and no kind is left without its checks."""
import typing

import msgspec
import pytest

from soma_ray.protocol import bounds
from soma_ray.protocol import types as t
from soma_ray.protocol.crypto import Certificate
from soma_ray.protocol.errors import (
    DataTooLarge, EmbeddingDimensionMismatch, FieldLengthMismatch, FieldTooLong, InvalidAddress, InvalidUrl,
    MalformedInput, TooManyItems, ValueOutOfRange,
)
from soma_ray.protocol.params import localnet

P = localnet()
ID, SIG = b"\x01" * 32, b"\x02" * 64
EMB = bytes(4 * P.embedding_dim)
URL = "https://blobs.example/0x" + "ab" * 32
MANIFEST = t.WeightsManifest(URL, ID, 1_000)
COMMITTEE = 4

VALID = [
    t.Transfer(ID, 1), t.Faucet(ID, 1), t.AddStake(ID, 1), t.WithdrawStake(ID),
    t.AddValidator(ID, "validator-5.example:9000", SIG), t.RemoveValidator(), t.SetCommission(ID, 5),
    t.CreateModel(1, 0, 1), t.CommitModel(ID, MANIFEST, ID, ID, ID), t.RevealModel(ID, ID, EMB),
    t.AddStakeToModel(ID, 1), t.DeactivateModel(ID), t.ReportModel(ID), t.UndoReportModel(ID),
    t.CommitSubmission(ID, ID, 1), t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b"n" * 32),
    t.InitiateChallenge(ID, "ScoreFraud", 1), t.ResolveChallenge(ID, "MinerWins", Certificate([0, 1, 2], [SIG] * 3)),
    t.ClaimRewards(ID),
]


def check(kind):
    bounds.check_kind_fields(kind, P, COMMITTEE)


def test_every_kind_has_its_checks_and_a_valid_example_passes():
    assert set(bounds.CHECKS) == set(typing.get_args(t.TransactionKind)) == {type(k) for k in VALID}
    for kind in VALID:
        check(kind)


ID_FIELDS = [(t.WithdrawStake(ID), "staked_id"), (t.SetCommission(ID, 5), "target"),
             (t.AddStakeToModel(ID, 1), "model_id"), (t.DeactivateModel(ID), "model_id"),
             (t.ReportModel(ID), "model_id"), (t.UndoReportModel(ID), "model_id"),
             (t.CommitSubmission(ID, ID, 1), "target_id"), (t.CommitSubmission(ID, ID, 1), "commitment"),
             (t.InitiateChallenge(ID, "DataFraud", 1), "submission_id"), (t.ClaimRewards(ID), "target_id"),
             (t.CommitModel(ID, MANIFEST, ID, ID, ID), "model_id"),
             (t.CommitModel(ID, MANIFEST, ID, ID, ID), "weights_commitment"),
             (t.CommitModel(ID, MANIFEST, ID, ID, ID), "embedding_commitment"),
             (t.CommitModel(ID, MANIFEST, ID, ID, ID), "key_commitment"),
             (t.RevealModel(ID, ID, EMB), "model_id"), (t.RevealModel(ID, ID, EMB), "decryption_key"),
             (t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b""), "submission_id"),
             (t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b""), "data_hash"),
             (t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b""), "model_id"),
             (t.ResolveChallenge(ID, "MinerWins", Certificate([], [])), "challenge_id"),
             (t.AddValidator(ID, "v", SIG), "public_key")]


@pytest.mark.parametrize("kind, field", ID_FIELDS, ids=lambda v: v if isinstance(v, str) else type(v).__name__)
@pytest.mark.parametrize("length", [0, 31, 33, 10_000])
def test_ids_hashes_and_keys_are_exactly_32_bytes(kind, field, length):
    with pytest.raises(FieldLengthMismatch) as error:
        check(msgspec.structs.replace(kind, **{field: b"\x03" * length}))
    assert error.value == FieldLengthMismatch(field=field, length=length, expected=32)


@pytest.mark.parametrize("kind, field", [(t.Transfer(b"", 1), "recipient"), (t.Faucet(b"\x01" * 33, 1), "recipient"),
                                         (t.AddStake(b"\x01" * 31, 1), "pool_owner")])
def test_addresses_are_32_bytes(kind, field):
    with pytest.raises(InvalidAddress) as error:
        check(kind)
    assert error.value.field == field


@pytest.mark.parametrize("url, error", [
    ("https://" + "a" * P.max_url_bytes, FieldTooLong(field="data_url", length=P.max_url_bytes + 8, max=P.max_url_bytes)),
    ("ftp://host/x", InvalidUrl(field="data_url", reason="it must start with http:// or https://")),
    ("HTTP://host/x", InvalidUrl(field="data_url", reason="it must start with http:// or https://")),
    ("u", InvalidUrl(field="data_url", reason="it must start with http:// or https://")),
    ("https:///x", InvalidUrl(field="data_url", reason="it names no host")),
    ("https://host/a b", InvalidUrl(field="data_url", reason="only printable ASCII without spaces is allowed")),
    ("https://hóst/x", InvalidUrl(field="data_url", reason="only printable ASCII without spaces is allowed")),
])
def test_urls_are_http_and_at_most_max_url_bytes(url, error):
    with pytest.raises(type(error)) as raised:
        check(t.RevealSubmission(ID, ID, 10, url, ID, EMB, 5, b""))
    assert raised.value == error
    manifest = t.WeightsManifest(url, ID, 1)
    with pytest.raises(type(error)):
        check(t.CommitModel(ID, manifest, ID, ID, ID))
    check(t.RevealSubmission(ID, ID, 10, "http://h", ID, EMB, 5, b""))  # the shortest that passes
    check(t.RevealSubmission(ID, ID, 10, "https://" + "a" * (P.max_url_bytes - 8), ID, EMB, 5, b""))


@pytest.mark.parametrize("size, error", [
    (0, ValueOutOfRange(field="weights_manifest.size", value=0, min=1, max=P.model_max_weight_size)),
    (-1, ValueOutOfRange(field="weights_manifest.size", value=-1, min=1, max=P.model_max_weight_size)),
    (P.model_max_weight_size + 1, DataTooLarge(size=P.model_max_weight_size + 1, max=P.model_max_weight_size)),
])
def test_a_manifest_names_1_to_model_max_weight_size_bytes(size, error):
    with pytest.raises(type(error)) as raised:
        check(t.CommitModel(ID, t.WeightsManifest(URL, ID, size), ID, ID, ID))
    assert raised.value == error
    check(t.CommitModel(ID, t.WeightsManifest(URL, ID, P.model_max_weight_size), ID, ID, ID))


@pytest.mark.parametrize("length, error", [
    (4 * P.embedding_dim - 4, EmbeddingDimensionMismatch(expected=P.embedding_dim, got=P.embedding_dim - 1)),
    (4 * P.embedding_dim + 4, EmbeddingDimensionMismatch(expected=P.embedding_dim, got=P.embedding_dim + 1)),
    (0, EmbeddingDimensionMismatch(expected=P.embedding_dim, got=0)),
    (4 * P.embedding_dim + 1, MalformedInput(reason=f"embedding of {4 * P.embedding_dim + 1} bytes is not float32 values")),
])
def test_embeddings_are_exactly_embedding_dim_float32s(length, error):
    for kind in (t.RevealModel(ID, ID, bytes(length)), t.RevealSubmission(ID, ID, 10, URL, ID, bytes(length), 5, b"")):
        with pytest.raises(type(error)) as raised:
            check(kind)
        assert raised.value == error


def test_a_submission_nonce_is_at_most_32_bytes():
    with pytest.raises(FieldTooLong):
        check(t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b"n" * 33))
    check(t.RevealSubmission(ID, ID, 10, URL, ID, EMB, 5, b""))


@pytest.mark.parametrize("address, error", [
    ("", InvalidUrl(field="network_address", reason="1 or more printable ASCII characters without spaces")),
    ("a b", InvalidUrl(field="network_address", reason="1 or more printable ASCII characters without spaces")),
    ("v" * (P.max_url_bytes + 1), FieldTooLong(field="network_address", length=P.max_url_bytes + 1, max=P.max_url_bytes)),
])
def test_a_validator_network_address_is_bounded(address, error):
    with pytest.raises(type(error)) as raised:
        check(t.AddValidator(ID, address, SIG))
    assert raised.value == error
    with pytest.raises(FieldLengthMismatch):
        check(t.AddValidator(ID, "v", b"bad"))  # a proof of possession is a 64-byte signature


@pytest.mark.parametrize("certificate, error", [
    (Certificate(list(range(5)), [SIG] * 5), TooManyItems(field="certificate.signer_indices", count=5, max=COMMITTEE)),
    (Certificate([0], [SIG] * 5), TooManyItems(field="certificate.signatures", count=5, max=COMMITTEE)),
    (Certificate([0, 1], [SIG]), FieldLengthMismatch(field="certificate.signatures", length=1, expected=2)),
    (Certificate([0], [b"s" * 63]), FieldLengthMismatch(field="certificate.signatures[]", length=63, expected=64)),
])
def test_a_certificate_has_at_most_the_committee_size_of_64_byte_signatures(certificate, error):
    with pytest.raises(type(error)) as raised:
        check(t.ResolveChallenge(ID, "ChallengerWins", certificate))
    assert raised.value == error
