"""Who may join a project: its join policy, join requests a human admits
or refuses, and invitations a human hands out.

``open``: anyone who reaches the hub may add an agent (the default while
the hub listens on loopback only). ``approval``: an unknown agent's init
is held as a join request and answered with ``pending_validation`` until a
human admits it; the same init then succeeds (once). An init carrying an
invitation a human made joins at once. Binding an alias that already
exists always needs that agent's key or a human's credential
(hub.services.projects.init).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import asyncpg

from hub.config import Settings
from hub.services import auth
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import RpcError, conflict, forbidden, invalid_params, not_found

OPEN = "open"
APPROVAL = "approval"
POLICIES = (OPEN, APPROVAL)
INVITATION_PREFIX = "bhi_"
INVITATION_TTL_SECONDS = 7 * 86400


def listens_on_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_policy(settings: Settings) -> str:
    if settings.join_policy in POLICIES:
        return settings.join_policy
    return OPEN if listens_on_loopback(settings.host) else APPROVAL


def effective(settings: Settings, stored: str | None) -> str:
    return stored or default_policy(settings)


async def get_policy(hub: Hub, actor: Actor) -> dict[str, Any]:
    stored = await hub.store.fetchval(
        "SELECT join_policy FROM projects WHERE id = $1", actor.project_id
    )
    return _policy_view(hub.settings, stored)


def _policy_view(settings: Settings, stored: str | None) -> dict[str, Any]:
    return {
        "join_policy": effective(settings, stored),
        "default": stored is None,
        "hub_default": default_policy(settings),
    }


async def set_policy(hub: Hub, actor: Actor, policy: str | None) -> dict[str, Any]:
    """Humans only. ``None`` returns to the hub's default. Announces
    ``join.policy.updated`` to the project's humans."""
    actor.require_human("change the join policy")
    if policy is not None and policy not in POLICIES:
        raise invalid_params(f"join_policy must be one of {', '.join(POLICIES)} or null")
    async with change(hub, actor.project_id) as tx:
        await tx.conn.execute(
            "UPDATE projects SET join_policy = $2 WHERE id = $1", actor.project_id, policy
        )
        view = _policy_view(hub.settings, policy)
        # Every human's dashboard shows the switch; agents are not told.
        tx.emit("join.policy.updated", {**view, "by": actor.alias}, recipients=[])
    return view


def fingerprint(alias: str | None, hostname: str, path: str, origin: str, human: str) -> str:
    """What identifies the same init again: only for finding the request,
    never as proof of anything."""
    return "\x1f".join((alias or "", hostname, path, origin, human))


def pending_error(project_slug: str, request: dict[str, Any]) -> RpcError:
    """bdh reads ``pending_validation`` in the body: it prints its
    validation text and exits 0."""
    return forbidden(
        f"pending_validation: project {project_slug!r} admits new agents only with a human's "
        f"approval. Join request {request['id']} for alias {request['alias']!r} is waiting; a "
        f"human admits it from the dashboard or with `beadhub admit --project {project_slug} "
        f"{request['id']}` on the hub's host. Then run the same init again.",
        pending_validation=True,
        request_id=request["id"],
        alias=request["alias"],
        project_slug=project_slug,
    )


async def find_request(
    conn: asyncpg.Connection, project_id: str, print_: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT id, alias, status FROM join_requests
        WHERE project_id = $1 AND fingerprint = $2 AND status IN ('pending', 'admitted', 'refused')
        ORDER BY created_at DESC LIMIT 1 FOR UPDATE
        """,
        project_id,
        print_,
    )


async def open_request(
    conn: asyncpg.Connection, project_id: str, print_: str, fields: dict[str, Any]
) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        INSERT INTO join_requests (project_id, fingerprint, alias, human_name, role, hostname,
                                   workspace_path, repo_origin, client_address)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING id, alias, status, created_at
        """,
        project_id,
        print_,
        fields["alias"],
        fields["human_name"],
        fields["role"],
        fields["hostname"],
        fields["workspace_path"],
        fields["repo_origin"],
        fields["client_address"],
    )
    assert row is not None
    return dict(row)


