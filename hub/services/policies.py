"""Project policy: invariants every agent follows and a playbook per role.

A project's policy is versioned: every change adds a version (1, 2, ...)
and one of them is active. The first read of a project with no policy
seeds version 1 from the markdown files in ``policy_defaults/``. All writes
(seeding included) take a per-project advisory transaction lock, so two
concurrent first reads cannot both create version 1 and two concurrent
``create`` calls get consecutive versions; ``UNIQUE (project_id, version)``
backs this up.

Creating, activating and resetting are for humans and for agents a human
granted the ``coordinator`` role; everyone in the project may read.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

import asyncpg
from pydantic import ValidationError

from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import forbidden, invalid_params, not_found
from protocol.methods.policies import PolicyCreate

DEFAULT_ROLES = ("coordinator", "developer", "backend", "frontend", "reviewer")
COORDINATOR = "coordinator"
#: First key of the two-int advisory lock serialising one project's policy
#: writes (the second is a hash of the project id).
_LOCK_CLASS = 0x5011C7

_INVARIANT_HEADING = re.compile(r"^## +([a-z0-9][a-z0-9._-]*): *(.+?) *$", re.MULTILINE)


# -- defaults -----------------------------------------------------------------


def _read_default(name: str) -> str:
    return (resources.files("hub.services") / "policy_defaults" / name).read_text("utf-8")


def parse_invariants(text: str) -> list[dict[str, str]]:
    """``## <id>: <title>`` sections; the body runs to the next heading."""
    matches = list(_INVARIANT_HEADING.finditer(text))
    invariants = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        invariants.append({"id": match.group(1), "title": match.group(2), "body_md": body})
    return invariants


def parse_playbook(text: str) -> dict[str, str]:
    """A ``# <title>`` line, then the playbook."""
    first, _, rest = text.strip().partition("\n")
    return {"title": first.lstrip("#").strip(), "playbook_md": rest.strip()}


@functools.cache
def _defaults() -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    invariants = parse_invariants(_read_default("invariants.md"))
    roles = {role: parse_playbook(_read_default(f"role-{role}.md")) for role in DEFAULT_ROLES}
    return invariants, roles


def defaults() -> dict[str, Any]:
    """A fresh copy of the default content: ``invariants`` and ``roles``."""
    invariants, roles = _defaults()
    return {
        "invariants": [dict(i) for i in invariants],
        "roles": {name: dict(p) for name, p in roles.items()},
    }


# -- permissions ----------------------------------------------------------------


async def require_coordinator_or_human(conn: asyncpg.Connection, actor: Actor, doing: str) -> None:
    """Humans may; agents only when a human granted them the coordinator
    role (``agents.grant``). The role an agent declares for itself picks
    its playbook and grants nothing. The grant is read from the agent's row
    now, not from the (possibly older) session."""
    if actor.is_human:
        return
    granted = await conn.fetchval(
        "SELECT granted_role FROM agents WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
        actor.agent_id,
        actor.project_id,
    )
    if granted != COORDINATOR:
        raise forbidden(
            f"only a human, or an agent a human granted the {COORDINATOR!r} role, may {doing}",
            needs="human",
            granted_role=granted or "",
        )


# -- reading ----------------------------------------------------------------------

_COLUMNS = """
p.id, p.project_id, p.version, p.invariants, p.roles, p.created_by, p.created_at
"""

_ACTIVE = f"""
SELECT {_COLUMNS}, a.activated_at
FROM active_policies a JOIN policies p ON p.id = a.policy_id AND p.project_id = a.project_id
WHERE a.project_id = $1
"""


def etag(policy_id: str, version: int) -> str:
    """A strong HTTP entity tag: a version's content never changes."""
    return f'"{policy_id}-{version}"'


