"""A per-address rate limit for the few routes anyone may call without a
key (bdh's name suggestions).

A token bucket per (route family, client address), kept in this process:
each instance counts its own callers, so behind a balancer of N instances
an address gets at most N times the rate. That bounds what an anonymous
caller can enumerate without a shared store on the hot path. The general
limiter (per key and per address, every route) is meant to take this
over; :func:`check` is the one call the routes make.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from protocol.errors import ErrorCode, RpcError

#: Anonymous name suggestions: a burst of 20, then one every 2 seconds.
SUGGEST_BURST = 20
SUGGEST_PER_SECOND = 0.5
_MAX_TRACKED = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class AddressLimiter:
    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._buckets: dict[str, _Bucket] = {}

    def take(self, address: str, now: float | None = None) -> float:
        """Spend one token of ``address``; 0 if it had one, else the
        seconds until it will."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED:
                self._forget_full(now)
            bucket = self._buckets[address] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.per_second

    def _forget_full(self, now: float) -> None:
        # Buckets that have refilled hold no information; drop them first.
        refill = self.burst / self.per_second
        for address, bucket in list(self._buckets.items()):
            if now - bucket.at >= refill:
                del self._buckets[address]
        if len(self._buckets) >= _MAX_TRACKED:
            self._buckets.clear()


suggestions = AddressLimiter(SUGGEST_BURST, SUGGEST_PER_SECOND)


def check(limiter: AddressLimiter, address: str | None) -> None:
    """Raise RATE_LIMITED (HTTP 429) when ``address`` has used its share."""
    wait = limiter.take(address or "unknown")
    if wait > 0:
        retry = math.ceil(wait)
        raise RpcError(
            ErrorCode.RATE_LIMITED,
            f"too many requests from this address; retry in {retry} s",
            {"retry_after_seconds": retry},
        )
