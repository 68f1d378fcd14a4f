"""Leases: claims and reservations live as long as their holder does.

An agent is live while it holds a WebSocket session on any instance (the
bus counts them) or its HTTP heartbeat has not lapsed
(``agents.http_online_until``). Once it is gone, it is *gone since* the
later of its ``last_seen`` (stamped when its last session closed, or by its
last heartbeat) and its heartbeat's deadline. Gone for longer than a grace
(settings ``reservation_holder_grace_seconds``, default 60 s, and
``claim_holder_grace_seconds``, default 15 min), its reservations and then
its claims are released: ``reservation.released`` with ``release_reason``
``holder_gone`` and ``claim.released`` with ``reason`` ``holder_gone``.
Until then listings mark its claims ``stale`` with ``holder_last_seen``
(:func:`hub.services.beads.claim_rows`).

Who releases. The instance that records an agent going offline (its last
session closed, its heartbeat lapsed, or its instance was reaped) sets a
timer per grace; a sweep on every instance, every ``lease_sweep_seconds``
and at start-up, covers timers lost with their instance. Each release is
one ``DELETE ... RETURNING`` that re-checks the holder is still gone (and,
from the bus, holds no session), so an agent that came back keeps what it
holds and several instances releasing at once announce each row once.
"""

from __future__ import annotations

import asyncio
import logging

from hub.services import background, beads, reservations
from hub.services.clock import iso
from hub.services.context import Hub
from hub.services.events import change

logger = logging.getLogger("beadhub.leases")

#: An agent of ``a`` gone for longer than ``$3`` seconds, not in the bus's
#: online set ``$2``, optionally one of ``$4``. An agent never seen live
#: (no session, no heartbeat: ``last_seen`` and ``http_online_until`` both
#: null) has shown no liveness to lose and keeps what it holds.
_GONE = """
    NOT (a.id = ANY($2::uuid[]))
    AND ($4::uuid[] IS NULL OR a.id = ANY($4::uuid[]))
    AND coalesce(a.http_online_until, '-infinity') <= now()
    AND greatest(a.last_seen, a.http_online_until)
        <= now() - make_interval(secs => $3)
"""

_RELEASE_CLAIMS = f"""
DELETE FROM claims c USING agents a
WHERE c.project_id = $1 AND a.id = c.agent_id AND {_GONE}
RETURNING c.bead_id, c.agent_id, c.claimed_at, c.token, a.alias, a.human_name, a.last_seen,
  (SELECT i.title FROM beads_issues i
   WHERE i.project_id = c.project_id AND i.bead_id = c.bead_id) AS title
"""

_RELEASE_RESERVATIONS = f"""
DELETE FROM reservations r USING agents a
WHERE r.project_id = $1 AND a.id = r.holder_agent_id AND r.expires_at > now() AND {_GONE}
RETURNING {reservations.COLUMNS}
"""

#: Projects where someone may be due (any instance's timers may be gone).
_DUE_PROJECTS = """
SELECT c.project_id FROM claims c JOIN agents a ON a.id = c.agent_id
WHERE coalesce(a.http_online_until, '-infinity') <= now()
  AND greatest(a.last_seen, a.http_online_until)
      <= now() - make_interval(secs => $1)
UNION
SELECT r.project_id FROM reservations r JOIN agents a ON a.id = r.holder_agent_id
WHERE r.expires_at > now() AND coalesce(a.http_online_until, '-infinity') <= now()
  AND greatest(a.last_seen, a.http_online_until)
      <= now() - make_interval(secs => $2)
"""

#: Idempotency keys are kept this long (hub.services.idempotency); tool
#: tasks until their ttl (hub.services.tool_tasks).
_PRUNE = """
WITH k AS (DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'),
     w AS (DELETE FROM waiters WHERE deadline < now() - interval '1 minute'),
     t AS (DELETE FROM tool_tasks WHERE expires_at < now())
SELECT 1
"""


