"""Beads issues: bd's JSONL, full and incremental sync, ready work, the
parent chain, and the SQL of the claim rows (the claim API is in
:mod:`hub.services.claims`).

A sync is parsed completely before anything is written, so one bad line
rejects the whole sync and changes nothing. Syncs of one project are
serialised by an advisory transaction lock: a full sync's "delete what the
file lacks" must not interleave with another sync's upserts.

The issue's status mirrors bd; the claim is the hub's own record of who
works on it. A sync turns status changes into claim changes for the
syncing agent: an issue that becomes ``in_progress`` is claimed for it (if
someone else holds it, the holder keeps it and the sync reports a
conflict), one that becomes ``closed`` is released whoever held it, and one
moved back from ``in_progress`` releases the syncing agent's own claim.
Only changes count: a full sync that re-sends an unchanged ``open`` issue
does not drop a claim taken over the WebSocket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import asyncpg
import orjson

from hub.services import clock
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import Change, change
from protocol.errors import RpcError, conflict, invalid_params, not_found
from protocol.methods.beads import BEAD_ID_MAX, BEAD_ID_RE, MAX_DELETED_IDS

STATUSES = ("open", "in_progress", "blocked", "closed")
TIMESTAMP_FIELDS = ("created_at", "updated_at", "closed_at")
TEXT_FIELDS = ("title", "issue_type", "assignee")
#: A parent chain longer than this is treated as a cycle and cut there.
MAX_APEX_DEPTH = 32
#: First key of the advisory lock that serialises a project's syncs.
SYNC_LOCK_CLASS = 0x0BEAD5

Mode = Literal["full", "incremental"]


# -- parsing ------------------------------------------------------------------


@dataclass(slots=True)
class Issue:
    """The fields the hub queries, read from one JSONL object (``raw``)."""

    bead_id: str
    title: str
    status: str
    priority: int | None
    issue_type: str
    assignee: str
    labels: list[str]
    parent_id: str | None
    blocked_by: list[str]
    created_at: str | None
    updated_at: str | None
    closed_at: str | None
    raw: dict[str, Any]


def check_bead_id(value: Any, what: str = "bead_id") -> str:
    if not isinstance(value, str) or not value:
        raise invalid_params(f"{what} must be a non-empty string")
    if len(value) > BEAD_ID_MAX or not BEAD_ID_RE.match(value):
        raise invalid_params(f"{what} {value[:BEAD_ID_MAX]!r} is not a valid issue id")
    return value


def parse_issue(obj: dict[str, Any], bad: Callable[[str], RpcError]) -> Issue:
    """Read the known fields, checking their types; unknown fields stay in
    ``raw`` untouched. ``bad(problem)`` builds the error to raise."""
    if "id" not in obj:
        raise bad("missing id")
    try:
        bead_id = check_bead_id(obj["id"], "id")
    except RpcError as exc:
        raise bad(exc.message) from None

    def text(name: str) -> str:
        value = obj.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad(f"{name} must be a string")
        return value

    def timestamp(name: str) -> str | None:
        value = text(name)
        if not value:
            return None
        try:
            return iso(clock.parse(value))
        except ValueError:
            raise bad(f"{name} {value!r} is not an RFC 3339 timestamp") from None

    status = text("status").strip().lower()
    priority = obj.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise bad("priority must be an integer")
    if priority is not None and not -(2**31) <= priority < 2**31:
        raise bad(f"priority {priority} is out of range")
    labels = obj.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise bad("labels must be a list of strings")
    parent_id, blocked_by = _dependencies(bead_id, obj.get("dependencies"), bad)
    return Issue(
        bead_id=bead_id,
        title=text("title"),
        status=status if status in STATUSES else "open",
        priority=priority,
        issue_type=text("issue_type"),
        assignee=text("assignee"),
        labels=labels,
        parent_id=parent_id,
        blocked_by=blocked_by,
        created_at=timestamp("created_at"),
        updated_at=timestamp("updated_at"),
        closed_at=timestamp("closed_at"),
        raw=obj,
    )


def _dependencies(
    bead_id: str, deps: Any, bad: Callable[[str], RpcError]
) -> tuple[str | None, list[str]]:
    if deps is None:
        return None, []
    if not isinstance(deps, list):
        raise bad("dependencies must be a list")
    parent_id: str | None = None
    blocked_by: list[str] = []
    for n, dep in enumerate(deps):
        if not isinstance(dep, dict):
            raise bad(f"dependencies[{n}] must be an object")
        target, kind = dep.get("depends_on_id"), dep.get("type")
        if not isinstance(target, str) or not isinstance(kind, str):
            raise bad(f"dependencies[{n}] needs string depends_on_id and type")
        # bd lists an issue's dependencies on the issue itself; a stray
        # entry about another issue says nothing about this one.
        if dep.get("issue_id", bead_id) != bead_id:
            continue
        if kind == "blocks" and target not in blocked_by:
            blocked_by.append(target)
        elif kind == "parent-child" and parent_id is None:
            parent_id = target
    return parent_id, blocked_by


def parse_jsonl(text: str, source: str = "issues_jsonl") -> list[Issue]:
    """Every issue in ``text``; raises INVALID_PARAMS naming the first bad
    line. A repeated id keeps its last line, as bd's own import does."""
    issues: dict[str, Issue] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue

        def bad(problem: str, number: int = number) -> RpcError:
            return invalid_params(f"{source} line {number}: {problem}", field=source, line=number)

        if "\\u0000" in line:
            # PostgreSQL text and jsonb cannot hold NUL.
            raise bad("contains \\u0000 (NUL), which cannot be stored")
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise bad("expected a JSON object")
        issue = parse_issue(obj, bad)
        issues.pop(issue.bead_id, None)
        issues[issue.bead_id] = issue
    return list(issues.values())


