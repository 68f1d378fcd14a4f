"""Waiting in line: a claim or an acquire that meets a conflict queues and
is granted by push, instead of polling on ``retry_after_seconds``.

A waiting call (``wait`` seconds) is one :class:`Turn`. It starts
listening on its project's channel *before* its first attempt, so no
release can slip between an attempt and the sleep. Each attempt is one
transaction that takes the same locks as the grant it tries (the
reservation advisory locks of its paths; the claim's own advisory lock),
reads the line (``waiters``, migration 0016), tries only what no earlier
waiter is queued for, and enters the line for the rest: so the line's
``seq`` order is arrival order, and the decision is PostgreSQL's. Then the
call sleeps until an event says what it waits for may be free: a release,
an expiry, a revocation, a holder that left (``holder_gone``), or an
earlier waiter that left the line (``<kind>.dequeued``), published by
whichever instance made the change and carried to every instance by the
bus. Nothing loops over the database; a woken waiter that is not first in
line sees so in one read and sleeps again.

A call leaves the line when it is granted (in the granting transaction),
when its wait ends, or when its caller goes away (the WebSocket session's
requests are cancelled when it closes; an HTTP long request is cancelled
when the client disconnects): the rows go, and ``<kind>.dequeued`` wakes
the next in line. If its instance dies first, its rows stop counting at
their deadline (at most ``queue_max_wait_seconds``).

A call without ``wait`` is decided as before and does not look at the
line: it can take a path that is free at that instant, ahead of waiters
that are about to be woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import asyncpg

from hub.services import background, clock, events
from hub.services.clock import iso
from hub.services.context import Actor, Hub

logger = logging.getLogger("beadhub.queues")

#: Per kind: the field of the key in events, and the events that may free it.
KEY_FIELD = {"reservation": "path", "claim": "bead_id"}
_WAKERS = {
    "reservation": frozenset(
        {
            "reservation.released",
            "reservation.expired",
            "reservation.revoked",
            "reservation.dequeued",
        }
    ),
    "claim": frozenset({"claim.released", "claim.dequeued"}),
}
#: One filter object per kind, so the relay tests all waiters of a kind once.
_WANTS: dict[str, Callable[[str], bool]] = {
    kind: types.__contains__ for kind, types in _WAKERS.items()
}

_LINE = """
SELECT id, seq, key, agent_id, alias, exclusive, since, deadline
FROM waiters WHERE project_id = $1 AND kind = $2 AND deadline > now()
ORDER BY seq
"""

_ENTER = """
INSERT INTO waiters (project_id, kind, key, agent_id, alias, exclusive, instance_id, deadline)
SELECT $1, $2, k.key, $4, $5, k.exclusive, $6, now() + make_interval(secs => $7)
FROM unnest($3::text[], $8::boolean[]) AS k(key, exclusive)
RETURNING id, seq, key, agent_id, alias, exclusive, since, deadline
"""

_LEAVE = """
DELETE FROM waiters WHERE id = ANY($1::uuid[])
RETURNING id, seq, key, agent_id, alias, exclusive, since, deadline
"""


def check_wait(hub: Hub, wait: float | None) -> float | None:
    """``wait`` as given, or None for no wait (0 and None)."""
    if wait is None or wait == 0:
        return None
    return clock.check_wait(wait, hub.settings.queue_max_wait_seconds)


def waiter_view(kind: str, row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {
        "waiter_id": row["id"],
        "kind": kind,
        KEY_FIELD[kind]: row["key"],
        "alias": row["alias"],
        "agent_id": row["agent_id"],
        "exclusive": row["exclusive"],
        "since": iso(row["since"]),
        "deadline": iso(row["deadline"]),
    }


Overlap = Callable[[str, str], bool]


class Turn:
    """One waiting call: its place in line and its wake-up."""

    def __init__(
        self,
        hub: Hub,
        actor: Actor,
        kind: str,
        wait: float,
        wants: Callable[[dict[str, Any]], bool],
    ) -> None:
        self.hub = hub
        self.actor = actor
        self.agent_id = actor.require_agent()
        self.kind = kind
        self.woken = asyncio.Event()
        #: This call's rows in line: key -> (waiter id, seq).
        self.rows: dict[str, tuple[str, int]] = {}
        self._wants = wants
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.started = loop.time()
        self.deadline = self.started + wait
        self._channel = events.channel(actor.project_id)

    async def __aenter__(self) -> Turn:
        await self.hub.relay.add(self._channel, self._on_event, wants=_WANTS[self.kind])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hub.relay.remove(self._channel, self._on_event)
        if self.rows:
            reason = "timeout" if exc_type is None else "left"
            # Leave the line even when the call was cancelled (its caller
            # went away): the next in line must hear of it.
            task = background.spawn(self._leave_all(reason))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    @property
    def waited_seconds(self) -> float:
        return round(self._loop.time() - self.started, 3)

    def _on_event(self, message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        mine = {waiter_id for waiter_id, _ in self.rows.values()}
        if data.get("waiter_id") in mine:
            return
        try:
            wanted = self._wants(data)
        except Exception:  # a malformed event: look rather than miss a release
            wanted = True
        if wanted:
            self.woken.set()

    async def sleep(self) -> bool:
        """Until woken (True) or the deadline (False)."""
        remaining = self.deadline - self._loop.time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await self.woken.wait()
        except TimeoutError:
            return False
        return True

    # -- in an attempt's transaction ------------------------------------------------

    async def line(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await conn.fetch(_LINE, self.actor.project_id, self.kind))

    def ahead(
        self, line: list[asyncpg.Record], key: str, exclusive: bool, overlap: Overlap
    ) -> asyncpg.Record | None:
        """The earliest waiter of another call queued before this one for
        something overlapping ``key`` (any such waiter, while this call is
        not in line yet); shared never waits for shared."""
        mine = {waiter_id for waiter_id, _ in self.rows.values()}
        place = self.rows.get(key)
        for row in line:
            if place is not None and row["seq"] >= place[1]:
                return None
            if row["id"] in mine or not (row["exclusive"] or exclusive):
                continue
            if overlap(row["key"], key):
                return row
        return None

    async def enter(
        self, conn: asyncpg.Connection, keys: list[tuple[str, bool]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Queue for the keys this call is not in line for yet; return the
        ``<kind>.queued`` events to store."""
        new = [(key, exclusive) for key, exclusive in keys if key not in self.rows]
        if not new:
            return []
        rows = await conn.fetch(
            _ENTER,
            self.actor.project_id,
            self.kind,
            [key for key, _ in new],
            self.agent_id,
            self.actor.alias,
            self.hub.settings.instance_id,
            max(0.001, self.deadline - self._loop.time()),
            [exclusive for _, exclusive in new],
        )
        for row in rows:
            self.rows[row["key"]] = (row["id"], row["seq"])
        return [(f"{self.kind}.queued", waiter_view(self.kind, row)) for row in rows]

    async def granted(self, conn: asyncpg.Connection, keys: list[str]) -> None:
        """These keys were granted in this transaction: out of line."""
        ids = [self.rows.pop(key)[0] for key in keys if key in self.rows]
        if ids:
            await conn.execute("DELETE FROM waiters WHERE id = ANY($1::uuid[])", ids)

    async def blocked(self, keys: list[tuple[str, bool]], overlap: Overlap) -> set[str]:
        """Without locks, in one read: the keys still behind an earlier
        waiter. A woken waiter that is not first in line sleeps again after
        it. For a key this call is queued for, "first in line" cannot
        change back: every earlier entry was committed before this call's
        own (they were made under colliding locks), and later ones queue
        behind it. A key this call is not queued for is only an estimate
        (an earlier waiter may be entering); the locked attempt decides."""
        async with self.hub.store.connection() as conn:
            line = await self.line(conn)
        return {k for k, exclusive in keys if self.ahead(line, k, exclusive, overlap) is not None}

    async def leave_granted(self, keys: list[str]) -> None:
        """These keys were granted outside an attempt's transaction (first
        in line, by a plain acquire): out of line."""
        ids = [self.rows.pop(key)[0] for key in keys if key in self.rows]
        if ids:
            await self.hub.store.execute("DELETE FROM waiters WHERE id = ANY($1::uuid[])", ids)

    async def _leave_all(self, reason: str) -> None:
        ids = [waiter_id for waiter_id, _ in self.rows.values()]
        self.rows.clear()
        try:
            async with events.change(self.hub, self.actor.project_id) as tx:
                for row in await tx.conn.fetch(_LEAVE, ids):
                    tx.emit(f"{self.kind}.dequeued", {**waiter_view(self.kind, row), "why": reason})
        except Exception as exc:  # the rows stop counting at their deadline
            logger.warning("could not take waiters %s out of line: %s", ids, exc)


async def waiting(hub: Hub, project_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Who waits for what, since when, first in line first; ``position``
    counts from 1 per path or issue."""
    rows = await hub.store.fetch(
        """
        SELECT id, kind, key, agent_id, alias, exclusive, since, deadline,
               row_number() OVER (PARTITION BY kind, key ORDER BY seq) AS position
        FROM waiters
        WHERE project_id = $1 AND deadline > now() AND ($2::text IS NULL OR kind = $2)
        ORDER BY seq
        """,
        project_id,
        kind,
    )
    return [{**waiter_view(row["kind"], row), "position": int(row["position"])} for row in rows]
