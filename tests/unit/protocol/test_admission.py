"""Admission before ordering, and entries that fail it inside a checkpoint."""
import pytest

from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import (
    BadNonce, EpochMismatch, InvalidSignature, MalformedInput, NonCanonicalEncoding,
    TransactionTooLarge,
)
from soma_ray.protocol.execution import check_admission, sign_transaction
from soma_ray.protocol.types import ChangeEpoch, RevealModel, SignedTransaction, Transaction, Transfer


def _signed(net, kind, nonce=0, key=None):
    key = key or net.users[0]
    return sign_transaction(key, Transaction(sender=key.address, nonce=nonce, kind=kind, max_fee=1000))


def test_valid_transaction_is_admitted(net):
    data = encode(_signed(net, Transfer(net.users[1].address, 5)))
    assert check_admission(data, net.state, net.params).transaction.nonce == 0


def test_oversized_transaction_is_rejected_with_its_size(net):
    signed = _signed(net, RevealModel(b"m" * 32, b"k", bytes(net.params.max_tx_bytes)))
    data = encode(signed)
    with pytest.raises(TransactionTooLarge) as info:
        check_admission(data, net.state, net.params)
    assert (info.value.size, info.value.max) == (len(data), net.params.max_tx_bytes)


@pytest.mark.parametrize("data", [b"", b"\xff\x00", encode([1, 2, 3]), encode(ChangeEpoch(1, 2))])
def test_malformed_bytes_are_rejected(net, data):
    with pytest.raises(MalformedInput):
        check_admission(data, net.state, net.params)


def test_non_canonical_encoding_is_rejected(net):
    signed = _signed(net, Transfer(net.users[1].address, 5))
    data = encode(signed)
    sender = signed.transaction.sender
    canonical_nonce = b"\xc4\x20" + sender + b"\x00"
    assert data.count(canonical_nonce) == 1
    padded = data.replace(canonical_nonce, b"\xc4\x20" + sender + b"\xcc\x00")  # 0 as uint8
    with pytest.raises(NonCanonicalEncoding):
        check_admission(padded, net.state, net.params)


def test_tampered_transaction_fails_signature_check(net):
    signed = _signed(net, Transfer(net.users[1].address, 5))
    tampered = SignedTransaction(
        Transaction(signed.transaction.sender, 0, Transfer(net.users[1].address, 5_000), 1000),
        signed.public_key, signed.signature,
    )
    with pytest.raises(InvalidSignature) as info:
        check_admission(encode(tampered), net.state, net.params)
    assert info.value.reason == "the signature does not verify"


def test_signature_by_another_key_is_rejected(net):
    other = Keypair.from_secret(b"\x09" * 32)
    tx = Transaction(net.users[0].address, 0, Transfer(net.users[1].address, 5), 1000)
    with pytest.raises(InvalidSignature) as info:
        check_admission(encode(sign_transaction(other, tx)), net.state, net.params)
    assert info.value.reason == "the public key does not belong to the sender"


def test_stale_nonce_is_rejected_at_admission(net):
    net.ok(net.users[0], Transfer(net.users[1].address, 5))
    with pytest.raises(BadNonce) as info:
        check_admission(encode(_signed(net, Transfer(net.users[1].address, 5))), net.state, net.params)
    assert (info.value.expected, info.value.got) == (1, 0)


def test_checkpoint_records_inadmissible_entries_and_changes_nothing(net):
    tampered = encode(_signed(net, Transfer(net.users[1].address, 5))).replace(b"\x05", b"\x06", 1)
    pre = net.state.copy()
    _, effects = net.sim.make_checkpoint(extra=[b"junk", tampered, encode(ChangeEpoch(5, 10**9))])
    assert [e.error.code for e in effects] == ["MalformedInput", "InvalidSignature", "EpochMismatch"]
    assert effects[2].error == EpochMismatch(expected=1, got=5).to_struct()
    assert all(e.fee_charged == 0 for e in effects)
    assert net.state.state_root() == pre.state_root()