# -- sync ---------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    issues: list[Issue]
    deleted_ids: list[str]


def _plan(
    mode: str,
    issues_jsonl: str | None,
    changed_issues: str | None,
    deleted_ids: list[str] | None,
) -> _Plan:
    if mode == "full":
        if issues_jsonl is None:
            raise invalid_params("a full sync needs issues_jsonl (the whole issues.jsonl)")
        if changed_issues or deleted_ids:
            raise invalid_params(
                "a full sync takes issues_jsonl only; changed_issues and deleted_ids "
                "belong to an incremental sync"
            )
        return _Plan(parse_jsonl(issues_jsonl, "issues_jsonl"), [])
    if mode != "incremental":
        raise invalid_params(f"mode must be 'full' or 'incremental', not {mode!r}")
    if issues_jsonl:
        raise invalid_params("an incremental sync takes changed_issues, not issues_jsonl")
    if deleted_ids is not None and not isinstance(deleted_ids, list):
        raise invalid_params("deleted_ids must be a list of issue ids")
    deleted = list(dict.fromkeys(check_bead_id(x, "deleted id") for x in deleted_ids or []))
    if len(deleted) > MAX_DELETED_IDS:
        raise invalid_params(f"at most {MAX_DELETED_IDS} deleted_ids per sync")
    issues = parse_jsonl(changed_issues or "", "changed_issues")
    both = sorted({i.bead_id for i in issues} & set(deleted))
    if both:
        raise invalid_params(
            f"{', '.join(both)}: both changed and deleted in one sync", bead_ids=both
        )
    return _Plan(issues, deleted)


_UPSERT = """
INSERT INTO beads_issues AS b
    (project_id, bead_id, repo_id, title, status, priority, issue_type, assignee, labels,
     parent_id, blocked_by, created_at, updated_at, closed_at, raw)
SELECT $1, x.bead_id, $2, x.title, x.status, x.priority, x.issue_type, x.assignee, x.labels,
       x.parent_id, x.blocked_by, x.created_at, x.updated_at, x.closed_at, x.raw
FROM jsonb_to_recordset($3::jsonb) AS x(
    bead_id text, title text, status text, priority integer, issue_type text, assignee text,
    labels text[], parent_id text, blocked_by text[], created_at timestamptz,
    updated_at timestamptz, closed_at timestamptz, raw jsonb)
ON CONFLICT (project_id, bead_id) DO UPDATE SET
    repo_id = EXCLUDED.repo_id, title = EXCLUDED.title, status = EXCLUDED.status,
    priority = EXCLUDED.priority, issue_type = EXCLUDED.issue_type,
    assignee = EXCLUDED.assignee, labels = EXCLUDED.labels, parent_id = EXCLUDED.parent_id,
    blocked_by = EXCLUDED.blocked_by, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, closed_at = EXCLUDED.closed_at, raw = EXCLUDED.raw,
    synced_at = now()
-- An unchanged line is not rewritten, so "updated" counts real changes.
WHERE b.raw IS DISTINCT FROM EXCLUDED.raw OR b.repo_id IS DISTINCT FROM EXCLUDED.repo_id
RETURNING b.bead_id, (b.xmax = 0) AS inserted
"""

