"""Token buckets per caller address, as SPIRE's per-IP limiters: callers over the rate wait, not fail
(``wait``), or, as the agent's per-selector-set Workload API limits, are refused (``allow``).

A bucket holds ``limit`` tokens (the burst) and refills ``limit`` per second. A request for
more tokens than the burst can never be served and is refused at once (RESOURCE_EXHAUSTED,
SPIRE's "rate (N) exceeds burst size (M)"). Buckets of addresses not seen for a while are
dropped, and their number is bounded, so a caller cycling addresses cannot grow memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from cachetools import TTLCache
from grpclib.const import Status
from grpclib.exceptions import GRPCError

# A full bucket refills in one second, so forgetting an idle address after a minute loses nothing.
IDLE_FORGET = 60.0
MAX_ADDRESSES = 65536


class TokenBucket:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit)
        self._last = clock()

    def reserve(self, count: int) -> float:
        """Take ``count`` tokens now (the balance may go negative); how long the caller must wait."""
        if count > self.limit:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"rate ({count}) exceeds burst size ({self.limit})")
        now = self._clock()
        self._tokens = min(float(self.limit), self._tokens + (now - self._last) * self.limit)
        self._last = now
        self._tokens -= count
        return 0.0 if self._tokens >= 0 else -self._tokens / self.limit

    def allow(self, count: int = 1) -> bool:
        """Take ``count`` tokens if the bucket holds them (Go's rate.Limiter.AllowN): a refused
        caller takes nothing."""
        now = self._clock()
        self._tokens = min(float(self.limit), self._tokens + (now - self._last) * self.limit)
        self._last = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


class PerAddressLimiter:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: TTLCache[str, TokenBucket] = TTLCache(maxsize=MAX_ADDRESSES, ttl=IDLE_FORGET, timer=clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def reserve(self, address: str, count: int = 1) -> float:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(self.limit, self._clock)
        self._buckets[address] = bucket  # re-inserting keeps an active address from expiring
        return bucket.reserve(count)

    def allow(self, address: str, count: int = 1) -> bool:
        """Whether ``address`` (any key) may go now; see TokenBucket.allow."""
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(self.limit, self._clock)
        self._buckets[address] = bucket
        return bucket.allow(count)

    async def wait(self, address: str, count: int = 1) -> None:
        delay = self.reserve(address, count)
        if delay > 0:
            await asyncio.sleep(delay)
