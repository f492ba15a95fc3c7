"""Rate and concurrency limits of the public surface, pure (no Ray, no Serve, no HTTP): what
serve/router.py enforces for every route by its rate class (soma_ray/routes.py `RATE_LIMITS`),
and what the blob store charges an account's uploads against.

    limiter = Limiter(RATE_LIMITS)
    with limiter.hold("long_poll", "203.0.113.7"):   # RateLimited (429) when over a limit
        ...                                          # the request runs; its slot is freed after

A class's `Limit` bounds, per client (the HTTP client's address): requests per window (a token
bucket holding `per_client` tokens, refilled evenly over `window_s`, one token per request)
and requests in flight; and for all clients together: requests in flight and, optionally,
requests per window. The first bound a request would pass refuses it with
`RateLimited{rate_class, scope, retry_after_s}` (scope "client" or "all") and nothing is
counted: a refused request costs no token and holds no slot.

`Buckets` is the token bucket alone, keyed by anything and charged any cost: the blob store's
per-account byte quota and ticket rate (serve/blobs.py) use it.

Memory is bounded: at most `max_clients` keys per bucket set are remembered, least recently
used first out (a forgotten client starts again with a full bucket, which only forgives).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Mapping

from soma_ray.protocol import errors

MAX_CLIENTS = 100_000
CLIENT, ALL = "client", "all"
# What a refusal for a full concurrency bound tells the client to wait: slots free as requests end.
BUSY_RETRY_S = 1


@dataclass(frozen=True)
class Limit:
    """The limits of one rate class (see the module docstring)."""

    per_client: int  # requests per window per client (the bucket's size: the burst)
    window_s: float
    client_concurrent: int  # requests in flight per client
    concurrent: int  # requests in flight, all clients together
    per_window: int | None = None  # requests per window, all clients together (None: no bound)

    def __post_init__(self) -> None:
        if min(self.per_client, self.client_concurrent, self.concurrent) < 1 or self.window_s <= 0:
            raise ValueError(f"a limit's counts are >= 1 and its window > 0: {self}")
        if self.per_window is not None and self.per_window < 1:
            raise ValueError(f"per_window is >= 1 or None: {self}")

    def scaled(self, rate: float = 1, concurrency: float = 1) -> "Limit":
        """The per-client bounds multiplied (a localnet's: one developer, one address)."""
        return Limit(max(1, round(self.per_client * rate)), self.window_s,
                     max(1, round(self.client_concurrent * concurrency)), self.concurrent,
                     self.per_window)


class Buckets:
    """Token buckets of `capacity` tokens refilled evenly over `window_s`, one per key."""

    def __init__(self, capacity: float, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_CLIENTS) -> None:
        if capacity <= 0 or window_s <= 0:
            raise ValueError("a bucket holds > 0 tokens over a window > 0")
        self.capacity = capacity
        self.rate = capacity / window_s  # tokens per second
        self._clock = clock
        self._max_keys = max_keys
        self._levels: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def level(self, key: Hashable) -> float:
        """The tokens `key` holds now."""
        tokens, at = self._levels.get(key, (self.capacity, self._clock()))
        return min(self.capacity, tokens + (self._clock() - at) * self.rate)

    def wait_s(self, key: Hashable, cost: float = 1) -> float:
        """Seconds until `key` holds `cost` tokens (0: now; inf: never, cost over the capacity)."""
        if cost > self.capacity:
            return math.inf
        return max(0.0, (cost - self.level(key)) / self.rate)

    def take(self, key: Hashable, cost: float = 1) -> float:
        """Take `cost` tokens if `key` holds them and return 0; otherwise take nothing and
        return the seconds until it would (inf when `cost` is over the capacity)."""
        wait = self.wait_s(key, cost)
        if wait > 0:
            return wait
        self._levels[key] = (self.level(key) - cost, self._clock())
        self._levels.move_to_end(key)
        while len(self._levels) > self._max_keys:
            self._levels.popitem(last=False)
        return 0.0

    def give_back(self, key: Hashable, cost: float = 1) -> None:
        """Return tokens taken for something that did not happen (never above the capacity)."""
        if key in self._levels:
            self._levels[key] = (min(self.capacity, self.level(key) + cost), self._clock())


class Limiter:
    """The per-class limits of `limits` for every client (see the module docstring)."""

    def __init__(self, limits: Mapping[str, Limit], clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.limits = dict(limits)
        self._clients = {name: Buckets(limit.per_client, limit.window_s, clock, max_clients)
                         for name, limit in self.limits.items()}
        self._all = {name: Buckets(limit.per_window, limit.window_s, clock, 1)
                     for name, limit in self.limits.items() if limit.per_window is not None}
        self._in_flight: dict[str, dict[Hashable, int]] = {name: {} for name in self.limits}
        self._total: dict[str, int] = {name: 0 for name in self.limits}

    def in_flight(self, rate_class: str, client: Hashable | None = None) -> int:
        """Requests of the class in flight (of `client`, or of everyone)."""
        if client is None:
            return self._total[rate_class]
        return self._in_flight[rate_class].get(client, 0)

    def admit(self, rate_class: str, client: Hashable) -> None:
        """Count one request of `client` in `rate_class` (in flight until `release`), or raise
        RateLimited without counting anything."""
        limit = self.limits[rate_class]
        if self._total[rate_class] >= limit.concurrent:
            raise errors.RateLimited(rate_class=rate_class, scope=ALL, retry_after_s=BUSY_RETRY_S)
        if self._in_flight[rate_class].get(client, 0) >= limit.client_concurrent:
            raise errors.RateLimited(rate_class=rate_class, scope=CLIENT, retry_after_s=BUSY_RETRY_S)
        everyone = self._all.get(rate_class)
        if everyone is not None and (wait := everyone.wait_s(ALL)) > 0:
            raise errors.RateLimited(rate_class=rate_class, scope=ALL, retry_after_s=_seconds(wait))
        wait = self._clients[rate_class].take(client)
        if wait > 0:
            raise errors.RateLimited(rate_class=rate_class, scope=CLIENT, retry_after_s=_seconds(wait))
        if everyone is not None:
            everyone.take(ALL)
        self._in_flight[rate_class][client] = self._in_flight[rate_class].get(client, 0) + 1
        self._total[rate_class] += 1

    def release(self, rate_class: str, client: Hashable) -> None:
        flights = self._in_flight[rate_class]
        left = flights.get(client, 0) - 1
        if left < 0:
            raise RuntimeError(f"release of {client!r} in {rate_class} without an admit")
        if left:
            flights[client] = left
        else:
            del flights[client]
        self._total[rate_class] -= 1

    @contextmanager
    def hold(self, rate_class: str, client: Hashable) -> Iterator[None]:
        """`admit` now, `release` when the block ends (however it ends)."""
        self.admit(rate_class, client)
        try:
            yield
        finally:
            self.release(rate_class, client)


def _seconds(wait: float) -> int:
    """A Retry-After in whole seconds, at least 1."""
    return max(1, math.ceil(wait))
