"""The validator's mempool as a pure class: admission limits, typed refusals that keep nothing,
resubmission, readiness by nonce, staleness, expiry by the TTL, and the faucet's nonces; then
model-based properties over random admit/resubmit/remove/expire/commit sequences."""
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from soma_ray.node.mempool import Mempool, NonceAlreadyPooled, Pending
from soma_ray.protocol.errors import (
    ExecutionError, MempoolBytesFull, MempoolFull, NonceTooFarAhead, ProtocolError, SenderBytesFull,
    SenderPoolFull,
)

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def digest(sender: bytes, nonce: int, variant: int = 0) -> bytes:
    return sender[:1] + nonce.to_bytes(4, "big") + bytes([variant])


def data(sender: bytes, nonce: int, variant: int = 0, version: int = 0) -> bytes:
    return b"tx:" + digest(sender, nonce, variant) + bytes([version])


def admit(pool: Mempool, sender: bytes, nonce: int, *, variant: int = 0, version: int = 0,
          account_nonce: int = 0, now: float = 0.0) -> bool:
    return pool.admit(digest(sender, nonce, variant), sender, nonce, data(sender, nonce, variant, version),
                      account_nonce, now)


def snapshot(pool: Mempool):
    """Everything observable about a pool, to check that a refusal changed nothing."""
    return ([(d, pool.get(d)) for d in pool], len(pool), set(pool.verified),
            {s: pool.sender_pending(s) for s in (A, B, C)}, pool.next_expiry(0.0),
            pool.ready(lambda s: 0, 1000))


# ---------------------------------------------------------------------- admission


def test_admit_pools_a_new_transaction_and_its_verified_bytes():
    pool = Mempool(capacity=4, per_sender=2, ttl_s=10.0)
    assert admit(pool, A, 0, now=1.5) is True
    assert len(pool) == 1 and digest(A, 0) in pool and digest(A, 1) not in pool
    assert list(pool) == [digest(A, 0)]
    assert pool.get(digest(A, 0)) == Pending(A, 0, data(A, 0), 1.5)
    assert data(A, 0) in pool.verified and len(pool.verified) == 1
    assert pool.sender_pending(A) == 1 and pool.sender_pending(B) == 0


def test_verified_is_a_read_only_view_that_follows_the_pool():
    pool = Mempool(capacity=4, per_sender=2, ttl_s=10.0)
    view = pool.verified
    admit(pool, A, 0)
    assert set(view) == {data(A, 0)}
    assert not hasattr(view, "add") and not hasattr(view, "discard")
    pool.remove(digest(A, 0))
    assert data(A, 0) not in view and len(view) == 0


def test_resubmission_replaces_the_bytes_keeps_time_and_order_and_is_never_refused():
    pool = Mempool(capacity=2, per_sender=1, ttl_s=10.0)
    admit(pool, A, 0, now=1.0)
    admit(pool, B, 0, now=2.0)  # the pool is full, and each sender at its limit
    # Resubmitted later, with other bytes (another signature), an account nonce it is far past
    # and an earlier clock: still not refused, nothing grows.
    assert pool.admit(digest(A, 0), A, 0, data(A, 0, version=1), account_nonce=0, now=0.5) is False
    assert len(pool) == 2 and pool.sender_pending(A) == 1
    assert pool.get(digest(A, 0)) == Pending(A, 0, data(A, 0, version=1), 1.0)
    assert pool.verified == {data(A, 0, version=1), data(B, 0)}
    assert [d for d, _ in pool.expired(12.0)] == [digest(A, 0), digest(B, 0)]  # first admission order


def test_sender_pool_full_keeps_nothing():
    pool = Mempool(capacity=10, per_sender=2, ttl_s=10.0)
    admit(pool, A, 0)
    admit(pool, A, 1)
    before = snapshot(pool)
    with pytest.raises(SenderPoolFull) as refused:
        admit(pool, A, 2, now=1.0)
    assert refused.value.values() == {"sender_pending": 2, "limit": 2}
    assert snapshot(pool) == before and digest(A, 2) not in pool


def test_nonce_too_far_ahead_names_the_window_and_keeps_nothing():
    pool = Mempool(capacity=10, per_sender=3, ttl_s=10.0)
    before = snapshot(pool)
    with pytest.raises(NonceTooFarAhead) as refused:
        admit(pool, A, 8, account_nonce=5)
    assert refused.value.values() == {"account_nonce": 5, "max": 7, "got": 8}
    assert snapshot(pool) == before
    assert admit(pool, A, 7, account_nonce=5) is True  # the last one inside the window


