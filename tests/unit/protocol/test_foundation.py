"""Encoding, digests, keys, certificates, errors and the State container."""
import hashlib

import pytest

from soma_ray.protocol.crypto import (
    Certificate, Committee, CommitteeMember, Keypair, address_of, sign_certificate,
    verify_certificate, verify_signature,
)
from soma_ray.protocol.encoding import DOMAIN_TX, DOMAIN_VOTE, decode, digest, encode
from soma_ray.protocol.errors import (
    BadNonce, ExecutionError, InvalidCertificate, MalformedInput, UnknownProtocolError, error_from_struct,
)
from soma_ray.protocol.targets import ZeroEmbedding
from soma_ray.protocol.state import ACCOUNT, MODEL, State
from soma_ray.protocol.types import Account, Transaction, Transfer


def _keys(n):
    return [Keypair.from_secret(bytes([i + 1]) * 32) for i in range(n)]


def test_encoding_round_trips_and_is_positional():
    tx = Transaction(sender=b"s" * 32, nonce=3, kind=Transfer(recipient=b"r" * 32, amount=7), max_fee=9)
    data = encode(tx)
    assert decode(data, Transaction) == tx
    # array_like: the first byte is a 4-element msgpack fixarray, not a map.
    assert data[0] == 0x94


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x93\x01\x02\x03", encode([1, 2, 3, 4, 5])])
def test_decode_of_malformed_bytes_raises_typed_error(garbage):
    with pytest.raises(MalformedInput) as info:
        decode(garbage, Transaction)
    assert info.value.reason


def test_digest_is_blake2b_of_domain_and_encoding():
    account = Account(balance=5, nonce=1)
    expected = hashlib.blake2b(b"soma/tx/v1" + bytes([0x92, 0x05, 0x01]), digest_size=32).digest()
    assert digest(DOMAIN_TX, account) == expected
    assert digest(DOMAIN_VOTE, account) != expected


def test_keypair_text_round_trip_and_address():
    key = _keys(1)[0]
    again = Keypair.from_text(key.to_text())
    assert again.secret == key.secret and again.address == key.address
    assert key.address == hashlib.blake2b(b"\x00" + key.public_key, digest_size=32).digest()
    assert address_of(key.public_key) == key.address
    with pytest.raises(MalformedInput):
        Keypair.from_text("not a key")
    with pytest.raises(MalformedInput):
        Keypair.from_secret(b"short")


def test_signature_is_bound_to_its_domain():
    key = _keys(1)[0]
    signature = key.sign(DOMAIN_TX, b"message")
    assert verify_signature(key.public_key, DOMAIN_TX, b"message", signature)
    assert not verify_signature(key.public_key, DOMAIN_VOTE, b"message", signature)
    assert not verify_signature(key.public_key, DOMAIN_TX, b"other", signature)
    assert not verify_signature(key.public_key, DOMAIN_TX, b"message", b"x" * 10)


def _committee(keys, powers):
    members = [CommitteeMember(k.address, k.public_key, p) for k, p in zip(keys, powers)]
    return Committee(epoch=0, members=members)


def test_certificate_with_quorum_verifies():
    keys = _keys(4)
    committee = _committee(keys, [2500] * 4)
    cert = sign_certificate(committee, keys[:3], DOMAIN_VOTE, b"m")
    verify_certificate(committee, DOMAIN_VOTE, b"m", cert)


def test_certificate_checks_the_quorum_it_is_given():
    keys = _keys(4)
    committee = _committee(keys, [2500] * 4)
    cert = sign_certificate(committee, keys[:3], DOMAIN_VOTE, b"m")
    with pytest.raises(InvalidCertificate, match="below the quorum 7501"):
        verify_certificate(committee, DOMAIN_VOTE, b"m", cert, quorum=7_501)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda c, s: Certificate([0, 0, 1], [s[0], s[0], s[1]]), "duplicate"),
        (lambda c, s: Certificate([0, 1, 7], [s[0], s[1], s[2]]), "unknown"),
        (lambda c, s: Certificate([0, 1, 2], [s[0], s[1], s[0]]), "bad signature"),
        (lambda c, s: Certificate([0, 1], [s[0], s[1]]), "below the quorum"),
        (lambda c, s: Certificate([0, 1, 2], [s[0], s[1]]), "length"),
    ],
)
def test_bad_certificates_are_rejected_with_reason(make, reason):
    keys = _keys(4)
    committee = _committee(keys, [2500] * 4)
    sigs = [k.sign(DOMAIN_VOTE, b"m") for k in keys]
    with pytest.raises(InvalidCertificate) as info:
        verify_certificate(committee, DOMAIN_VOTE, b"m", make(committee, sigs))
    assert reason in info.value.reason


def test_error_carries_fields_and_encodes():
    error = BadNonce(expected=4, got=2)
    assert (error.expected, error.got, error.code) == (4, 2, "BadNonce")
    assert "4" in error.message and "2" in error.message
    assert error.to_struct().fields == [("expected", 4), ("got", 2)]
    with pytest.raises(TypeError):
        BadNonce(expected=1)


def test_state_root_is_order_independent_and_reverts():
    a, b = State(), State()
    a.put_raw(ACCOUNT + b"1", b"x")
    a.put_raw(MODEL + b"2", b"y")
    b.put_raw(MODEL + b"2", b"y")
    b.put_raw(ACCOUNT + b"1", b"x")
    assert a.state_root() == b.state_root() != State().state_root()
    root = a.state_root()
    a.begin()
    a.put_raw(ACCOUNT + b"1", b"changed")
    a.put_raw(ACCOUNT + b"3", b"new")
    a.delete(MODEL, b"2")
    a.rollback()
    assert a.state_root() == root and a.items() == b.items()


def test_nested_savepoint_commit_then_outer_rollback_undoes_all():
    state = State()
    state.begin()
    state.begin()
    state.put_account(b"x", Account(balance=1))
    state.commit()
    state.rollback()
    assert len(state) == 0 and state.state_root() == bytes(32)


def test_changes_since_mark_and_restore_from_items():
    state = State()
    state.put_account(b"x", Account(balance=1))
    state.put_account(b"y", Account(balance=2))
    state.mark()
    state.put_account(b"x", Account(balance=3))
    state.put_account(b"y", Account())
    assert state.changes() == [(ACCOUNT + b"x", encode(Account(3, 0))), (ACCOUNT + b"y", None)]
    restored = State.from_items(state.items())
    assert restored.state_root() == state.state_root()
    assert restored.account(b"x").balance == 3 and restored.ids(ACCOUNT) == [b"x"]


def test_error_round_trips_through_effects_struct():
    for error in [BadNonce(expected=4, got=2), InvalidCertificate(reason="x"), ZeroEmbedding()]:
        struct = decode(encode(error.to_struct()), ExecutionError)
        assert error_from_struct(struct) == error
    unknown = error_from_struct(ExecutionError(code="FromTheFuture", fields=[("a", 1)]))
    assert isinstance(unknown, UnknownProtocolError) and unknown.code == "UnknownProtocolError"
    assert unknown.error_code == "FromTheFuture" and "('a', 1)" in unknown.detail


def test_generated_keypairs_are_distinct_and_sign():
    first, second = Keypair.generate(), Keypair.generate()
    assert first.secret != second.secret and first.address != second.address
    assert verify_signature(first.public_key, DOMAIN_TX, b"m", first.sign(DOMAIN_TX, b"m"))
