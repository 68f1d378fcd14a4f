"""Fan-out of bus channels to in-process listeners.

Many listeners (agent sessions, chat waiters, dashboard feeds) share one bus
subscription per channel: the relay counts them, subscribes on the first and
unsubscribes after the last. A message published here reaches this
instance's listeners at once, without a round trip through Redis; copies
coming back from the bus with this instance's id are dropped.

Filters: a listener may take only some message types (``wants``, a
session's subscription). Listeners are grouped by their filter, and each
group's filter runs once per message: a project's reservation traffic
costs nothing for a team of sessions subscribed only to their mail and
chat, however many there are. Listeners with equal subscriptions share
a group if they share the filter object (:func:`protocol.topics.matcher`
returns one per subscription). With a bus no other instance reads (the
memory bus), publishers ask first (:meth:`Relay.wanted`) and skip building
a message no listener here takes.

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
#: Whether a listener takes messages of this ``type`` (None: every type).
Wants = Callable[[str], bool]

#: A bus payload that is not a message: real ones start with an instance id.
_GAP = b"\x00gap:"


def gap_signal(seconds: float) -> bytes:
    return _GAP + repr(float(seconds)).encode()


#: Messages kept for re-sending while Redis is unreachable. Beyond this the
#: oldest are dropped: they are in the store, and other instances' sessions
#: still get them when they resume or catch up.
MAX_UNSENT = 10_000


class _Fanout:
    """One channel's listeners, grouped by what they want."""

    def __init__(self) -> None:
        self.wants: dict[Listener, Wants | None] = {}
        self.groups: dict[Wants | None, set[Listener]] = {}

    def add(self, listener: Listener, wants: Wants | None) -> None:
        self.discard(listener)
        self.wants[listener] = wants
        self.groups.setdefault(wants, set()).add(listener)

    def discard(self, listener: Listener) -> None:
        if listener not in self.wants:
            return
        wants = self.wants.pop(listener)
        group = self.groups[wants]
        group.discard(listener)
        if not group:
            del self.groups[wants]

    def takes(self, type_: str) -> bool:
        return any(wants is None or wants(type_) for wants in self.groups)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        type_ = message.get("type", "")
        for wants, group in tuple(self.groups.items()):
            if wants is not None and not wants(type_):
                continue
            for listener in tuple(group):
                try:
                    listener(message)
                except Exception:
                    logger.exception("listener on %s failed", channel)


class Relay:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._origin = bus.instance_id.encode() + b"|"
        self._listeners: dict[str, _Fanout] = {}
        self._gap_handlers: dict[Listener, GapHandler] = {}
        self._unsent: deque[tuple[str, bytes]] = deque(maxlen=MAX_UNSENT)
        self._flushing: asyncio.Task[None] | None = None

    async def add(
        self,
        channel: str,
        listener: Listener,
        on_gap: GapHandler | None = None,
        wants: Wants | None = None,
    ) -> None:
        """``on_gap`` is called (in the event loop, must not block) when
        messages on ``channel`` may have been lost on the way here;
        ``wants`` filters the messages by type."""
        if on_gap is not None:
            self._gap_handlers[listener] = on_gap
        fanout = self._listeners.get(channel)
        if fanout is None:
            fanout = self._listeners[channel] = _Fanout()
            await self.bus.subscribe(channel)
        fanout.add(listener, wants)

    def refilter(self, channel: str, listener: Listener, wants: Wants | None) -> None:
        """Change what a listener already on ``channel`` takes."""
        fanout = self._listeners.get(channel)
        if fanout is not None and listener in fanout.wants:
            fanout.add(listener, wants)

    async def remove(self, channel: str, listener: Listener) -> None:
        self._gap_handlers.pop(listener, None)
        fanout = self._listeners.get(channel)
        if fanout is None:
            return
        fanout.discard(listener)
        if not fanout.wants:
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

    def wanted(self, channel: str, type_: str) -> bool:
        """Whether a message of this type on ``channel`` can reach anyone: a
        listener here that takes it or, on a shared bus, another instance.
        Publishers skip building what nobody would receive."""
        if self.bus.shared:
            return True
        fanout = self._listeners.get(channel)
        return fanout is not None and fanout.takes(type_)

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
        fanout = self._listeners.get(channel)
        if fanout is not None:
            fanout.deliver(channel, message)

    def on_gap(self, channel: str, seconds: float) -> None:
        fanout = self._listeners.get(channel)
        for listener in tuple(fanout.wants if fanout is not None else ()):
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
