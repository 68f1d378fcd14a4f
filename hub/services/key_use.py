"""When each api key was last used (``api_keys.last_used_at``, listed by
``keys.list``), to the minute.

A key is used on every call of the HTTP shim and of ``/mcp`` and at every
WebSocket session's handshake: a write for each would double the store's
work. So :func:`noted` (called once a credential is resolved) notes a key
at most once a minute per instance, in memory, and the notes are written
a moment later in one statement per batch, off the caller's path and in
a fresh context (hub.services.background). A hub that dies before a
flush loses only that advisory time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from hub.services import background, clock
from hub.services.context import Actor, Hub

logger = logging.getLogger("beadhub.keys")

#: A key used again within this many seconds is not noted again.
EVERY_SECONDS = 60.0
#: How long notes wait for company before they are written.
FLUSH_DELAY_SECONDS = 1.0
_MAX_REMEMBERED = 100_000

_WRITE = """
UPDATE api_keys k SET last_used_at = greatest(coalesce(k.last_used_at, x.at), x.at)
FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, at)
WHERE k.id = x.id
"""


@dataclass
class _Uses:
    hub: Hub
    #: key id -> when it was last noted (monotonic)
    noted_at: dict[str, float] = field(default_factory=dict)
    #: key id -> when it was used, not written yet
    pending: dict[str, datetime] = field(default_factory=dict)
    handle: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None


_USES: dict[int, _Uses] = {}


def noted(hub: Hub, actor: Actor) -> None:
    """``actor`` authenticated with its api key just now."""
    if not actor.credential.startswith("key:"):
        return
    key_id = actor.credential[4:]
    uses = _USES.get(id(hub))
    if uses is None:
        uses = _USES[id(hub)] = _Uses(hub)
    now = time.monotonic()
    last = uses.noted_at.get(key_id)
    if last is not None and now - last < EVERY_SECONDS:
        return
    if len(uses.noted_at) >= _MAX_REMEMBERED:
        uses.noted_at = {k: t for k, t in uses.noted_at.items() if now - t < EVERY_SECONDS}
    uses.noted_at[key_id] = now
    uses.pending[key_id] = clock.now()
    if uses.handle is None and uses.task is None:
        uses.handle = background.later(FLUSH_DELAY_SECONDS, _start_flush, uses)


def _start_flush(uses: _Uses) -> None:
    uses.handle = None
    uses.task = background.spawn(_write(uses))


async def _write(uses: _Uses) -> None:
    try:
        while uses.pending:
            pending, uses.pending = uses.pending, {}
            await uses.hub.store.execute(_WRITE, list(pending), list(pending.values()))
    except Exception:
        # An advisory time: losing one batch must not disturb anything.
        logger.warning("could not record when keys were last used", exc_info=True)
    finally:
        uses.task = None


async def flush(hub: Hub) -> None:
    """Write what this instance has noted now: before listing keys, and when
    the hub stops (before its store closes). The write runs in its own
    task, never on the caller's connection or transaction."""
    uses = _USES.get(id(hub))
    if uses is None:
        return
    if uses.task is not None:
        await asyncio.shield(uses.task)
    if uses.handle is not None:
        uses.handle.cancel()
        uses.handle = None
    if uses.pending and uses.task is None:
        _start_flush(uses)
    if uses.task is not None:
        await asyncio.shield(uses.task)


def forget(hub: Hub) -> None:
    """The hub stopped: drop its notes."""
    _USES.pop(id(hub), None)
