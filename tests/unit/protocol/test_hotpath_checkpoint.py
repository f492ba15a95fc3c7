"""build_checkpoint decodes each entry and the SystemState once per entry and hands them on:
what later entries see must still be the state as the earlier ones left it."""
import pytest

from soma_ray.protocol.checkpoint import build_checkpoint
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import TransactionTooLarge
from soma_ray.protocol.execution import check_admission, sign_transaction, transaction_digest
from soma_ray.protocol.types import ChangeEpoch, RevealModel, SignedTransaction, Transaction, Transfer


def _signed(net, key, kind, nonce, max_fee=1000) -> bytes:
    return encode(sign_transaction(key, Transaction(key.address, nonce, kind, max_fee)))


def test_failing_entries_between_transfers_leave_no_trace(net):
    alice, bob = net.users[0], net.users[1]
    first, second = _signed(net, alice, Transfer(bob.address, 5), 0), _signed(net, alice, Transfer(bob.address, 7), 1)
    overspend = _signed(net, bob, Transfer(alice.address, 10**18), 0)  # fails in execution: fee only
    tampered = _signed(net, alice, Transfer(bob.address, 9), 2).replace(b"\x09", b"\x08", 1)
    stale = _signed(net, alice, Transfer(bob.address, 1), 0)
    reference = net.state.copy()
    _, expected = build_checkpoint(reference, None, [first, overspend, second], 1_000)

    _, effects = build_checkpoint(net.state, None, [b"junk", first, tampered, overspend, stale, second], 1_000)
    assert [e.error.code if e.error else None for e in effects] == [
        "MalformedInput", None, "InvalidSignature", expected[1].error.code, "BadNonce", None,
    ]
    assert [e for e in effects if e.fee_charged] == expected
    assert net.state.items() == reference.items()
    assert net.state.system().fees_this_epoch == 3 * net.params.base_fee


def test_a_transaction_after_change_epoch_sees_the_new_system_state(net):
    epoch = net.state.system().epoch
    fees_before = net.state.system().fees_this_epoch
    net.ok(net.users[0], Transfer(net.users[1].address, 1))
    assert net.state.system().fees_this_epoch == fees_before + net.params.base_fee
    change = encode(ChangeEpoch(epoch=epoch + 1, timestamp_ms=net.sim.timestamp_ms + 1_000))
    transfer = _signed(net, net.users[0], Transfer(net.users[1].address, 1), 1)
    _, effects = net.sim.make_checkpoint(net.sim.timestamp_ms + 1_000, [change, transfer, change])
    assert [e.error.code if e.error else None for e in effects] == [None, None, "DuplicateEpochChange"]
    system = net.state.system()
    assert (system.epoch, system.fees_this_epoch) == (epoch + 1, net.params.base_fee)


def test_an_entry_is_decoded_before_its_size_is_checked_unlike_at_admission(net):
    oversized = _signed(net, net.users[0], RevealModel(b"m" * 32, b"k", bytes(net.params.max_tx_bytes)), 0)
    garbage = b"\xff" * (net.params.max_tx_bytes + 1)
    with pytest.raises(TransactionTooLarge):
        check_admission(garbage, net.state, net.params)
    _, effects = net.sim.make_checkpoint(extra=[garbage, oversized])
    assert [e.error.code for e in effects] == ["MalformedInput", "TransactionTooLarge"]


@pytest.mark.parametrize("already_verified", [False, True])
def test_effects_name_the_transaction_digest_whether_or_not_the_signature_was_checked(net, already_verified):
    data = _signed(net, net.users[0], Transfer(net.users[1].address, 5), 0)
    verified = {data} if already_verified else set()
    _, [effects] = build_checkpoint(net.state, None, [data], 1_000, verified)
    assert effects.error is None
    assert effects.transaction_digest == transaction_digest(decode(data, SignedTransaction).transaction)
