"""build_checkpoint (and the proposer's propose_checkpoint) decode each entry and the
SystemState once per entry and hand them on: what later entries see must still be the state as
the earlier ones left it, and what a proposer leaves out leaves no trace."""
import pytest

from soma_ray.protocol.checkpoint import build_checkpoint, propose_checkpoint
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.errors import CheckpointTooLarge, TransactionTooLarge
from soma_ray.protocol.execution import check_admission, sign_transaction, transaction_digest
from soma_ray.protocol.types import ChangeEpoch, RevealModel, SignedTransaction, Transaction, Transfer


def _signed(net, key, kind, nonce, max_fee=1000) -> bytes:
    return encode(sign_transaction(key, Transaction(key.address, nonce, kind, max_fee), net.sim.chain_id))


def test_entries_left_out_between_transfers_leave_no_trace(net):
    alice, bob = net.users[0], net.users[1]
    first, second = _signed(net, alice, Transfer(bob.address, 5), 0), _signed(net, alice, Transfer(bob.address, 7), 1)
    overspend = _signed(net, bob, Transfer(alice.address, 10**18), 0)  # fails in execution: fee only
    tampered = _signed(net, alice, Transfer(bob.address, 9), 2).replace(b"\x09", b"\x08", 1)
    stale = _signed(net, alice, Transfer(bob.address, 1), 0)
    reference = net.state.copy()
    _, expected = build_checkpoint(reference, None, [first, overspend, second], 1_000)

    checkpoint, effects, left_out = propose_checkpoint(
        net.state, None, [b"junk", first, tampered, overspend, stale, second], 1_000)
    assert [e.error.code for e in left_out] == ["MalformedInput", "InvalidSignature", "BadNonce"]
    assert checkpoint.transactions == [first, overspend, second] and effects == expected
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
    assert [e.error.code if e.error else None for e in effects] == [None, None]
    assert [e.error.code for e in net.sim.left_out] == ["DuplicateEpochChange"]
    system = net.state.system()
    assert (system.epoch, system.fees_this_epoch) == (epoch + 1, net.params.base_fee)


def test_an_entry_is_decoded_before_its_size_is_checked_unlike_at_admission(net):
    oversized = _signed(net, net.users[0], RevealModel(b"m" * 32, b"k" * 32, bytes(net.params.max_tx_bytes)), 0)
    garbage = b"\xff" * (net.params.max_tx_bytes + 1)
    with pytest.raises(TransactionTooLarge):
        check_admission(garbage, net.state)
    _, effects = net.sim.make_checkpoint(extra=[garbage, oversized])
    assert effects == [] and [e.error.code for e in net.sim.left_out] == ["MalformedInput", "TransactionTooLarge"]


def test_the_proposer_fills_up_to_the_byte_cap_and_validators_refuse_more(make_net):
    net = make_net(max_checkpoint_bytes=1_000)
    alice, bob = net.users[0], net.users[1]
    transfers = [_signed(net, alice, Transfer(bob.address, 1), nonce) for nonce in range(6)]
    size = len(transfers[0])
    fits = 1_000 // size
    assert 1 <= fits < 6 and all(len(t) == size for t in transfers)
    reference = net.state.copy()
    checkpoint, _, left_out = propose_checkpoint(net.state.copy(), None, transfers, 1_000)
    assert checkpoint.transactions == transfers[:fits]
    assert [(e.error, e.retry) for e in left_out][0] == (CheckpointTooLarge(size=(fits + 1) * size, max=1_000), True)
    assert all(e.retry for e in left_out)  # the later nonces wait for the next checkpoint
    with pytest.raises(CheckpointTooLarge):
        build_checkpoint(reference, None, transfers[:fits + 1], 1_000)
    for nonce in range(6):  # the simulator's proposer drains them over checkpoints
        net.sim.submit(transfers[nonce])
    sizes = [len(net.sim.make_checkpoint()[1]) for _ in range(3)]
    assert sizes[0] == fits and sum(sizes) == 6 and net.sim.mempool == []


@pytest.mark.parametrize("already_verified", [False, True])
def test_effects_name_the_transaction_digest_whether_or_not_the_signature_was_checked(net, already_verified):
    data = _signed(net, net.users[0], Transfer(net.users[1].address, 5), 0)
    verified = {data} if already_verified else set()
    _, [effects] = build_checkpoint(net.state, None, [data], 1_000, verified)
    assert effects.error is None
    assert effects.transaction_digest == transaction_digest(decode(data, SignedTransaction).transaction)