def test_a_second_transaction_with_a_pooled_nonce_is_refused_and_the_first_kept():
    pool = Mempool(capacity=10, per_sender=3, ttl_s=10.0)
    admit(pool, A, 0, now=1.0)
    before = snapshot(pool)
    with pytest.raises(NonceAlreadyPooled) as refused:
        admit(pool, A, 0, variant=1, now=2.0)
    assert refused.value.values() == {"nonce": 0}
    assert isinstance(refused.value, ProtocolError) and refused.value.code == "NonceAlreadyPooled"
    assert "nonce 0" in refused.value.message and "already pooled" in refused.value.message
    assert snapshot(pool) == before and digest(A, 0, variant=1) not in pool
    assert refused.value.to_struct() == ExecutionError(code="NonceAlreadyPooled", fields=[("nonce", 0)])
    assert admit(pool, B, 0, variant=1, now=2.0) is True  # another sender's nonce 0 is free


def test_mempool_full_keeps_nothing():
    pool = Mempool(capacity=2, per_sender=5, ttl_s=10.0)
    admit(pool, A, 0)
    admit(pool, B, 0)
    before = snapshot(pool)
    with pytest.raises(MempoolFull) as refused:
        admit(pool, C, 0)
    assert refused.value.values() == {"capacity": 2}
    assert snapshot(pool) == before


SIZE = len(data(A, 0))  # every test transaction's bytes


def test_a_sender_over_its_byte_budget_is_refused_keeping_nothing():
    pool = Mempool(capacity=10, per_sender=10, ttl_s=10.0, sender_max_bytes=2 * SIZE)
    admit(pool, A, 0)
    admit(pool, A, 1)
    assert (pool.sender_bytes(A), pool.pooled_bytes) == (2 * SIZE, 2 * SIZE)
    before = snapshot(pool)
    with pytest.raises(SenderBytesFull) as refused:
        admit(pool, A, 2)
    assert refused.value.values() == {"size": SIZE, "sender_bytes": 2 * SIZE, "limit": 2 * SIZE}
    assert snapshot(pool) == before
    assert admit(pool, B, 0) is True  # another sender still has room
    pool.remove(digest(A, 0))
    assert pool.sender_bytes(A) == SIZE and admit(pool, A, 2) is True


def test_a_pool_over_its_byte_budget_is_refused_keeping_nothing():
    pool = Mempool(capacity=10, per_sender=10, ttl_s=10.0, max_bytes=3 * SIZE)
    for sender in (A, B, C):
        admit(pool, sender, 0)
    before = snapshot(pool)
    with pytest.raises(MempoolBytesFull) as refused:
        admit(pool, A, 1)
    assert refused.value.values() == {"size": SIZE, "pooled_bytes": 3 * SIZE, "limit": 3 * SIZE}
    assert snapshot(pool) == before
    # A resubmission is never refused, and what leaves frees its bytes.
    assert pool.admit(digest(B, 0), B, 0, data(B, 0, version=1), 0, 1.0) is False
    assert pool.expired(11.0) and (pool.pooled_bytes, pool.sender_bytes(A)) == (0, 0)


def test_the_counts_come_before_the_bytes():
    pool = Mempool(capacity=1, per_sender=1, ttl_s=10.0, max_bytes=SIZE, sender_max_bytes=SIZE)
    admit(pool, A, 0)
    with pytest.raises(SenderPoolFull):
        admit(pool, A, 1)
    with pytest.raises(MempoolFull):
        admit(pool, B, 0)


@pytest.mark.parametrize("nonce, account_nonce, expected", [
    (5, 0, SenderPoolFull(sender_pending=2, limit=2)),  # also too far ahead, and the pool full
    (1, 0, SenderPoolFull(sender_pending=2, limit=2)),  # also a pooled nonce
])
def test_a_full_sender_is_named_first(nonce, account_nonce, expected):
    pool = Mempool(capacity=2, per_sender=2, ttl_s=10.0)
    admit(pool, A, 0)
    admit(pool, A, 1)
    with pytest.raises(SenderPoolFull) as refused:
        pool.admit(b"other", A, nonce, b"other", account_nonce, 0.0)
    assert refused.value == expected


