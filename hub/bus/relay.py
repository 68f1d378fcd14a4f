"""Fan-out of bus channels to in-process listeners.

Many listeners (agent sessions, chat waiters, dashboard feeds) share one bus
subscription per channel: the relay counts them, subscribes on the first and
unsubscribes after the last. A message published here reaches this
instance's listeners at once, without a round trip through Redis; copies
coming back from the bus with this instance's id are dropped.

Gaps: when the bus may have lost messages on a channel (the Redis reader
had to reconnect, or an instance died between a commit and its publish),
it hands the relay a :func:`gap_signal` for that channel, saying how many
seconds back messages may be missing. The relay calls each listener's
``on_gap(seconds)`` (sessions read what they missed from the store) and
re-sends what this instance failed to publish while Redis was unreachable,
so other instances get it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.exceptions import RedisError

from hub.bus.base import Bus

logger = logging.getLogger("beadhub.bus")

Listener = Callable[[dict[str, Any]], None]
#: Called with how many seconds back messages may be missing.
GapHandler = Callable[[float], None]

#: A bus payload that is not a message: real ones start with an instance id.
_GAP = b"\x00gap:"


def gap_signal(seconds: float) -> bytes:
    return _GAP + repr(float(seconds)).encode()


#: Messages kept for re-sending while Redis is unreachable. Beyond this the
#: oldest are dropped: they are in the store, and other instances' sessions
#: still get them when they resume or catch up.
MAX_UNSENT = 10_000


class Relay:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._origin = bus.instance_id.encode() + b"|"
        self._listeners: dict[str, set[Listener]] = {}
        self._gap_handlers: dict[Listener, GapHandler] = {}
        self._unsent: deque[tuple[str, bytes]] = deque(maxlen=MAX_UNSENT)
        self._flushing: asyncio.Task[None] | None = None

    async def add(self, channel: str, listener: Listener, on_gap: GapHandler | None = None) -> None:
        """``on_gap`` is called (in the event loop, must not block) when
        messages on ``channel`` may have been lost on the way here."""
        if on_gap is not None:
            self._gap_handlers[listener] = on_gap
        listeners = self._listeners.get(channel)
        if listeners is None:
            listeners = self._listeners[channel] = set()
            await self.bus.subscribe(channel)
        listeners.add(listener)

    async def remove(self, channel: str, listener: Listener) -> None:
        self._gap_handlers.pop(listener, None)
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            await self.bus.unsubscribe(channel)

    @asynccontextmanager
    async def listening(
        self, channel: str, listener: Listener, on_gap: GapHandler | None = None
    ) -> AsyncIterator[None]:
        await self.add(channel, listener, on_gap)
        try:
            yield
        finally:
            await self.remove(channel, listener)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.deliver(channel, message)
        if not self.bus.shared:
            return  # it would only come back here, and be dropped as our own
        data = self._origin + orjson.dumps(message)
        try:
            await self.bus.publish(channel, data)
        except (RedisError, OSError) as exc:
            # The message is already durable; it is sent again once Redis
            # answers, and sessions elsewhere catch up from the store.
            if not self._unsent:
                logger.warning("bus publish on %s failed: %s", channel, exc)
            self._unsent.append((channel, data))
            return
        if self._unsent:
            self._flush_unsent()

    def _flush_unsent(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Re-send, oldest first; one flush at a time. Receivers drop the
        copies they already have by event id."""
        sent = 0
        while self._unsent:
            channel, data = self._unsent[0]
            try:
                await self.bus.publish(channel, data)
            except Exception:  # still unreachable, or shutting down
                return
            self._unsent.popleft()
            sent += 1
        logger.info("bus: re-sent %d messages published while redis was unreachable", sent)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(message)
            except Exception:
                logger.exception("listener on %s failed", channel)

    def on_gap(self, channel: str, seconds: float) -> None:
        for listener in tuple(self._listeners.get(channel, ())):
            handler = self._gap_handlers.get(listener)
            if handler is None:
                continue
            try:
                handler(seconds)
            except Exception:
                logger.exception("gap handler on %s failed", channel)
        if self._unsent:
            self._flush_unsent()

    def on_bus_message(self, channel: str, data: bytes) -> None:
        if data.startswith(_GAP):
            self.on_gap(channel, float(data[len(_GAP) :]))
            return
        if data.startswith(self._origin):
            return
        _, _, body = data.partition(b"|")
        self.deliver(channel, orjson.loads(body))
