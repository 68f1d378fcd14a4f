"""Full-text search (PostgreSQL's own) over mail, chat, escalations and
issues, newest first, paged by keyset.

Each kind is matched through the expression GIN index of migration
0018_search (the expressions below must stay identical to the index's), so
a search reads only the matching rows' index entries, never the tables'.
Hits are ordered by (time, id) descending and a page continues strictly
after the previous page's last hit (``after``), so paging through the whole
history costs the same on page 200 as on page 1 and never repeats or skips
a row that existed when paging started.

What a caller may find is what it may read: a human sees the whole project;
an agent sees the mail it sent or received, the chats it takes part in, and
every escalation and issue of its project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hub.services import clock
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params

KINDS = ("mail", "chat", "escalation", "issue")
SNIPPET_CHARS = 240

# $1 project, $2 tsquery text, $3 caller's agent id (NULL: a human),
# $4 agent filter (alias), $5 since, $6 until, $7 after-time, $8 after-id,
# $9 limit. Each branch is ordered and limited on its own (so each is an
# index scan plus a top-N sort of its own matches) before the union's.
_KEYSET = "($7::timestamptz IS NULL OR ({at}, {id}) < ($7, $8::text))"
_DATES = "($5::timestamptz IS NULL OR {at} >= $5) AND ($6::timestamptz IS NULL OR {at} < $6)"

_BRANCHES = {
    "mail": """
SELECT 'mail' AS kind, m.id::text AS id, m.created_at AS at, m.from_alias AS alias,
       m.subject AS title, m.body AS body, m.thread_id::text AS ref
FROM q, mail_messages m
WHERE m.project_id = $1
  AND to_tsvector('english'::regconfig, m.subject || ' ' || m.body) @@ q.q
  AND ($3::uuid IS NULL OR m.from_agent_id = $3 OR EXISTS (
        SELECT 1 FROM mail_deliveries d WHERE d.message_id = m.id AND d.recipient_id = $3))
  AND ($4::text IS NULL OR m.from_alias = $4 OR EXISTS (
        SELECT 1 FROM mail_deliveries d JOIN agents a ON a.id = d.recipient_id
        WHERE d.message_id = m.id AND a.alias = $4))
  AND {dates} AND {keyset}
ORDER BY m.created_at DESC, m.id::text DESC LIMIT $9""",
    "chat": """
SELECT 'chat', c.id::text, c.created_at, c.from_alias, '', c.body, c.session_id::text
FROM q, chat_messages c
WHERE c.project_id = $1
  AND to_tsvector('english'::regconfig, c.body) @@ q.q
  AND ($3::uuid IS NULL OR EXISTS (
        SELECT 1 FROM chat_participants p WHERE p.session_id = c.session_id AND p.agent_id = $3))
  AND ($4::text IS NULL OR c.from_alias = $4)
  AND {dates} AND {keyset}
ORDER BY c.created_at DESC, c.id::text DESC LIMIT $9""",
    "escalation": """
SELECT 'escalation', e.id::text, e.created_at, e.alias, e.subject,
       e.situation || coalesce(E'\\n\\n' || e.response, ''), e.bead_id
FROM q, escalations e
WHERE e.project_id = $1
  AND to_tsvector('english'::regconfig,
                  e.subject || ' ' || e.situation || ' ' || coalesce(e.response, '')) @@ q.q
  AND ($4::text IS NULL OR e.alias = $4 OR e.responded_by = $4)
  AND {dates} AND {keyset}
ORDER BY e.created_at DESC, e.id::text DESC LIMIT $9""",
    "issue": """
SELECT 'issue', b.bead_id, coalesce(b.created_at, b.synced_at), b.assignee, b.title,
       coalesce(b.raw->>'description', ''), b.status
FROM q, beads_issues b
WHERE b.project_id = $1
  AND to_tsvector('english'::regconfig,
                  b.bead_id || ' ' || b.title || ' ' || coalesce(b.raw->>'description', '')) @@ q.q
  AND ($4::text IS NULL OR b.assignee = $4)
  AND {dates} AND {keyset}
ORDER BY coalesce(b.created_at, b.synced_at) DESC, b.bead_id DESC LIMIT $9""",
}

_AT = {
    "mail": "m.created_at",
    "chat": "c.created_at",
    "escalation": "e.created_at",
    "issue": "coalesce(b.created_at, b.synced_at)",
}
_ID = {"mail": "m.id::text", "chat": "c.id::text", "escalation": "e.id::text", "issue": "b.bead_id"}


def _sql(kinds: list[str]) -> str:
    branches = [
        "("
        + _BRANCHES[k].format(
            dates=_DATES.format(at=_AT[k]), keyset=_KEYSET.format(at=_AT[k], id=_ID[k])
        )
        + ")"
        for k in kinds
    ]
    return f"""
WITH q AS MATERIALIZED (
    -- Every parameter typed once, whichever branches use it.
    SELECT websearch_to_tsquery('english'::regconfig, $2::text) AS q, $3::uuid AS me,
           $4::text AS agent, $5::timestamptz AS since, $6::timestamptz AS until,
           $7::timestamptz AS after_at, $8::text AS after_id, $9::int AS n
),
hits (kind, id, at, alias, title, body, ref) AS ({" UNION ALL ".join(branches)})
SELECT kind, id, at, alias, title, ref, left(body, {SNIPPET_CHARS}) AS snippet,
       length(body) > {SNIPPET_CHARS} AS cut
FROM hits ORDER BY at DESC, id DESC LIMIT $9
"""


def _cursor(at: datetime, hit_id: str) -> str:
    return f"{iso(at)}|{hit_id}"


def _parse_cursor(after: str) -> tuple[datetime, str]:
    at, sep, hit_id = after.partition("|")
    try:
        if not sep or not hit_id:
            raise ValueError
        return datetime.fromisoformat(at.replace("Z", "+00:00")), hit_id
    except ValueError:
        msg = f"after {after!r} is not a cursor from search.query"
        raise invalid_params(msg, field="after") from None


async def query(
    hub: Hub,
    actor: Actor,
    *,
    text: str,
    types: list[str] | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    after: str | None = None,
) -> dict[str, Any]:
    """One page of hits, newest first; ``next`` continues after it (None:
    that was the last page)."""
    if not text.strip():
        raise invalid_params("text is empty: give the words to search for", field="text")
    kinds = [k for k in KINDS if types is None or k in types]
    unknown = sorted(set(types or []) - set(KINDS))
    if unknown:
        raise invalid_params(f"unknown type {unknown[0]!r}: one of {', '.join(KINDS)}")
    limit = max(1, min(limit, 500))
    after_at, after_id = _parse_cursor(after) if after else (None, None)
    rows = await hub.store.fetch(
        _sql(kinds),
        actor.project_id,
        text,
        actor.agent_id,
        agent,
        since,
        until,
        after_at,
        after_id,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    hits = [
        {
            "type": r["kind"],
            "id": r["id"],
            "at": iso(r["at"]),
            "alias": r["alias"] or "",
            "title": r["title"] or "",
            "snippet": r["snippet"] + ("…" if r["cut"] else ""),
            # mail: its thread; chat: its session; escalation: its issue;
            # issue: its status.
            "ref": r["ref"],
        }
        for r in rows
    ]
    return {
        "hits": hits,
        "count": len(hits),
        "next": _cursor(rows[-1]["at"], rows[-1]["id"]) if more else None,
        "searched_at": iso(clock.now()),
    }
