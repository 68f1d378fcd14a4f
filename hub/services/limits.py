"""Rate limits: how often one key or one client address may do something.

A rule allows ``limit`` calls per ``window`` seconds for each key (an
agent, a client address). Windows are fixed (a counter that expires), so a
caller may spend a window's allowance at its end and the next one's at
once: at most twice the limit in any stretch of one window. That is the
price of one atomic ``INCR`` per check, which makes the same limit hold
across every instance when the bus is Redis.

The backend follows the bus (:func:`hub.bus.create_bus`): a Redis bus URL
counts in that Redis (under the bus prefix), ``memory://`` counts in this
process. While Redis is unreachable the limiter lets calls through (and
says so once in the log): refusing every caller because a doorbell is down
would turn a Redis outage into a hub outage.

Services and transports use it the same way::

    await limits.check(hub, "onboarding", client_address)

which raises RATE_LIMITED with ``data.retry_after`` (seconds) when the
caller is over; the HTTP shim answers 429 with a ``Retry-After`` header.
The rules and their settings are in :data:`RULES`.

Calls on a WebSocket session or ``/mcp`` are too many and too cheap for a
round trip to Redis each: :func:`spend_call` counts them in this process,
in a token bucket per key (:class:`CallBuckets`) that the key's sessions
on this instance share. It allows a burst of ``rate_calls_burst`` calls
and ``rate_calls_per_second`` after that; a key with sessions on several
instances gets each instance's allowance.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hub import metrics
from protocol.errors import ErrorCode, RpcError

if TYPE_CHECKING:
    from hub.config import Settings
    from hub.services.context import Actor, Hub

logger = logging.getLogger("beadhub.limits")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window: float = 60.0


#: Each rule's setting (``Settings`` attribute, calls per minute), and what
#: it counts. docs/security.md lists them with their defaults.
RULES: dict[str, str] = {
    # per client address: POST /v1/init (new agents, new projects)
    "onboarding": "rate_onboarding_per_minute",
    # per client address: every other route that needs no key (name
    # suggestions, tickets, sign-in)
    "anonymous": "rate_anonymous_per_minute",
    # per client address: refused keys and tickets (guessing)
    "auth_failure": "rate_auth_failures_per_minute",
    # per key: every authenticated HTTP call
    "key": "rate_key_per_minute",
    # per key: WebSocket sessions opened
    "session_open": "rate_sessions_per_minute",
}


def rate(settings: Settings, rule: str) -> Rate:
    return Rate(int(getattr(settings, RULES[rule])), 60.0)


def rate_limited(retry_after: float, message: str = "too many requests") -> RpcError:
    seconds = max(1, math.ceil(retry_after))
    return RpcError(
        ErrorCode.RATE_LIMITED,
        f"{message}; retry after {seconds} s",
        {"retry_after": seconds},
    )


class Limiter(ABC):
    @abstractmethod
    async def hit(self, key: str, rate: Rate) -> float:
        """Count one call; 0 when allowed, else seconds until it would be."""

    @abstractmethod
    async def peek(self, key: str, rate: Rate) -> float:
        """Like :meth:`hit` without counting: 0 unless ``key`` is over."""

    async def close(self) -> None:
        return None


class MemoryLimiter(Limiter):
    """Counters in a dict; stale windows are dropped as the dict grows."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    def _window(self, key: str, rate: Rate, now: float) -> tuple[float, int]:
        found = self._windows.get(key)
        if found is None or found[0] <= now:
            return now + rate.window, 0
        return found

    async def hit(self, key: str, rate: Rate) -> float:
        now = time.monotonic()
        ends, count = self._window(key, rate, now)
        if count >= rate.limit:
            return ends - now
        if len(self._windows) >= self.MAX_KEYS:
            self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
        self._windows[key] = (ends, count + 1)
        return 0.0

    async def peek(self, key: str, rate: Rate) -> float:
        now = time.monotonic()
        ends, count = self._window(key, rate, now)
        return ends - now if count >= rate.limit else 0.0


