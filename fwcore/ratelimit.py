"""Token buckets, one per key (a client address, a token id), bounded in number.

A bucket holds up to ``burst`` tokens and gains ``rate`` per second; a request takes one (or is
refused, with how long until one is back). Pure, with an injectable clock; not thread-safe: the
API uses it from its event loop only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Keyed token buckets: ``burst`` tokens each, refilled at ``rate`` per second.

    At most ``max_keys`` buckets are kept; the least recently used is forgotten first (a forgotten
    key starts full again, so the bound costs only precision against an attacker with many keys).
    """

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def _bucket(self, key: Hashable) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may make a request (0: now), taking nothing."""
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: Hashable) -> float:
        """Take one token for ``key``: 0 if it was there, else the seconds until one is (nothing taken)."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def charge(self, key: Hashable) -> None:
        """Take one token for ``key`` even if that leaves the bucket in debt (failed attempts)."""
        bucket = self._bucket(key)
        bucket.tokens = max(bucket.tokens - 1, -float(self.burst))


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