async def release_gone(
    hub: Hub, project_id: str, agent_ids: list[str] | None = None
) -> dict[str, int]:
    """Release what the project's gone holders (of ``agent_ids``, when
    given) hold past their grace; announce each release. Returns counts."""
    settings = hub.settings
    online = list(await hub.bus.online_agents(project_id))
    async with change(hub, project_id) as tx:
        held = await tx.conn.fetch(
            _RELEASE_RESERVATIONS,
            project_id,
            online,
            float(settings.reservation_holder_grace_seconds),
            agent_ids,
        )
        for row in held:
            data = reservations.event_data(row)
            tx.emit("reservation.released", {**data, "release_reason": "holder_gone"})
        claimed = await tx.conn.fetch(
            _RELEASE_CLAIMS,
            project_id,
            online,
            float(settings.claim_holder_grace_seconds),
            agent_ids,
        )
        for row in claimed:
            last_seen = iso(row["last_seen"])
            event = beads.claim_event(row, reason="holder_gone", holder_last_seen=last_seen)
            tx.emit("claim.released", event)
    reservations.cancel_timers(hub, [row["id"] for row in held])
    return {"reservations": len(held), "claims": len(claimed)}


async def sweep(hub: Hub) -> int:
    """Release, in every project, what gone holders hold past their grace;
    prune day-old idempotency keys and long-dead waiter rows."""
    settings = hub.settings
    rows = await hub.store.fetch(
        _DUE_PROJECTS,
        float(settings.claim_holder_grace_seconds),
        float(settings.reservation_holder_grace_seconds),
    )
    released = 0
    for row in rows:
        counts = await release_gone(hub, row["project_id"])
        released += counts["claims"] + counts["reservations"]
    await hub.store.execute(_PRUNE)
    return released


class Leases:
    """One hub's grace timers and its sweep."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="lease-sweep")

    async def stop(self) -> None:
        timers, self._timers = self._timers, set()
        await background.stop(timers, [*self._tasks, self._sweeper])

    def agent_left(self, project_id: str, agent_id: str) -> None:
        """The agent just went offline: look again when each grace ends."""
        settings = self.hub.settings
        for grace in {
            settings.reservation_holder_grace_seconds,
            settings.claim_holder_grace_seconds,
        }:
            self._arm(grace, project_id, agent_id)

    def _arm(self, grace: float, project_id: str, agent_id: str) -> None:

        def fire() -> None:
            self._timers.discard(handle)
            background.spawn(self._release(project_id, agent_id), self._tasks)

        # A little late, so the database's clock has certainly passed it.
        handle = background.later(grace + 0.05, fire)
        self._timers.add(handle)

    async def _release(self, project_id: str, agent_id: str) -> None:
        try:
            await release_gone(self.hub, project_id, [agent_id])
        except Exception as exc:  # the sweep catches what a failed timer left
            logger.warning("releasing what agent %s held failed: %s", agent_id, exc)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                released = await sweep(self.hub)
                if released:
                    logger.info("released %d claims/reservations of gone holders", released)
            except Exception as exc:
                logger.warning("lease sweep failed: %s", exc)
            await asyncio.sleep(self.hub.settings.lease_sweep_seconds)


_machines: dict[int, Leases] = {}


def agent_left(hub: Hub, project_id: str, agent_id: str) -> None:
    """Presence callback: ``agent_id`` has no session and no live heartbeat."""
    machine = _machines.get(id(hub))
    if machine is not None:
        machine.agent_left(project_id, agent_id)


def start(hub: Hub) -> Leases:
    machine = _machines.get(id(hub))
    if machine is None:
        machine = _machines[id(hub)] = Leases(hub)
        machine.start()
    return machine


async def stop(hub: Hub) -> None:
    machine = _machines.pop(id(hub), None)
    if machine is not None:
        await machine.stop()