_DELETE_ABSENT = """
DELETE FROM beads_issues
WHERE project_id = $1 AND repo_id IS NOT DISTINCT FROM $2 AND bead_id <> ALL($3::text[])
RETURNING bead_id, title
"""

_DELETE_IDS = """
DELETE FROM beads_issues WHERE project_id = $1 AND bead_id = ANY($2::text[])
RETURNING bead_id, title
"""


async def sync(
    hub: Hub,
    actor: Actor,
    mode: Mode | str,
    issues_jsonl: str | None = None,
    changed_issues: str | None = None,
    deleted_ids: list[str] | None = None,
    repo_id: str | None = None,
) -> dict[str, Any]:
    """Store the calling agent's issues and apply their claim changes.

    ``repo_id`` (default: the agent's repo) scopes a full sync's deletions.
    Returns ``received``, ``inserted``, ``updated``, ``unchanged``,
    ``deleted``, ``issues_count`` (the project's issues after the sync) and
    ``conflicts`` (issues the agent moved to in_progress that someone else
    holds)."""
    agent_id = actor.require_agent()
    plan = _plan(mode, issues_jsonl, changed_issues, deleted_ids)
    pid = actor.project_id
    async with change(hub, pid) as tx:
        conn = tx.conn
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", SYNC_LOCK_CLASS, pid)
        repo = await _sync_repo(conn, pid, agent_id, repo_id)
        ids = [i.bead_id for i in plan.issues]
        before = {
            r["bead_id"]: r["status"]
            for r in await conn.fetch(
                "SELECT bead_id, status FROM beads_issues "
                "WHERE project_id = $1 AND bead_id = ANY($2::text[])",
                pid,
                ids,
            )
        }
        written = await conn.fetch(_UPSERT, pid, repo, [asdict(i) for i in plan.issues])
        if mode == "full":
            gone = await conn.fetch(_DELETE_ABSENT, pid, repo, ids)
        else:
            gone = await conn.fetch(_DELETE_IDS, pid, plan.deleted_ids)
        titles = {r["bead_id"]: r["title"] for r in gone}
        for row in await release_claims(conn, pid, sorted(titles)):
            tx.emit("claim.released", claim_event(row, titles, reason="deleted"))
        conflicts = await _apply_status_changes(tx, actor, plan.issues, before)
        count = await conn.fetchval("SELECT count(*) FROM beads_issues WHERE project_id = $1", pid)
        inserted = sum(1 for r in written if r["inserted"])
        stats = {
            "mode": mode,
            "received": len(plan.issues),
            "inserted": inserted,
            "updated": len(written) - inserted,
            "unchanged": len(plan.issues) - len(written),
            "deleted": len(gone),
            "issues_count": count,
        }
        tx.emit("beads.synced", {**stats, "agent_id": agent_id, "alias": actor.alias})
    return {**stats, "conflicts": conflicts}


async def _sync_repo(
    conn: asyncpg.Connection, project_id: str, agent_id: str, repo_id: str | None
) -> str | None:
    if repo_id is None:
        return await conn.fetchval(
            "SELECT repo_id FROM agents WHERE id = $1 AND project_id = $2", agent_id, project_id
        )
    try:
        uuid.UUID(str(repo_id))
    except ValueError:
        raise not_found(f"repo {repo_id!r} not found in this project") from None
    found = await conn.fetchval(
        "SELECT id FROM repos WHERE id = $1 AND project_id = $2", repo_id, project_id
    )
    if found is None:
        raise not_found(f"repo {repo_id!r} not found in this project")
    return found


async def _apply_status_changes(
    tx: Change, actor: Actor, issues: list[Issue], before: dict[str, str]
) -> list[dict[str, Any]]:
    agent_id = actor.require_agent()
    conflicts: list[dict[str, Any]] = []
    # Sorted, so concurrent writers take claim rows in one order.
    for issue in sorted(issues, key=lambda i: i.bead_id):
        old = before.get(issue.bead_id)
        if issue.status == old:
            continue
        titles = {issue.bead_id: issue.title}
        if issue.status == "in_progress":
            outcome = await take(tx.conn, tx.project_id, issue.bead_id, agent_id)
            if isinstance(outcome, Held):
                conflicts.append(holder_data(issue.bead_id, outcome.row))
            elif outcome["inserted"]:
                tx.emit(
                    "claim.acquired", actor_claim_event(actor, issue.bead_id, issue.title, outcome)
                )
        elif issue.status == "closed":
            for row in await release_claims(tx.conn, tx.project_id, [issue.bead_id]):
                tx.emit("claim.released", claim_event(row, titles, reason="closed"))
        elif old == "in_progress":
            for row in await release_claims(tx.conn, tx.project_id, [issue.bead_id], agent_id):
                tx.emit("claim.released", claim_event(row, titles, reason=issue.status))
    return conflicts