async def use_invitation(conn: asyncpg.Connection, project_id: str, token: str) -> bool:
    """Spend one use of an invitation for this project (False: none)."""
    found = await conn.fetchval(
        """
        UPDATE invitations SET uses_left = uses_left - 1
        WHERE token_hash = $1 AND project_id = $2 AND uses_left > 0
          AND revoked_at IS NULL AND expires_at > now()
        RETURNING id
        """,
        auth.digest(token),
        project_id,
    )
    return found is not None


_REQUEST_COLUMNS = """id, alias, human_name, role, hostname, workspace_path, repo_origin,
client_address, status, decided_by, decided_at, agent_id, created_at"""


def _request_view(row: asyncpg.Record) -> dict[str, Any]:
    view = dict(row)
    view["request_id"] = view["id"]
    view["created_at"] = iso(view["created_at"])
    view["decided_at"] = iso(view["decided_at"])
    return view


async def list_requests(hub: Hub, actor: Actor, status: str | None = "pending") -> dict[str, Any]:
    actor.require_human("see join requests")
    rows = await hub.store.fetch(
        f"""
        SELECT {_REQUEST_COLUMNS} FROM join_requests
        WHERE project_id = $1 AND ($2::text IS NULL OR status = $2)
        ORDER BY created_at DESC LIMIT 500
        """,
        actor.project_id,
        status,
    )
    return {"requests": [_request_view(r) for r in rows], "count": len(rows)}


async def decide(hub: Hub, actor: Actor, request_id: str, admit: bool) -> dict[str, Any]:
    """Admit or refuse a pending request (humans only). Announces
    ``join.decided`` to the project's humans."""
    actor.require_human("admit or refuse agents")
    async with change(hub, actor.project_id) as tx:
        row = await tx.conn.fetchrow(
            f"""
            UPDATE join_requests SET status = $3, decided_by = $4, decided_at = now()
            WHERE project_id = $1 AND id::text = $2 AND status = 'pending'
            RETURNING {_REQUEST_COLUMNS}
            """,
            actor.project_id,
            request_id,
            "admitted" if admit else "refused",
            actor.alias,
        )
        if row is None:
            status = await tx.conn.fetchval(
                "SELECT status FROM join_requests WHERE project_id = $1 AND id::text = $2",
                actor.project_id,
                request_id,
            )
            if status is None:
                raise not_found(f"join request {request_id} not found")
            raise conflict(f"join request {request_id} is already {status}", status=status)
        request = _request_view(row)
        tx.emit("join.decided", request, recipients=[])
    return request


async def create_invitation(
    hub: Hub, actor: Actor, uses: int = 1, ttl_seconds: int = INVITATION_TTL_SECONDS
) -> dict[str, Any]:
    """Humans only. The token is shown once."""
    actor.require_human("invite agents")
    token = auth.new_secret(INVITATION_PREFIX)
    row = await hub.store.fetchrow(
        """
        INSERT INTO invitations (token_hash, project_id, uses_left, created_by, expires_at)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
        RETURNING id, expires_at
        """,
        auth.digest(token),
        actor.project_id,
        uses,
        actor.alias,
        float(ttl_seconds),
    )
    assert row is not None
    return {
        "invitation": token,
        "invitation_id": row["id"],
        "project_slug": actor.project_slug,
        "uses": uses,
        "expires_at": iso(row["expires_at"]),
    }


async def grant(hub: Hub, actor: Actor, agent_id: str, role: str | None) -> dict[str, Any]:
    """Grant (or, with None, take back) powers beyond an agent's own.
    Humans only; ``coordinator`` is the one role with powers."""
    actor.require_human("grant roles")
    if role not in (None, "coordinator"):
        raise invalid_params("the only role with powers to grant is 'coordinator' (or null)")
    async with change(hub, actor.project_id) as tx:
        row = await tx.conn.fetchrow(
            """
            UPDATE agents SET granted_role = $3
            WHERE project_id = $1 AND id::text = $2 AND deleted_at IS NULL
            RETURNING id, alias, granted_role
            """,
            actor.project_id,
            agent_id,
            role,
        )
        if row is None:
            raise not_found(f"agent {agent_id} not found")
        result = {"agent_id": row["id"], "alias": row["alias"], "granted_role": row["granted_role"]}
        tx.emit("agent.granted", {**result, "by": actor.alias})
    return result
