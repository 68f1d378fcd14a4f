"""What happened recently in a project: the newest events, newest last.

The dashboard reads this when it opens (and when it reconnects without a
cursor) to fill its mail/chat feed and an agent's timeline; afterwards the
live event stream keeps them current. It is a read of the same event log
that backs resume, so the feed and the stream never disagree.
"""

from __future__ import annotations

from typing import Any

from hub.services import events
from hub.services.context import Actor, Hub

#: How far back one request looks, in project events: keeps the cost of a
#: filtered read (an agent's timeline, one event type) bounded however old
#: the project is.
SCAN_WINDOW = 5000

_RECENT = """
SELECT seq, id, project_id, type, recipients, payload, created_at
FROM (
    SELECT * FROM events
    WHERE project_id = $1 AND ($2::bigint IS NULL OR seq < $2)
    ORDER BY seq DESC
    LIMIT $3
) e
WHERE ($4::uuid IS NULL OR e.recipients IS NULL OR $4::uuid = ANY(e.recipients))
  AND ($5::text[] IS NULL OR e.type = ANY($5::text[]))
  AND ($6::uuid IS NULL OR $6::uuid = ANY(e.recipients)
       OR strpos(e.payload::text, $6::text) > 0)
ORDER BY seq DESC
LIMIT $7
"""


async def recent(
    hub: Hub,
    actor: Actor,
    *,
    limit: int = 100,
    types: list[str] | None = None,
    agent_id: str | None = None,
    before: int | None = None,
) -> dict[str, Any]:
    """The project's newest events visible to the caller (all of them for a
    human), oldest first. ``types`` keeps only those event types;
    ``agent_id`` keeps the events that concern that agent (it is a
    recipient, or its id appears in the event's data); ``before`` pages
    back from a cursor. ``cursor`` is the project's latest cursor, to
    resume the live stream from."""
    rows = await hub.store.fetch(
        _RECENT,
        actor.project_id,
        before,
        SCAN_WINDOW,
        actor.agent_id,
        types or None,
        agent_id,
        limit,
    )
    found = [events.Event.from_row(row).wire() for row in reversed(rows)]
    cursor = await events.latest_cursor(hub, actor.project_id)
    return {"events": found, "cursor": str(cursor)}
