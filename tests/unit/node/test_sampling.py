"""Sampling audits, the pure parts (soma_ray/node/sampling.py): who audits a fill, what a
checkpoint filled, and one validator's bookkeeping (low-water mark, coverage, latency)."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from soma_ray.node.sampling import (
    FALLBACK_RANK, SampledRecord, SamplingBook, SamplingLedger, audit_order, coverage, fills_in,
    member_index, percentile, sampling_auditors,
)
from soma_ray.protocol.crypto import Committee, CommitteeMember, Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.types import (
    ChangeEpoch, Checkpoint, RevealSubmission, Transaction, TransactionEffects, Transfer,
)

KEYS = [Keypair.from_secret(bytes([i + 1]) * 32) for i in range(4)]


def committee(powers=(2500, 2500, 2500, 2500)) -> Committee:
    return Committee(epoch=0, members=[CommitteeMember(k.address, k.public_key, p) for k, p in zip(KEYS, powers)])


def target_id(i: int) -> bytes:
    return i.to_bytes(4, "little") * 8


@given(st.binary(min_size=32, max_size=32), st.integers(0, 1_000))
def test_the_order_is_a_permutation_every_validator_computes_alike(target, epoch):
    order = audit_order(target, epoch, committee())
    assert sorted(order) == [0, 1, 2, 3]
    assert order == audit_order(bytes(target), epoch, committee())
    assert sampling_auditors(target, epoch, committee()) == order[:1]
    assert sampling_auditors(target, epoch, committee(), replicas=2) == order[:2]
    assert FALLBACK_RANK == 1


def test_the_work_is_spread_by_voting_power():
    equal = Counter(sampling_auditors(target_id(i), 3, committee())[0] for i in range(4_000))
    assert set(equal) == {0, 1, 2, 3} and all(800 <= n <= 1_200 for n in equal.values()), equal
    skewed = Counter(sampling_auditors(target_id(i), 3, committee((7000, 1000, 1000, 1000)))[0]
                     for i in range(4_000))
    assert 2_500 <= skewed[0] <= 3_100 and all(250 <= skewed[i] <= 550 for i in (1, 2, 3)), skewed
    # A member without voting power is drawn last, never first.
    assert all(audit_order(target_id(i), 0, committee((5000, 0, 5000, 0)))[2:] == [1, 3] for i in range(50))
    # Another epoch draws again.
    assert any(audit_order(target_id(i), 0, committee()) != audit_order(target_id(i), 1, committee())
               for i in range(10))
    assert member_index(committee(), KEYS[2].address) == 2 and member_index(committee(), b"x" * 32) is None


def test_fills_are_the_reveals_that_executed():
    def signed(kind, nonce):
        return encode(sign_transaction(KEYS[0], Transaction(KEYS[0].address, nonce, kind, 1_000), b"\x00" * 32))

    reveal = RevealSubmission(b"\x01" * 32, b"h" * 32, 5, "http://x/d", b"m" * 32, b"e" * 32, 1, b"n")
    failed = RevealSubmission(b"\x02" * 32, b"h" * 32, 5, "http://x/d", b"m" * 32, b"e" * 32, 1, b"n")
    entries = [signed(reveal, 0), signed(failed, 1), signed(Transfer(KEYS[1].address, 5), 2),
               encode(ChangeEpoch(epoch=1, timestamp_ms=5))]
    effects = [TransactionEffects(b"", KEYS[0].address, 0, 1_000),
               TransactionEffects(b"", KEYS[0].address, 1, 1_000, ExecutionError("CommitmentMismatch", [])),
               TransactionEffects(b"", KEYS[0].address, 2, 1_000), TransactionEffects(b"", bytes(32), 0, 0)]
    [fill] = fills_in(Checkpoint(3, 7, b"", 12_345, entries, b"", b""), effects)
    assert fill == (b"\x01" * 32, 7, 3, 12_345)


def record(outcome, latency_ms=1_000, sequence=0):
    return SampledRecord(b"t" * 32, b"s" * 32, sequence, 0, outcome, latency_ms=latency_ms, verdict_epoch=0)


def test_the_mark_waits_for_the_oldest_unsettled_fill_and_counts_each_once():
    book = SamplingBook()
    book.followed(0, fills=0)
    book.followed(1, fills=2, assigned=["a"])
    book.followed(2, fills=1, assigned=["b"])
    book.followed(3, fills=1)
    assert book.advance() and book.ledger.mark == 0
    book.settle(2, "b", record("holds"))
    assert not book.advance() and book.ledger.mark == 0 and book.settled(2) and not book.settled(1)
    book.settle(1, "a", record("ScoreFraud"))
    assert book.advance() and book.ledger.mark == 3
    ledger = book.ledger
    assert (ledger.fills, ledger.assigned, ledger.audited, ledger.frauds) == (4, 2, 2, 1)
    # A restart resumes after the mark: what it sees again below it is ignored.
    again = SamplingBook(SamplingLedger(**{f: getattr(ledger, f) for f in ledger.__struct_fields__}))
    again.followed(3, fills=1, assigned=["c"])
    assert not again.advance() and again.ledger.fills == 4
    again.followed(4, fills=1, assigned=["d"])
    again.settle(4, "d", record("missed", latency_ms=None))
    again.settle(4, "d", record("holds"))  # settled once only
    assert again.advance() and (again.ledger.assigned, again.ledger.missed, again.ledger.audited) == (3, 1, 2)


def test_coverage_and_latency_over_several_validators():
    a, b = SamplingBook(), SamplingBook()
    for book, outcomes in ((a, ["holds", "holds", "moot"]), (b, ["DataFraud", "missed"])):
        for i, outcome in enumerate(outcomes):
            book.followed(i, fills=1, assigned=[i])
            book.settle(i, i, record(outcome, latency_ms=1_000 * (i + 1)))
        book.advance()
    found = coverage([a.ledger, b.ledger])
    assert (found.fills, found.assigned, found.audited, found.frauds, found.moot, found.missed) == (3, 5, 3, 1, 1, 1)
    assert found.ratio == 3 / 4  # the moot fill needed no audit; the missed one did
    assert (found.latency_p50_s, found.latency_p99_s) == (1.0, 2.0)
    assert coverage([]).ratio is None and percentile([], 50) is None


@settings(max_examples=50)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=50), st.integers(1, 100))
def test_percentile_is_a_member_at_the_nearest_rank(values, q):
    found = percentile(values, q)
    assert found in values
    assert sum(v <= found for v in values) >= len(values) * q / 100