def test_too_far_ahead_comes_before_a_pooled_nonce_and_both_before_a_full_pool():
    pool = Mempool(capacity=1, per_sender=2, ttl_s=10.0)
    admit(pool, A, 0)  # the pool is now full
    with pytest.raises(NonceTooFarAhead):
        admit(pool, B, 2)
    with pytest.raises(NonceAlreadyPooled):
        admit(pool, A, 0, variant=1)
    with pytest.raises(MempoolFull):
        admit(pool, A, 1)


def test_time_going_back_is_refused_and_keeps_nothing():
    pool = Mempool(capacity=4, per_sender=2, ttl_s=10.0)
    admit(pool, A, 0, now=5.0)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        admit(pool, B, 0, now=4.0)
    assert snapshot(pool) == before
    assert admit(pool, B, 0, now=5.0) is True  # the same instant is fine


# ---------------------------------------------------------------------- removal


def test_remove_frees_the_slot_the_nonce_and_the_verified_bytes():
    pool = Mempool(capacity=1, per_sender=1, ttl_s=10.0)
    admit(pool, A, 0, now=3.0)
    assert pool.remove(digest(A, 0)) == Pending(A, 0, data(A, 0), 3.0)
    assert len(pool) == 0 and pool.sender_pending(A) == 0 and len(pool.verified) == 0
    assert pool.remove(digest(A, 0)) is None
    assert admit(pool, A, 0, variant=1, now=4.0) is True  # the nonce is free for another one


# ---------------------------------------------------------------------- ready and stale


def test_ready_follows_each_account_nonce_without_gaps_senders_in_byte_order():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    for sender, nonce in [(B, 3), (B, 1), (A, 4), (B, 2), (C, 0), (A, 2), (C, 2)]:
        admit(pool, sender, nonce)
    asked = []

    def account_nonce(sender):
        asked.append(sender)
        return {A: 2, B: 1, C: 0}[sender]

    # A: 2, then a gap at 3 holds 4 back; B: 1, 2, 3 (arrived out of order); C: 0, gap at 1.
    assert pool.ready(account_nonce, 100) == [data(A, 2), data(B, 1), data(B, 2), data(B, 3), data(C, 0)]
    assert asked == [A, B, C]  # once per sender
    assert len(pool) == 7  # nothing removed


def test_ready_stops_at_the_limit():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    for sender, nonce in [(A, 0), (A, 1), (B, 0)]:
        admit(pool, sender, nonce)
    assert pool.ready(lambda s: 0, 2) == [data(A, 0), data(A, 1)]
    assert pool.ready(lambda s: 0, 0) == []
    assert pool.ready(lambda s: 5, 10) == []  # every nonce is below the accounts'


def test_ready_hands_out_the_latest_bytes_of_a_resubmission():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    admit(pool, A, 0)
    admit(pool, A, 0, version=3)
    assert pool.ready(lambda s: 0, 10) == [data(A, 0, version=3)]


def test_stale_lists_nonces_below_the_account_in_admission_order_without_removing():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    for sender, nonce in [(B, 0), (A, 3), (A, 1), (B, 2), (A, 0)]:
        admit(pool, sender, nonce)
    asked = []

    def account_nonce(sender):
        asked.append(sender)
        return {A: 2, B: 1}[sender]

    assert pool.stale(account_nonce) == [(digest(B, 0), 1), (digest(A, 1), 2), (digest(A, 0), 2)]
    assert sorted(asked) == [A, B]
    assert len(pool) == 5


# ---------------------------------------------------------------------- expiry


def test_expired_removes_the_ones_pooled_for_the_ttl_oldest_first():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    admit(pool, B, 0, now=1.0)
    admit(pool, A, 0, now=2.0)
    admit(pool, A, 1, now=3.0)
    assert pool.expired(11.9) == [(digest(B, 0), Pending(B, 0, data(B, 0), 1.0))]
    assert pool.expired(11.9) == []
    assert [d for d, _ in pool.expired(12.0)] == [digest(A, 0)]  # exactly ttl_s old: expired
    assert len(pool) == 1 and pool.sender_pending(A) == 1 and pool.verified == {data(A, 1)}


def test_next_expiry_counts_down_to_the_oldest_and_is_none_when_empty():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    assert pool.next_expiry(0.0) is None
    admit(pool, A, 0, now=1.0)
    admit(pool, B, 0, now=4.0)
    assert pool.next_expiry(1.0) == 10.0
    assert pool.next_expiry(6.0) == 5.0
    assert pool.next_expiry(50.0) == 0.0  # overdue: at once, never negative
    pool.expired(11.0)
    assert pool.next_expiry(11.0) == 3.0


