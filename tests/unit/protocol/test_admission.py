"""Admission before ordering, and entries that fail it: left out by a proposer, refused in a
checkpoint by everyone else."""
import pytest

from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import DOMAIN_TX, encode
from soma_ray.protocol.errors import (
    BadNonce, EpochMismatch, InvalidSignature, MalformedInput, NonCanonicalEncoding,
    TransactionTooLarge, UnexecutableEntry,
)
from soma_ray.protocol.execution import check_admission, sign_transaction
from soma_ray.protocol.genesis import genesis, localnet_config
from soma_ray.protocol.types import ChangeEpoch, RevealModel, SignedTransaction, Transaction, Transfer


def _signed(net, kind, nonce=0, key=None, chain_id=None):
    key = key or net.users[0]
    tx = Transaction(sender=key.address, nonce=nonce, kind=kind, max_fee=1000)
    return sign_transaction(key, tx, net.sim.chain_id if chain_id is None else chain_id)


def test_valid_transaction_is_admitted(net):
    data = encode(_signed(net, Transfer(net.users[1].address, 5)))
    assert check_admission(data, net.state).transaction.nonce == 0


def test_oversized_transaction_is_rejected_with_its_size(net):
    signed = _signed(net, RevealModel(b"m" * 32, b"k" * 32, bytes(net.params.max_tx_bytes)))
    data = encode(signed)
    with pytest.raises(TransactionTooLarge) as info:
        check_admission(data, net.state)
    assert (info.value.size, info.value.max) == (len(data), net.params.max_tx_bytes)


@pytest.mark.parametrize("data", [b"", b"\xff\x00", encode([1, 2, 3]), encode(ChangeEpoch(1, 2))])
def test_malformed_bytes_are_rejected(net, data):
    with pytest.raises(MalformedInput):
        check_admission(data, net.state)


def test_non_canonical_encoding_is_rejected(net):
    signed = _signed(net, Transfer(net.users[1].address, 5))
    data = encode(signed)
    sender = signed.transaction.sender
    canonical_nonce = b"\xc4\x20" + sender + b"\x00"
    assert data.count(canonical_nonce) == 1
    padded = data.replace(canonical_nonce, b"\xc4\x20" + sender + b"\xcc\x00")  # 0 as uint8
    with pytest.raises(NonCanonicalEncoding):
        check_admission(padded, net.state)


def test_tampered_transaction_fails_signature_check(net):
    signed = _signed(net, Transfer(net.users[1].address, 5))
    tampered = SignedTransaction(
        Transaction(signed.transaction.sender, 0, Transfer(net.users[1].address, 5_000), 1000),
        signed.public_key, signed.signature,
    )
    with pytest.raises(InvalidSignature) as info:
        check_admission(encode(tampered), net.state)
    assert info.value.reason == "the signature does not verify on this network"


def test_signature_by_another_key_is_rejected(net):
    other = Keypair.from_secret(b"\x09" * 32)
    tx = Transaction(net.users[0].address, 0, Transfer(net.users[1].address, 5), 1000)
    with pytest.raises(InvalidSignature) as info:
        check_admission(encode(sign_transaction(other, tx, net.sim.chain_id)), net.state)
    assert info.value.reason == "the public key does not belong to the sender"


def test_stale_nonce_is_rejected_at_admission(net):
    net.ok(net.users[0], Transfer(net.users[1].address, 5))
    with pytest.raises(BadNonce) as info:
        check_admission(encode(_signed(net, Transfer(net.users[1].address, 5))), net.state)
    assert (info.value.expected, info.value.got) == (1, 0)


def test_a_transaction_signed_without_the_chain_id_verifies_nowhere(net):
    # The version-3 signature (DOMAIN_TX || transaction, no chain id). Another network's:
    # tests/unit/protocol/test_chain_not_free.py.
    alice = net.users[0]
    tx = Transaction(alice.address, 0, Transfer(net.users[1].address, 5), 1000)
    legacy = SignedTransaction(tx, alice.public_key, alice.sign(DOMAIN_TX, encode(tx)))
    with pytest.raises(InvalidSignature):
        check_admission(encode(legacy), net.state)


def test_a_proposer_leaves_inadmissible_entries_out_and_changes_nothing(net):
    tampered = encode(_signed(net, Transfer(net.users[1].address, 5))).replace(b"\x05", b"\x06", 1)
    pre = net.state.copy()
    _, effects = net.sim.make_checkpoint(extra=[b"junk", tampered, encode(ChangeEpoch(5, 10**9))])
    assert effects == []
    assert [e.error.code for e in net.sim.left_out] == ["MalformedInput", "InvalidSignature", "EpochMismatch"]
    assert net.sim.left_out[2].error == EpochMismatch(expected=1, got=5)
    assert not any(e.retry for e in net.sim.left_out)
    assert net.state.state_root() == pre.state_root()


@pytest.mark.parametrize("bad", ["junk", "tampered", "epoch", "stale", "ahead", "unpaid"])
def test_a_checkpoint_with_an_entry_that_cannot_execute_is_refused(net, bad):
    """The consensus rule validators and followers apply (build_checkpoint)."""
    good = encode(_signed(net, Transfer(net.users[1].address, 5)))
    entry = {
        "junk": b"junk",
        "tampered": good.replace(b"\x05", b"\x06", 1),
        "epoch": encode(ChangeEpoch(5, 10**9)),
        "stale": good,  # the same bytes again: its nonce is taken by the first
        "ahead": encode(_signed(net, Transfer(net.users[1].address, 5), nonce=2)),
        "unpaid": encode(_signed(net, Transfer(net.users[1].address, 5), key=Keypair.from_secret(b"\x07" * 32))),
    }[bad]
    state = genesis(localnet_config())
    with pytest.raises(UnexecutableEntry) as info:
        build_checkpoint(state, None, [good, entry], 1_000)
    assert info.value.index == 1
    assert info.value.error == {"junk": "MalformedInput", "tampered": "InvalidSignature", "epoch": "EpochMismatch",
                                "stale": "BadNonce", "ahead": "BadNonce", "unpaid": "InsufficientFee"}[bad]
