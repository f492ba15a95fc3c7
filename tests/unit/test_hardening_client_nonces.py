"""The nonce rule of `SomaClient.execute` for one key, on the validator answers it acts upon (no
network needed): used nonces stay used, unused ones are taken again first, unknown ones are
forgotten once nothing is in flight."""
import asyncio

from soma_ray.client import SomaClient, _KeyNonces
from soma_ray.node.replies import SubmitReply
from soma_ray.protocol import errors
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol.genesis import genesis, localnet_config, preset_keypair
from soma_ray.protocol.types import Account, SignedTransaction, Transaction, TransactionEffects, Transfer


def effects(nonce: int, error: errors.ProtocolError | None = None, fee: int = 1_000) -> SubmitReply:
    return SubmitReply(sequence=1, effects=TransactionEffects(
        transaction_digest=bytes(32), sender=bytes(32), nonce=nonce, fee_charged=fee,
        error=None if error is None else error.to_struct()))


def refused(error: errors.ProtocolError) -> SubmitReply:
    return SubmitReply.refused(error)


def in_flight(nonces: _KeyNonces, count: int) -> list[int]:
    return [nonces.take() for _ in range(count)]


def test_consecutive_nonces_from_the_account_and_none_reused_once_used():
    nonces = _KeyNonces()
    nonces.restart(5)
    assert in_flight(nonces, 3) == [5, 6, 7]
    nonces.settle(5, effects(5))
    nonces.settle(6, effects(6, errors.InsufficientBalance(required=9, available=1)))  # fee charged
    assert nonces.take() == 8


def test_a_nonce_left_unused_is_taken_again_first():
    nonces = _KeyNonces()
    nonces.restart(0)
    in_flight(nonces, 4)
    nonces.settle(2, refused(errors.MempoolFull(capacity=10)))
    nonces.settle(1, effects(1, errors.InsufficientFee(required=1_000, available=1), fee=0))
    assert in_flight(nonces, 3) == [1, 2, 4]


def test_bad_nonce_tells_where_the_account_is():
    nonces = _KeyNonces()
    nonces.restart(0)
    in_flight(nonces, 3)
    nonces.settle(0, refused(errors.BadNonce(expected=6, got=0)))  # another client used 0..5
    assert nonces.take() == 6


def test_with_nothing_in_flight_the_account_decides_and_unknown_fates_are_forgotten():
    nonces = _KeyNonces()
    nonces.restart(0)
    in_flight(nonces, 3)
    nonces.settle(0, effects(0))
    nonces.settle(2, refused(errors.MempoolFull(capacity=10)))  # 1 timed out: fate unknown
    nonces.in_flight = 0
    nonces.restart(0)  # a lagging replica: still past what this client saw used
    assert nonces.take() == 1


def test_a_nonce_another_pooled_transaction_holds_is_neither_reused_nor_counted_used():
    nonces = _KeyNonces()
    nonces.restart(0)
    in_flight(nonces, 2)
    nonces.settle(0, refused(errors.error_from_struct(errors.ExecutionError(
        code="NonceAlreadyPooled", fields=[("nonce", 0)]))))
    assert nonces.take() == 2  # 0 is the pooled transaction's: not handed back
    assert nonces.committed == 0


class _ReadsOutOfOrder:
    """Just what `execute` calls: each system-state read returns after those made later (as
    replies can over a network), and every submission is recorded and answered as executed."""

    def __init__(self):
        self.reads = 0
        self.submitted: list[Transaction] = []

    async def system_state(self) -> bytes:
        self.reads += 1
        await asyncio.sleep(0.05 / self.reads)
        return encode(genesis(localnet_config()).system())

    async def get_account(self, address: bytes) -> bytes:
        return encode(Account(balance=10**12, nonce=0))

    async def submit_batch(self, transactions: list[bytes]) -> list[SubmitReply]:
        signed = [decode(data, SignedTransaction).transaction for data in transactions]
        self.submitted += signed
        return [effects(tx.nonce) for tx in signed]


def test_the_first_concurrent_calls_of_a_fresh_client_take_nonces_in_call_order():
    # The first call reads the chain id; calls made beside it must not overtake each other while
    # it is read (a refused call's nonce is then the one the next call takes: docs/gateway.md).
    transport = _ReadsOutOfOrder()
    client = SomaClient(transport=transport)
    alice = preset_keypair("user", 0)

    async def calls():
        kinds = [Transfer(recipient=bytes(32), amount=amount) for amount in (1, 2, 3, 4)]
        return await asyncio.gather(*[client.execute(alice, kind, max_fee=1_000) for kind in kinds])

    asyncio.run(calls())
    assert [(tx.kind.amount, tx.nonce) for tx in transport.submitted] == [(1, 0), (2, 1), (3, 2), (4, 3)]