# ---------------------------------------------------------------------- the faucet's nonces


def test_the_faucet_takes_nonces_only_when_admitted_and_gets_expired_ones_back():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    assert pool.faucet_nonce(account_nonce=3) == 3
    assert pool.faucet_nonce(account_nonce=3) == 3  # asking takes nothing (a refused one)
    pool.faucet_admitted(3)
    pool.faucet_admitted(4)
    assert pool.faucet_nonce(account_nonce=3) == 5  # past the pooled ones
    assert pool.faucet_nonce(account_nonce=9) == 9  # the account moved on (another validator)
    pool.faucet_expired(4)
    pool.faucet_expired(4)
    assert pool.faucet_nonce(account_nonce=3) == 4
    pool.faucet_expired(6)  # handing back a later one keeps the lowest
    assert pool.faucet_nonce(account_nonce=3) == 4


def test_the_faucet_skips_nonces_its_key_still_has_pooled():
    pool = Mempool(capacity=20, per_sender=5, ttl_s=10.0)
    for nonce in (0, 1, 2):
        admit(pool, A, nonce, now=float(nonce))
        pool.faucet_admitted(nonce)
    pool.expired(10.0)  # nonce 0 expires, 1 and 2 are still pooled
    pool.faucet_expired(0)
    assert pool.faucet_nonce(0, sender=A) == 0
    admit(pool, A, 0, variant=1, now=10.0)
    pool.faucet_admitted(0)
    assert pool.faucet_nonce(0) == 1  # without the sender: a pooled nonce (NonceAlreadyPooled)
    assert pool.faucet_nonce(0, sender=A) == 3


# ---------------------------------------------------------------------- properties

SENDERS = (A, B, C)
CAPACITY, PER_SENDER, TTL = 5, 3, 4.0