#: KEYS[1] the counter; ARGV limit, window (ms). Returns 0 or the ms left.
_HIT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return ttl
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisLimiter(Limiter):
    def __init__(self, url: str, prefix: str) -> None:
        from redis import asyncio as aioredis

        self.prefix = prefix
        self._redis: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._hit = self._redis.register_script(_HIT)
        self._failing = False

    def _key(self, key: str, rate: Rate) -> str:
        return f"{self.prefix}:rate:{rate.limit}:{int(rate.window)}:{key}"

    async def _run(self, coro: Any) -> float:
        from redis.exceptions import RedisError

        try:
            result = await coro
        except (RedisError, OSError) as exc:
            if not self._failing:
                logger.warning("rate limits not enforced while redis fails: %s", exc)
                self._failing = True
            return 0.0
        self._failing = False
        return result

    async def hit(self, key: str, rate: Rate) -> float:
        args = [rate.limit, int(rate.window * 1000)]
        ms = await self._run(self._hit(keys=[self._key(key, rate)], args=args))
        return max(0.0, float(ms) / 1000)

    async def peek(self, key: str, rate: Rate) -> float:
        name = self._key(key, rate)

        async def read() -> float:
            async with self._redis.pipeline(transaction=False) as pipe:
                count, ttl = await pipe.get(name).pttl(name).execute()
            if count is None or int(count) < rate.limit:
                return 0.0
            return max(ttl, 1) / 1000

        return await self._run(read())

    async def close(self) -> None:
        await self._redis.aclose()


class CallBuckets:
    """A token bucket per key: each call takes a token, tokens come back at
    ``per_second`` up to ``burst``. No I/O and no lock: it sits on every
    WebSocket call's path, and the event loop runs one call at a time."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        #: key -> [tokens left, when they were counted (monotonic)]
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, burst: float, per_second: float) -> float:
        """Take a token: 0 when there was one, else seconds until there is."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._drop_full(now, burst, per_second)
            self._buckets[key] = [burst - 1, now]
            return 0.0
        tokens = min(burst, bucket[0] + (now - bucket[1]) * per_second)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / per_second

    def _drop_full(self, now: float, burst: float, per_second: float) -> None:
        # A full bucket is the same as none: dropping those forgets nothing.
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * per_second < burst
        }


def create_limiter(url: str, *, prefix: str) -> Limiter:
    """The backend for a bus URL, as :func:`hub.bus.create_bus` chooses."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimiter(url, prefix)
    return MemoryLimiter()


async def check(hub: Hub, rule: str, key: str, message: str | None = None) -> None:
    """Count one call of ``rule`` for ``key``; RATE_LIMITED when over."""
    wait = await hub.limiter.hit(f"{rule}:{key}", rate(hub.settings, rule))
    if wait > 0:
        metrics.rate_limited(rule)
        raise rate_limited(wait, message or f"too many requests ({rule})")


def spend_call(hub: Hub, key: str) -> None:
    """Count one call of ``key`` (see :func:`caller_key`) on this instance;
    RATE_LIMITED when its bucket is empty. The caller must do nothing of
    the refused call."""
    settings = hub.settings
    wait = hub.calls.take(key, settings.rate_calls_burst, settings.rate_calls_per_second)
    if wait > 0:
        metrics.rate_limited("calls")
        raise rate_limited(wait, "too many calls")


async def refuse_if_over(hub: Hub, rule: str, key: str, message: str | None = None) -> None:
    """RATE_LIMITED if ``key`` already spent ``rule``'s allowance (no count)."""
    wait = await hub.limiter.peek(f"{rule}:{key}", rate(hub.settings, rule))
    if wait > 0:
        metrics.rate_limited(rule)
        raise rate_limited(wait, message or f"too many requests ({rule})")


async def authenticated(hub: Hub, address: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (a key or ticket check) for a caller at ``address``,
    counting its refusals: past ``auth_failure``'s allowance the address
    gets RATE_LIMITED without its key being looked at, until the window
    ends."""
    await refuse_if_over(hub, "auth_failure", address, "too many refused credentials")
    try:
        return await attempt()
    except RpcError as exc:
        if exc.code == ErrorCode.UNAUTHORIZED:
            await hub.limiter.hit(f"auth_failure:{address}", rate(hub.settings, "auth_failure"))
        raise


def caller_key(actor: Actor) -> str:
    """Whose allowance a call spends: the agent's, or the human's."""
    return actor.agent_id or f"human:{actor.project_id}:{actor.alias}"
