"""The shape of the work, per hour, from the store: messages sent, claims
opened and closed, escalations raised, and how long humans took to answer
(the dashboard's charts). Every figure is a count over indexed rows of the
caller's project; nothing is kept in memory between calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hub.services import clock
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params

MAX_HOURS = 24 * 14

_SERIES = """
WITH hours AS (
    SELECT generate_series(date_trunc('hour', $2::timestamptz),
                           date_trunc('hour', now()), interval '1 hour') AS h
), mail AS (
    SELECT date_trunc('hour', created_at) AS h, count(*) AS n FROM mail_messages
    WHERE project_id = $1 AND created_at >= $2 GROUP BY 1
), chat AS (
    SELECT date_trunc('hour', created_at) AS h, count(*) AS n FROM chat_messages
    WHERE project_id = $1 AND created_at >= $2 GROUP BY 1
), claims AS (
    SELECT date_trunc('hour', created_at) AS h,
           count(*) FILTER (WHERE type = 'claim.acquired') AS opened,
           count(*) FILTER (WHERE type = 'claim.released') AS closed
    FROM events
    WHERE project_id = $1 AND created_at >= $2
      AND type IN ('claim.acquired', 'claim.released')
    GROUP BY 1
), esc AS (
    SELECT date_trunc('hour', created_at) AS h, count(*) AS n,
           avg(extract(epoch FROM responded_at - created_at))
               FILTER (WHERE responded_at IS NOT NULL) AS answer_seconds
    FROM escalations WHERE project_id = $1 AND created_at >= $2 GROUP BY 1
)
SELECT hours.h, coalesce(mail.n, 0) AS mail, coalesce(chat.n, 0) AS chat,
       coalesce(claims.opened, 0) AS claims_opened, coalesce(claims.closed, 0) AS claims_closed,
       coalesce(esc.n, 0) AS escalations, esc.answer_seconds
FROM hours
LEFT JOIN mail ON mail.h = hours.h
LEFT JOIN chat ON chat.h = hours.h
LEFT JOIN claims ON claims.h = hours.h
LEFT JOIN esc ON esc.h = hours.h
ORDER BY hours.h
"""

_ANSWERS = """
SELECT count(*) AS answered,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM responded_at - created_at)) AS median_seconds,
       max(extract(epoch FROM responded_at - created_at)) AS max_seconds
FROM escalations
WHERE project_id = $1 AND created_at >= $2 AND responded_at IS NOT NULL
"""


async def get(hub: Hub, actor: Actor, hours: int = 24) -> dict[str, Any]:
    if not 1 <= hours <= MAX_HOURS:
        raise invalid_params(f"hours must be between 1 and {MAX_HOURS}", field="hours")
    since = clock.now() - timedelta(hours=hours - 1)
    async with hub.store.pinned():
        rows = await hub.store.fetch(_SERIES, actor.project_id, since)
        answers = await hub.store.fetchrow(_ANSWERS, actor.project_id, since)
    assert answers is not None

    def seconds(value: Any) -> float | None:
        return None if value is None else round(float(value), 1)

    return {
        "hours": hours,
        "series": [
            {
                "hour": iso(r["h"]),
                "messages": int(r["mail"]) + int(r["chat"]),
                "mail": int(r["mail"]),
                "chat": int(r["chat"]),
                "claims_opened": int(r["claims_opened"]),
                "claims_closed": int(r["claims_closed"]),
                "escalations": int(r["escalations"]),
                "answer_seconds": seconds(r["answer_seconds"]),
            }
            for r in rows
        ],
        "answers": {
            "answered": int(answers["answered"]),
            "median_seconds": seconds(answers["median_seconds"]),
            "max_seconds": seconds(answers["max_seconds"]),
        },
    }