# -- reading ------------------------------------------------------------------

_ISSUE_COLUMNS = """
    i.bead_id, i.repo_id, i.title, i.status, i.priority, i.issue_type, i.assignee, i.labels,
    i.parent_id, i.blocked_by, i.created_at, i.updated_at, i.closed_at, i.synced_at,
    c.agent_id AS holder_agent_id, c.claimed_at, a.alias AS holder_alias,
    a.human_name AS holder_human_name
"""
_ISSUE_FROM = """
FROM beads_issues i
LEFT JOIN claims c ON c.project_id = i.project_id AND c.bead_id = i.bead_id
LEFT JOIN agents a ON a.id = c.agent_id
"""
_ORDER = "ORDER BY i.priority NULLS LAST, i.created_at NULLS LAST, i.bead_id"


def issue_view(row: asyncpg.Record) -> dict[str, Any]:
    claim = None
    if row["holder_agent_id"] is not None:
        claim = {
            "agent_id": row["holder_agent_id"],
            "workspace_id": row["holder_agent_id"],
            "alias": row["holder_alias"],
            "human_name": row["holder_human_name"],
            "claimed_at": iso(row["claimed_at"]),
        }
    return {
        "bead_id": row["bead_id"],
        "title": row["title"],
        "status": row["status"],
        "priority": row["priority"],
        "issue_type": row["issue_type"],
        "assignee": row["assignee"],
        "labels": list(row["labels"]),
        "parent_id": row["parent_id"],
        "blocked_by": list(row["blocked_by"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "closed_at": iso(row["closed_at"]),
        "repo_id": row["repo_id"],
        "synced_at": iso(row["synced_at"]),
        "claim": claim,
    }


async def list_(
    hub: Hub, actor: Actor, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """The project's issues, highest priority first, optionally one status."""
    if status is not None and status not in STATUSES:
        raise invalid_params(f"status must be one of {', '.join(STATUSES)}")
    rows = await hub.store.fetch(
        f"SELECT {_ISSUE_COLUMNS} {_ISSUE_FROM} "
        f"WHERE i.project_id = $1 AND ($2::text IS NULL OR i.status = $2) {_ORDER} LIMIT $3",
        actor.project_id,
        status,
        _limit(limit) + 1,
    )
    issues = [issue_view(r) for r in rows[:limit]]
    return {"issues": issues, "count": len(issues), "has_more": len(rows) > limit}


async def ready(hub: Hub, actor: Actor, limit: int = 100) -> dict[str, Any]:
    """Open issues nobody holds and no unclosed ``blocks`` dependency waits
    on; a blocker the hub has never seen does not block."""
    rows = await hub.store.fetch(
        f"""
        SELECT {_ISSUE_COLUMNS} {_ISSUE_FROM}
        WHERE i.project_id = $1 AND i.status = 'open' AND c.bead_id IS NULL
          AND NOT EXISTS (
            SELECT 1 FROM beads_issues b
            WHERE b.project_id = i.project_id AND b.bead_id = ANY(i.blocked_by)
              AND b.status <> 'closed')
        {_ORDER} LIMIT $2
        """,
        actor.project_id,
        _limit(limit),
    )
    issues = [issue_view(r) for r in rows]
    return {"issues": issues, "count": len(issues)}


async def get(hub: Hub, actor: Actor, bead_id: str) -> dict[str, Any]:
    """One issue with its claim, its apex, its blockers and ``raw``: the
    object exactly as bd wrote it, unknown fields included."""
    bead_id = check_bead_id(bead_id)
    row = await hub.store.fetchrow(
        f"SELECT {_ISSUE_COLUMNS}, i.raw {_ISSUE_FROM} WHERE i.project_id = $1 AND i.bead_id = $2",
        actor.project_id,
        bead_id,
    )
    if row is None:
        raise not_found(f"issue {bead_id} not found in this project", bead_id=bead_id)
    issue = issue_view(row)
    raw = row["raw"]
    known = {
        r["bead_id"]: r
        for r in await hub.store.fetch(
            "SELECT bead_id, title, status FROM beads_issues "
            "WHERE project_id = $1 AND bead_id = ANY($2::text[])",
            actor.project_id,
            issue["blocked_by"],
        )
    }
    issue["blockers"] = [
        {
            "bead_id": b,
            "title": known[b]["title"] if b in known else None,
            "status": known[b]["status"] if b in known else None,
        }
        for b in issue["blocked_by"]
    ]
    issue["description"] = raw.get("description") if isinstance(raw, dict) else None
    issue.update((await apexes(hub, actor.project_id, [bead_id])).get(bead_id, {}))
    issue["raw"] = raw
    return {"issue": issue}


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise invalid_params("limit must be a positive integer")
    return min(limit, 1000)


_APEX = f"""
WITH RECURSIVE chain(start_id, bead_id, parent_id, depth) AS (
    SELECT i.bead_id, i.bead_id, i.parent_id, 0 FROM beads_issues i
    WHERE i.project_id = $1 AND i.bead_id = ANY($2::text[])
  UNION ALL
    SELECT ch.start_id, p.bead_id, p.parent_id, ch.depth + 1
    FROM chain ch JOIN beads_issues p ON p.project_id = $1 AND p.bead_id = ch.parent_id
    WHERE ch.depth < {MAX_APEX_DEPTH}
)
SELECT DISTINCT ON (ch.start_id) ch.start_id, i.bead_id, i.title, i.issue_type
FROM chain ch JOIN beads_issues i ON i.project_id = $1 AND i.bead_id = ch.bead_id
ORDER BY ch.start_id, ch.depth DESC
"""


async def apexes(hub: Hub, project_id: str, bead_ids: list[str]) -> dict[str, dict[str, Any]]:
    """For each issue, the top of its parent chain (itself when it has no
    parent the hub knows): ``apex_id``, ``apex_title``, ``apex_type``."""
    if not bead_ids:
        return {}
    rows = await hub.store.fetch(_APEX, project_id, bead_ids)
    return {
        r["start_id"]: {
            "apex_id": r["bead_id"],
            "apex_title": r["title"],
            "apex_type": r["issue_type"],
        }
        for r in rows
    }


# -- claim rows (the claim API is hub.services.claims) ------------------------

_ACQUIRE = """
INSERT INTO claims AS c (project_id, bead_id, agent_id) VALUES ($1, $2, $3)
ON CONFLICT (project_id, bead_id) DO UPDATE SET agent_id = c.agent_id
WHERE c.agent_id = EXCLUDED.agent_id
RETURNING c.claimed_at, c.token, (c.xmax = 0) AS inserted
"""


async def acquire(
    conn: asyncpg.Connection, project_id: str, bead_id: str, agent_id: str
) -> asyncpg.Record | None:
    """The one statement that decides a claim: a row (``claimed_at``,
    ``inserted``) when the agent now holds the issue (``inserted`` false:
    it already did), None when another agent holds it."""
    return await conn.fetchrow(_ACQUIRE, project_id, bead_id, agent_id)


@dataclass(frozen=True, slots=True)
class Held:
    """Another agent holds the issue: its claim row joined with the agent."""

    row: asyncpg.Record


async def take(
    conn: asyncpg.Connection, project_id: str, bead_id: str, agent_id: str
) -> asyncpg.Record | Held:
    """:func:`acquire`, or who holds the issue instead. The holder is read
    after the deciding statement; if it let go in between, try again."""
    for _attempt in range(5):
        won = await acquire(conn, project_id, bead_id, agent_id)
        if won is not None:
            return won
        held = await holder(conn, project_id, bead_id)
        if held is not None:
            return Held(held)
    raise conflict(f"{bead_id} changed hands repeatedly; try again", bead_id=bead_id)


async def holder(conn: asyncpg.Connection, project_id: str, bead_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT c.bead_id, c.agent_id, c.claimed_at, c.token, a.alias, a.human_name, a.last_seen "
        "FROM claims c JOIN agents a ON a.id = c.agent_id "
        "WHERE c.project_id = $1 AND c.bead_id = $2",
        project_id,
        bead_id,
    )


async def release_claims(
    conn: asyncpg.Connection, project_id: str, bead_ids: list[str], agent_id: str | None = None
) -> list[asyncpg.Record]:
    """Drop the claims on ``bead_ids`` (only ``agent_id``'s, when given)."""
    if not bead_ids:
        return []
    return await conn.fetch(
        """
        DELETE FROM claims c USING agents a
        WHERE c.project_id = $1 AND c.bead_id = ANY($2::text[])
          AND ($3::uuid IS NULL OR c.agent_id = $3) AND a.id = c.agent_id
        RETURNING c.bead_id, c.agent_id, c.claimed_at, c.token, a.alias, a.human_name,
          (SELECT i.title FROM beads_issues i
           WHERE i.project_id = c.project_id AND i.bead_id = c.bead_id) AS title
        """,
        project_id,
        bead_ids,
        agent_id,
    )


def holder_message(bead_id: str, alias: str, human_name: str) -> str:
    who = f"{alias} ({human_name})" if human_name else alias
    return f"{bead_id} is being worked on by {who}"


def holder_data(bead_id: str, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "bead_id": bead_id,
        "holder_alias": row["alias"],
        "holder_human_name": row["human_name"],
        "holder_agent_id": row["agent_id"],
        "claimed_at": iso(row["claimed_at"]),
        "reason": holder_message(bead_id, row["alias"], row["human_name"]),
    }


def claim_event(
    row: asyncpg.Record, titles: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """``claim.acquired`` / ``claim.released`` data from a claim row joined
    with its agent."""
    title = row.get("title") or (titles or {}).get(row["bead_id"], "")
    return {
        "bead_id": row["bead_id"],
        "title": title or "",
        "agent_id": row["agent_id"],
        "workspace_id": row["agent_id"],
        "alias": row["alias"],
        "human_name": row["human_name"],
        "claimed_at": iso(row["claimed_at"]),
        "token": row["token"],
        **extra,
    }


def actor_claim_event(
    actor: Actor, bead_id: str, title: str, won: asyncpg.Record
) -> dict[str, Any]:
    return {
        "bead_id": bead_id,
        "title": title,
        "agent_id": actor.agent_id,
        "workspace_id": actor.agent_id,
        "alias": actor.alias,
        "human_name": actor.human_name,
        "claimed_at": iso(won["claimed_at"]),
        "token": won["token"],
    }


_CLAIM_ROWS = """
SELECT c.bead_id, c.agent_id, c.claimed_at, c.token, a.alias, a.human_name, a.role,
       coalesce(i.title, '') AS title, i.status, a.last_seen,
       (a.http_online_until > now()) AS http_online
FROM claims c
JOIN agents a ON a.id = c.agent_id
LEFT JOIN beads_issues i ON i.project_id = c.project_id AND i.bead_id = c.bead_id
WHERE c.project_id = $1
ORDER BY c.claimed_at DESC, c.bead_id
"""


async def claim_rows(hub: Hub, project_id: str) -> list[dict[str, Any]]:
    """Every claim in the project, newest first, with holder, apex, fencing
    ``token``, and ``stale`` (the holder is gone: no session, no live
    heartbeat) with ``holder_last_seen``."""
    rows = await hub.store.fetch(_CLAIM_ROWS, project_id)
    online = await hub.bus.online_agents(project_id) if rows else set()
    tops = await apexes(hub, project_id, [r["bead_id"] for r in rows])
    return [
        {
            "bead_id": r["bead_id"],
            "title": r["title"],
            "status": r["status"],
            "agent_id": r["agent_id"],
            "workspace_id": r["agent_id"],
            "alias": r["alias"],
            "human_name": r["human_name"],
            "role": r["role"],
            "claimed_at": iso(r["claimed_at"]),
            "token": r["token"],
            "holder_last_seen": iso(r["last_seen"]),
            # Held while the holder is live; stale once it is gone, until
            # the lease's grace releases it (hub.services.leases).
            "stale": not (r["http_online"] or r["agent_id"] in online),
            **tops.get(r["bead_id"], {"apex_id": None, "apex_title": None, "apex_type": None}),
        }
        for r in rows
    ]


async def in_progress(hub: Hub, project_id: str) -> list[dict[str, Any]]:
    """The team's claimed issues in bdh's ``BeadInProgress`` shape."""
    return [
        {
            "bead_id": c["bead_id"],
            "workspace_id": c["agent_id"],
            "alias": c["alias"],
            "human_name": c["human_name"],
            "started_at": c["claimed_at"],
            "title": c["title"],
            "role": c["role"],
        }
        for c in await claim_rows(hub, project_id)
    ]
