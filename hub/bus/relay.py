"""Fan-out of bus channels to in-process listeners.

Many listeners (agent sessions, chat waiters, dashboard feeds) share one bus
subscription per channel: the relay counts them, subscribes on the first and
unsubscribes after the last. A message published here reaches this
instance's listeners at once, without a round trip through Redis; copies
coming back from the bus with this instance's id are dropped.

Filters: a listener may take only some message types (``wants``, a
session's subscription), and only what is addressed to its agent
(``agent``: a message with ``recipients`` reaches those agents' listeners
only). Listeners are grouped by their filter, and each group's filter runs
once per message: a project's reservation traffic costs nothing for a team
of sessions subscribed only to their mail and chat, and a mail reaches its
recipient's sessions without visiting the rest of the team's. Listeners
with equal subscriptions share a group if they share the filter object
(:func:`protocol.topics.matcher` returns one per subscription). With a bus
no other instance reads (the memory bus), publishers ask first
(:meth:`Relay.wanted`) and skip building a message no listener here takes.

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
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson

from hub import metrics
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


_BUS_LAG = metrics.BUS_LAG.child()

#: Messages kept for re-sending while Redis is unreachable. Beyond this the
#: oldest are dropped: they are in the store, and other instances' sessions
#: still get them when they resume or catch up.
MAX_UNSENT = 10_000


class _Group:
    """The listeners that take the same message types: those that take a
    message whoever it is addressed to, and those of one agent each (they
    take what is addressed to the whole channel or to that agent)."""

    __slots__ = ("by_agent", "everyone")

    def __init__(self) -> None:
        self.everyone: set[Listener] = set()
        self.by_agent: dict[str, set[Listener]] = {}

    def __bool__(self) -> bool:
        return bool(self.everyone or self.by_agent)

    def listeners(self, recipients: list[str] | None) -> list[Listener]:
        found = list(self.everyone)
        if recipients is None:
            for listeners in self.by_agent.values():
                found.extend(listeners)
        else:
            for agent in recipients:
                found.extend(self.by_agent.get(agent, ()))
        return found

    def reaches(self, recipients: list[str] | None) -> bool:
        if self.everyone or (recipients is None and self.by_agent):
            return True
        return any(agent in self.by_agent for agent in recipients or ())


class _Fanout:
    """One channel's listeners, grouped by what they want."""

    def __init__(self) -> None:
        self.entries: dict[Listener, tuple[Wants | None, str | None]] = {}
        self.groups: dict[Wants | None, _Group] = {}

    def add(self, listener: Listener, wants: Wants | None, agent: str | None) -> None:
        self.discard(listener)
        self.entries[listener] = (wants, agent)
        group = self.groups.get(wants)
        if group is None:
            group = self.groups[wants] = _Group()
        if agent is None:
            group.everyone.add(listener)
        else:
            group.by_agent.setdefault(agent, set()).add(listener)

    def discard(self, listener: Listener) -> None:
        if listener not in self.entries:
            return
        wants, agent = self.entries.pop(listener)
        group = self.groups[wants]
        if agent is None:
            group.everyone.discard(listener)
        else:
            mine = group.by_agent[agent]
            mine.discard(listener)
            if not mine:
                del group.by_agent[agent]
        if not group:
            del self.groups[wants]

    def _groups_for(self, type_: str) -> list[_Group]:
        return [g for wants, g in self.groups.items() if wants is None or wants(type_)]

    def reaches(self, type_: str, recipients: list[str] | None) -> bool:
        return any(group.reaches(recipients) for group in self._groups_for(type_))

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        recipients = message.get("recipients")
        for group in self._groups_for(message.get("type", "")):
            for listener in group.listeners(recipients):
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

    @property
    def unsent(self) -> int:
        """Messages waiting to be re-published (the bus was unreachable)."""
        return len(self._unsent)

    @property
    def channels(self) -> int:
        return len(self._listeners)

    async def add(
        self,
        channel: str,
        listener: Listener,
        on_gap: GapHandler | None = None,
        wants: Wants | None = None,
        agent: str | None = None,
    ) -> None:
        """``on_gap`` is called (in the event loop, must not block) when
        messages on ``channel`` may have been lost on the way here;
        ``wants`` filters the messages by type; with ``agent``, the
        listener gets only messages for the whole channel (``recipients``
        None) or addressed to that agent."""
        if on_gap is not None:
            self._gap_handlers[listener] = on_gap
        fanout = self._listeners.get(channel)
        if fanout is None:
            fanout = self._listeners[channel] = _Fanout()
            await self.bus.subscribe(channel)
        fanout.add(listener, wants, agent)

    def refilter(self, channel: str, listener: Listener, wants: Wants | None) -> None:
        """Change what a listener already on ``channel`` takes."""
        fanout = self._listeners.get(channel)
        if fanout is not None and listener in fanout.entries:
            fanout.add(listener, wants, fanout.entries[listener][1])

    async def remove(self, channel: str, listener: Listener) -> None:
        self._gap_handlers.pop(listener, None)
        fanout = self._listeners.get(channel)
        if fanout is None:
            return
        fanout.discard(listener)
        if not fanout.entries:
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

    def wanted(self, channel: str, type_: str, recipients: list[str] | None = None) -> bool:
        """Whether a message of this type (and these recipients) on
        ``channel`` can reach anyone: a listener here that takes it or, on a
        shared bus, another instance. Publishers skip building what nobody
        would receive."""
        if self.bus.shared:
            return True
        fanout = self._listeners.get(channel)
        return fanout is not None and fanout.reaches(type_, recipients)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.deliver(channel, message)
        if not self.bus.shared:
            return  # it would only come back here, and be dropped as our own
        data = self._origin + orjson.dumps(message)
        try:
            await self.bus.publish(channel, data)
        except Exception as exc:
            # The message is already durable: whatever the bus raised, the
            # caller's change was committed and its answer is success. It
            # is sent again once Redis answers, and sessions elsewhere
            # catch up from the store.
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
        for listener in tuple(fanout.entries if fanout is not None else ()):
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
        message = orjson.loads(body)
        at = message.get("at")
        if at:
            with contextlib.suppress(ValueError, TypeError):
                lag = time.time() - datetime.fromisoformat(at).timestamp()
                _BUS_LAG.observe(max(lag, 0.0))
        self.deliver(channel, message)