def view(
    row: asyncpg.Record,
    *,
    active: bool,
    activated_at: Any = None,
    role: str | None = None,
    only_selected: bool = False,
) -> dict[str, Any]:
    """The ActivePolicyResponse shape bdh reads, plus ``etag``, ``active``."""
    roles: dict[str, Any] = row["roles"]
    selected = None
    if role is not None:
        name = role.strip().lower()
        if name not in roles:
            known = sorted(roles)
            raise not_found(
                f"unknown role {role!r}; this project's policy defines: {', '.join(known)}",
                role=role,
                roles=known,
            )
        selected = {"role": name, **roles[name]}
        if only_selected:
            roles = {name: roles[name]}
    return {
        "policy_id": row["id"],
        "project_id": row["project_id"],
        "version": row["version"],
        "active": active,
        # For the active policy: when it became active, which is when the
        # answer to "what is the policy now" last changed.
        "updated_at": iso(activated_at or row["created_at"]),
        "created_at": iso(row["created_at"]),
        "created_by": row["created_by"],
        "invariants": row["invariants"],
        "roles": roles,
        "selected_role": selected,
        "etag": etag(row["id"], row["version"]),
    }


async def get(
    hub: Hub, actor: Actor, role: str | None = None, only_selected: bool = False
) -> dict[str, Any]:
    """The active policy; seeds the defaults on the project's first read.
    ``role`` adds ``selected_role`` (unknown role: NOT_FOUND listing the
    known ones); ``only_selected`` keeps just that role in ``roles``."""
    if only_selected and role is None:
        raise invalid_params("only_selected needs a role")
    row = await hub.store.fetchrow(_ACTIVE, actor.project_id)
    if row is None:
        row = await _seed(hub, actor.project_id)
    return view(
        row,
        active=True,
        activated_at=row["activated_at"],
        role=role,
        only_selected=only_selected,
    )


async def versions(hub: Hub, actor: Actor, limit: int = 100) -> dict[str, Any]:
    """Every version, newest first, without their content."""
    active = await hub.store.fetchrow(_ACTIVE, actor.project_id)
    if active is None:
        active = await _seed(hub, actor.project_id)
    rows = await hub.store.fetch(
        """
        SELECT id, version, created_by, created_at, jsonb_array_length(invariants) AS invariants,
               ARRAY(SELECT jsonb_object_keys(roles) ORDER BY 1) AS roles
        FROM policies WHERE project_id = $1
        ORDER BY version DESC LIMIT $2
        """,
        actor.project_id,
        max(1, min(limit, 500)),
    )
    return {
        "active_version": active["version"],
        "active_policy_id": active["id"],
        "versions": [
            {
                "policy_id": r["id"],
                "version": r["version"],
                "active": r["id"] == active["id"],
                "created_by": r["created_by"],
                "created_at": iso(r["created_at"]),
                "invariant_count": r["invariants"],
                "roles": list(r["roles"]),
            }
            for r in rows
        ],
    }


# -- writing ------------------------------------------------------------------------


async def _lock(conn: asyncpg.Connection, project_id: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, str(project_id)
    )


async def _insert_version(
    conn: asyncpg.Connection,
    project_id: str,
    invariants: list[dict[str, str]],
    roles: dict[str, dict[str, str]],
    created_by: str,
) -> asyncpg.Record:
    """Under the project lock: the next version number is ours alone."""
    return await conn.fetchrow(
        f"""
        INSERT INTO policies AS p (project_id, version, invariants, roles, created_by)
        SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4
        FROM policies WHERE project_id = $1
        RETURNING {_COLUMNS}
        """,
        project_id,
        invariants,
        roles,
        created_by,
    )


async def _set_active(conn: asyncpg.Connection, project_id: str, policy_id: str) -> Any:
    return await conn.fetchval(
        """
        INSERT INTO active_policies (project_id, policy_id) VALUES ($1, $2)
        ON CONFLICT (project_id)
        DO UPDATE SET policy_id = EXCLUDED.policy_id, activated_at = now()
        RETURNING activated_at
        """,
        project_id,
        policy_id,
    )