class MempoolModel(RuleBasedStateMachine):
    """The pool against a dict model: each operation's outcome and the invariants after each."""

    def __init__(self):
        super().__init__()
        self.pool = Mempool(CAPACITY, PER_SENDER, TTL)
        self.model: dict[bytes, Pending] = {}  # what the pool should hold, in admission order
        self.accounts = {sender: 0 for sender in SENDERS}
        self.now = 0.0
        self.versions = 0
        self.admitted = 0  # admissions of a digest the pool did not hold (one may come back)
        self.gone = 0  # how many of those were removed or expired

    def expected_refusal(self, sender: bytes, nonce: int) -> ProtocolError | None:
        mine = [p for p in self.model.values() if p.sender == sender]
        account = self.accounts[sender]
        if len(mine) >= PER_SENDER:
            return SenderPoolFull(sender_pending=len(mine), limit=PER_SENDER)
        if nonce >= account + PER_SENDER:
            return NonceTooFarAhead(account_nonce=account, max=account + PER_SENDER - 1, got=nonce)
        if any(p.nonce == nonce for p in mine):
            return NonceAlreadyPooled(nonce=nonce)
        if len(self.model) >= CAPACITY:
            return MempoolFull(capacity=CAPACITY)
        return None

    @rule(sender=st.sampled_from(SENDERS), ahead=st.integers(-1, PER_SENDER + 1),
          variant=st.integers(0, 2), dt=st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5]))
    def admit(self, sender, ahead, variant, dt):
        self.now += dt
        nonce = max(self.accounts[sender] + ahead, 0)
        tx_digest = digest(sender, nonce, variant)
        self.versions += 1
        tx_data = data(sender, nonce, variant, self.versions % 256)
        pooled = self.model.get(tx_digest)
        refusal = None if pooled is not None else self.expected_refusal(sender, nonce)
        if refusal is not None:
            with pytest.raises(type(refusal)) as refused:
                self.pool.admit(tx_digest, sender, nonce, tx_data, self.accounts[sender], self.now)
            assert refused.value == refusal
            return
        new = self.pool.admit(tx_digest, sender, nonce, tx_data, self.accounts[sender], self.now)
        assert new is (pooled is None)
        if pooled is None:
            self.model[tx_digest] = Pending(sender, nonce, tx_data, self.now)
            self.admitted += 1
        else:
            self.model[tx_digest] = pooled._replace(data=tx_data)

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 100), dt=st.sampled_from([0.0, 1.0]))
    def resubmit(self, pick, dt):
        self.now += dt
        tx_digest = list(self.model)[pick % len(self.model)]
        pooled = self.model[tx_digest]
        self.versions += 1
        tx_data = pooled.data[:-1] + bytes([self.versions % 256])
        # Whatever the limits now say: the pool, the sender or the nonce window may be full.
        assert self.pool.admit(tx_digest, pooled.sender, pooled.nonce, tx_data, 10**6, self.now) is False
        self.model[tx_digest] = pooled._replace(data=tx_data)

    @rule(sender=st.sampled_from(SENDERS), nonce=st.integers(0, 8), variant=st.integers(0, 2))
    def remove(self, sender, nonce, variant):
        tx_digest = digest(sender, nonce, variant)
        expected = self.model.pop(tx_digest, None)
        assert self.pool.remove(tx_digest) == expected
        self.gone += expected is not None

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0, 4.0, 6.0]))
    def expire(self, dt):
        self.now += dt
        expected = [(d, p) for d, p in self.model.items() if p.admitted_at + TTL <= self.now]
        assert self.pool.expired(self.now) == expected
        for tx_digest, _ in expected:
            del self.model[tx_digest]
        self.gone += len(expected)
        assert all(p.admitted_at + TTL > self.now for p in self.model.values())

    @rule(limit=st.integers(0, 10))
    def commit(self, limit):
        """A checkpoint executes the ready ones; the stale ones are then dropped."""
        by_data = {p.data: d for d, p in self.model.items()}
        for tx_data in self.pool.ready(self.accounts.__getitem__, limit):
            pending = self.model.pop(by_data[tx_data])
            assert pending.nonce == self.accounts[pending.sender]
            self.accounts[pending.sender] += 1
            assert self.pool.remove(by_data[tx_data]) == pending
            self.gone += 1
        self.drop_stale()

    @rule(sender=st.sampled_from(SENDERS), steps=st.integers(1, 3))
    def advance_account(self, sender, steps):
        """Another validator's transactions took the sender's next nonces."""
        self.accounts[sender] += steps
        self.drop_stale()

    def drop_stale(self):
        expected = [(d, self.accounts[p.sender]) for d, p in self.model.items()
                    if p.nonce < self.accounts[p.sender]]
        assert self.pool.stale(self.accounts.__getitem__) == expected
        assert len(self.pool) == len(self.model)  # stale removes nothing
        for tx_digest, _ in expected:
            assert self.pool.remove(tx_digest) == self.model.pop(tx_digest)
            self.gone += 1

    @invariant()
    def holds_what_the_model_holds(self):
        assert len(self.pool) == len(self.model) == self.admitted - self.gone
        assert [(d, self.pool.get(d)) for d in self.pool] == list(self.model.items())  # in order
        assert all(tx_digest in self.pool for tx_digest in self.model)
        assert set(self.pool.verified) == {p.data for p in self.model.values()}

    @invariant()
    def within_the_limits(self):
        assert len(self.pool) <= CAPACITY
        assert all(self.pool.sender_pending(s) <= PER_SENDER for s in SENDERS)
        assert sum(self.pool.sender_pending(s) for s in SENDERS) == len(self.pool)

    @invariant()
    def never_two_with_one_sender_and_nonce(self):
        keys = [(self.pool.get(d).sender, self.pool.get(d).nonce) for d in self.pool]
        assert len(keys) == len(set(keys))

    @invariant()
    def ready_runs_from_each_account_nonce_without_gaps(self):
        by_data = {p.data: p for p in self.model.values()}
        ready = [by_data[tx_data] for tx_data in self.pool.ready(self.accounts.__getitem__, 1000)]
        senders = [p.sender for p in ready]
        assert senders == sorted(senders)
        for sender in SENDERS:
            nonces = [p.nonce for p in ready if p.sender == sender]
            account = self.accounts[sender]
            assert nonces == list(range(account, account + len(nonces)))
            assert account + len(nonces) not in {p.nonce for p in self.model.values() if p.sender == sender}
        assert self.pool.ready(self.accounts.__getitem__, 2) == [p.data for p in ready[:2]]

    @invariant()
    def next_expiry_is_zero_exactly_when_some_have_expired(self):
        wait = self.pool.next_expiry(self.now)
        if not self.model:
            assert wait is None
        else:
            oldest = next(iter(self.model.values()))
            assert wait == max(oldest.admitted_at + TTL - self.now, 0.0)
            assert (wait == 0.0) == any(p.admitted_at + TTL <= self.now for p in self.model.values())


MempoolModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_mempool_model = MempoolModel.TestCase
