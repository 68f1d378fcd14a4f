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

import time
from datetime import datetime

from hub.services import background, clock
from hub.services.context import Actor, Hub

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


class _Uses:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: key id -> when it was last noted (monotonic)
        self.noted_at: dict[str, float] = {}
        #: key id -> when it was used, not written yet
        self.pending: dict[str, datetime] = {}
        self.writer = background.Batched(
            FLUSH_DELAY_SECONDS, self.write, lambda: bool(self.pending), "when keys were last used"
        )

    async def write(self) -> None:
        pending, self.pending = self.pending, {}
        await self.hub.store.execute(_WRITE, list(pending), list(pending.values()))


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
    uses.writer.arm()


async def flush(hub: Hub) -> None:
    """Write what this instance has noted now: before listing keys, and when
    the hub stops (before its store closes)."""
    uses = _USES.get(id(hub))
    if uses is not None:
        await uses.writer.flush()


def forget(hub: Hub) -> None:
    """The hub stopped: drop its notes."""
    _USES.pop(id(hub), None)