async def _seed(hub: Hub, project_id: str) -> asyncpg.Record:
    """Create and activate version 1 from the defaults, unless a
    concurrent reader did it first; return the active policy."""
    async with hub.store.transaction() as conn:
        await _lock(conn, project_id)
        row = await conn.fetchrow(_ACTIVE, project_id)
        if row is not None:
            return row
        content = defaults()
        policy = await _insert_version(
            conn, project_id, content["invariants"], content["roles"], "defaults"
        )
        await _set_active(conn, project_id, policy["id"])
        row = await conn.fetchrow(_ACTIVE, project_id)
        assert row is not None
        return row


def _author(actor: Actor) -> str:
    return (actor.human_name or actor.alias) if actor.is_human else actor.alias


def _validated(invariants: Any, roles: Any) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Services are called by every transport, so they check the content
    themselves (with the same model the JSON-RPC method uses)."""
    try:
        model = PolicyCreate.model_validate({"invariants": invariants, "roles": roles})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise invalid_params(f"invalid policy: {problems}") from None
    ids = [i.id for i in model.invariants]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise invalid_params(
            f"duplicate invariant ids: {', '.join(duplicates)}", duplicates=duplicates
        )
    return (
        [i.model_dump() for i in model.invariants],
        {name: p.model_dump() for name, p in model.roles.items()},
    )


async def create(
    hub: Hub,
    actor: Actor,
    invariants: list[dict[str, Any]],
    roles: dict[str, dict[str, Any]],
    activate: bool = True,
) -> dict[str, Any]:
    """Add a version with this content (activated unless ``activate`` is
    false) and announce ``policy.updated``."""
    clean_invariants, clean_roles = _validated(invariants, roles)
    return await _add_version(hub, actor, clean_invariants, clean_roles, activate, "created")


async def _add_version(
    hub: Hub,
    actor: Actor,
    invariants: list[dict[str, str]],
    roles: dict[str, Any],
    activate: bool,
    reason: str,
) -> dict[str, Any]:
    async with change(hub, actor.project_id) as tx:
        await require_coordinator_or_human(tx.conn, actor, "change the policy")
        await _lock(tx.conn, actor.project_id)
        policy = await _insert_version(tx.conn, actor.project_id, invariants, roles, _author(actor))
        activated_at = None
        if activate:
            activated_at = await _set_active(tx.conn, actor.project_id, policy["id"])
        tx.emit("policy.updated", _event(policy, activate, reason, actor))
    return view(policy, active=activate, activated_at=activated_at)


async def activate(hub: Hub, actor: Actor, version: int) -> dict[str, Any]:
    """Make an existing version the active one (e.g. roll back)."""
    async with change(hub, actor.project_id) as tx:
        await require_coordinator_or_human(tx.conn, actor, "change the policy")
        await _lock(tx.conn, actor.project_id)
        policy = await tx.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM policies p WHERE p.project_id = $1 AND p.version = $2",
            actor.project_id,
            version,
        )
        if policy is None:
            latest = await tx.conn.fetchval(
                "SELECT max(version) FROM policies WHERE project_id = $1", actor.project_id
            )
            raise not_found(
                f"policy version {version} not found; versions run 1..{latest or 0}",
                version=version,
                latest_version=latest or 0,
            )
        current = await tx.conn.fetchrow(_ACTIVE, actor.project_id)
        if current is not None and current["id"] == policy["id"]:
            return view(policy, active=True, activated_at=current["activated_at"])
        activated_at = await _set_active(tx.conn, actor.project_id, policy["id"])
        tx.emit("policy.updated", _event(policy, True, "activated", actor))
    return view(policy, active=True, activated_at=activated_at)


async def reset(hub: Hub, actor: Actor) -> dict[str, Any]:
    """Add a version with the default content and activate it. The result
    also carries bdh's ResetPolicyResponse fields (``reset``,
    ``active_policy_id``)."""
    content = defaults()
    result = await _add_version(
        hub, actor, content["invariants"], content["roles"], activate=True, reason="reset"
    )
    return {"reset": True, "active_policy_id": result["policy_id"], **result}


def _event(policy: asyncpg.Record, active: bool, reason: str, actor: Actor) -> dict[str, Any]:
    return {
        "policy_id": policy["id"],
        "version": policy["version"],
        "active": active,
        "reason": reason,
        "by": _author(actor),
    }
