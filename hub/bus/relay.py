"""Fan-out of bus channels to in-process listeners.

Many listeners (agent sessions, chat waiters, dashboard feeds) share one bus
subscription per channel: the relay counts them, subscribes on the first and
unsubscribes after the last. A message published here reaches this
instance's listeners at once, without a round trip through Redis; copies
coming back from the bus with this instance's id are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.exceptions import RedisError

from hub.bus.base import Bus

logger = logging.getLogger("beadhub.bus")

Listener = Callable[[dict[str, Any]], None]


class Relay:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._origin = bus.instance_id.encode() + b"|"
        self._listeners: dict[str, set[Listener]] = {}

    async def add(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            listeners = self._listeners[channel] = set()
            await self.bus.subscribe(channel)
        listeners.add(listener)

    async def remove(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            await self.bus.unsubscribe(channel)

    @asynccontextmanager
    async def listening(self, channel: str, listener: Listener) -> AsyncIterator[None]:
        await self.add(channel, listener)
        try:
            yield
        finally:
            await self.remove(channel, listener)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.deliver(channel, message)
        try:
            await self.bus.publish(channel, self._origin + orjson.dumps(message))
        except (RedisError, OSError) as exc:
            # The message is already durable; other instances' clients catch
            # up when they resume from their cursor.
            logger.warning("bus publish on %s failed: %s", channel, exc)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(message)
            except Exception:
                logger.exception("listener on %s failed", channel)

    def on_bus_message(self, channel: str, data: bytes) -> None:
        if data.startswith(self._origin):
            return
        _, _, body = data.partition(b"|")
        self.deliver(channel, orjson.loads(body))
