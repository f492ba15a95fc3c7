"""The public surface's limiter (soma_ray/limits.py) and the route table's limits of it, without
Serve: token buckets, per-client and global bounds, what a refusal costs."""
import pytest

from soma_ray.limits import ALL, CLIENT, Buckets, Limit, Limiter
from soma_ray.protocol.errors import RateLimited
from soma_ray.routes import LOCALNET_RATE_LIMITS, RATE_CLASSES, RATE_LIMITS, ROUTES


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def refused(limiter, rate_class, client) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limiter.admit(rate_class, client)
    return caught.value


def test_a_bucket_allows_its_burst_then_refills_evenly():
    clock = Clock()
    bucket = Buckets(capacity=6, window_s=60, clock=clock)  # 1 token per 10 s
    assert [bucket.take("a") for _ in range(6)] == [0.0] * 6
    assert bucket.take("a") == pytest.approx(10.0)
    assert bucket.take("b") == 0.0  # each key its own
    clock.now += 25
    assert bucket.take("a") == 0.0 and bucket.take("a") == 0.0
    assert bucket.take("a") == pytest.approx(5.0)
    assert bucket.take("a", 7) == float("inf")  # over the capacity: never
    bucket.give_back("a", 1)
    assert bucket.take("a") == 0.0


def test_a_bucket_remembers_a_bounded_number_of_keys():
    bucket = Buckets(capacity=1, window_s=60, clock=Clock(), max_keys=3)
    for key in "abcd":
        assert bucket.take(key) == 0.0
    assert bucket.take("a") == 0.0  # forgotten (least recently used): a full bucket again
    assert bucket.take("d") > 0


def test_per_client_rate_and_concurrency_and_the_retry_after():
    clock = Clock()
    limiter = Limiter({"read": Limit(per_client=3, window_s=30, client_concurrent=2, concurrent=100)}, clock)
    limiter.admit("read", "1.2.3.4")
    limiter.admit("read", "1.2.3.4")
    busy = refused(limiter, "read", "1.2.3.4")
    assert (busy.scope, busy.retry_after_s, busy.rate_class) == (CLIENT, 1, "read")
    limiter.release("read", "1.2.3.4")
    limiter.admit("read", "1.2.3.4")  # the third token
    limiter.release("read", "1.2.3.4")
    limiter.release("read", "1.2.3.4")
    too_often = refused(limiter, "read", "1.2.3.4")
    assert too_often.scope == CLIENT and too_often.retry_after_s == 10  # one token per 10 s
    with limiter.hold("read", "5.6.7.8"):  # another client is not held back
        assert limiter.in_flight("read", "5.6.7.8") == 1 and limiter.in_flight("read") == 1
    assert limiter.in_flight("read") == 0
    clock.now += 10
    limiter.admit("read", "1.2.3.4")


def test_the_bounds_for_all_clients_hold_whatever_the_address():
    clock = Clock()
    limiter = Limiter({"faucet": Limit(per_client=5, window_s=60, client_concurrent=5, concurrent=2,
                                       per_window=4)}, clock)
    limiter.admit("faucet", "a")
    limiter.admit("faucet", "b")
    assert refused(limiter, "faucet", "c").scope == ALL  # in flight: 2 of 2
    limiter.release("faucet", "a")
    limiter.release("faucet", "b")
    for client in "cd":
        with limiter.hold("faucet", client):
            pass
    # Four requests in the window from four addresses: new addresses buy nothing more.
    limited = refused(limiter, "faucet", "e")
    assert limited.scope == ALL and limited.retry_after_s == 15
    clock.now += 15
    with limiter.hold("faucet", "e"):
        pass


def test_a_refused_request_costs_nothing():
    limiter = Limiter({"score": Limit(per_client=2, window_s=60, client_concurrent=1, concurrent=10)}, Clock())
    limiter.admit("score", "x")
    for _ in range(5):
        refused(limiter, "score", "x")  # concurrency: no token taken
    limiter.release("score", "x")
    limiter.admit("score", "x")  # the second token is still there
    limiter.release("score", "x")
    with pytest.raises(RuntimeError):
        limiter.release("score", "x")


def test_a_block_that_raises_still_frees_its_slot():
    limiter = Limiter({"upload": Limit(1, 60, 1, 1)}, Clock())
    with pytest.raises(ZeroDivisionError):
        with limiter.hold("upload", "x"):
            1 / 0
    assert limiter.in_flight("upload") == 0


def test_every_route_names_a_class_with_limits_and_capacity_is_left_for_what_must_not_wait():
    assert set(RATE_LIMITS) == set(RATE_CLASSES) == set(LOCALNET_RATE_LIMITS)
    assert {route.rate for route in ROUTES.values()} <= set(RATE_LIMITS)
    from serve.blobs import MAX_ONGOING_REQUESTS

    # The blob store keeps slots that uploads and public downloads cannot take.
    assert RATE_LIMITS["upload"].concurrent + RATE_LIMITS["download"].concurrent < MAX_ONGOING_REQUESTS
    # Long polls never hold the gateway's 2,000 slots.
    assert RATE_LIMITS["long_poll"].concurrent <= 256
    # Public score requests fill at most half a model replica's 256 slots (16 models each).
    assert RATE_LIMITS["score"].concurrent * 16 <= 256 // 2
    for name, limit in LOCALNET_RATE_LIMITS.items():  # a localnet: more per client, same for all
        assert limit.per_client == 10 * RATE_LIMITS[name].per_client
        assert limit.concurrent == RATE_LIMITS[name].concurrent


def test_a_limit_is_checked_when_declared():
    with pytest.raises(ValueError):
        Limit(per_client=0, window_s=60, client_concurrent=1, concurrent=1)
    with pytest.raises(ValueError):
        Limit(per_client=1, window_s=60, client_concurrent=1, concurrent=1, per_window=0)
