"""Projects and onboarding: ``init`` creates (or reuses) a project, its repo
and an agent, and mints the agent's api key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.services import admission, auth, repos, revocation
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import ErrorCode, RpcError, conflict, forbidden, invalid_params, not_found
from protocol.schema import ALIAS_RE, SLUG_RE

#: First names handed out as aliases, in order; a role makes them
#: ``alice-frontend``. After these run out, numbers are appended.
ALIAS_NAMES = [
    "alice",
    "bob",
    "carol",
    "dave",
    "eve",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "karl",
    "lena",
    "mallory",
    "nina",
    "oscar",
    "peggy",
    "quinn",
    "rupert",
    "sybil",
    "trent",
    "ursula",
    "victor",
    "wendy",
    "xavier",
    "yara",
    "zoe",
]


@dataclass(slots=True)
class InitRequest:
    project_slug: str = ""
    project_name: str = ""
    repo_origin: str = ""
    alias: str | None = None
    human_name: str = ""
    role: str = ""
    email: str = ""
    hostname: str = ""
    workspace_path: str = ""
    agent_type: str = "agent"
    program: str = ""
    model: str = ""
    invitation: str = ""
    #: Where the request came from, shown to the human deciding on it.
    client_address: str = ""


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug[:64] or "default"


async def ensure_project(
    conn: asyncpg.Connection, slug: str, name: str = ""
) -> tuple[dict[str, Any], bool]:
    if not SLUG_RE.match(slug):
        raise invalid_params(
            f"invalid project slug {slug!r}: lower-case letters, digits, '.', '_' or '-'"
        )
    row = await conn.fetchrow(
        """
        INSERT INTO projects (slug, name) VALUES ($1, $2)
        ON CONFLICT (slug) DO NOTHING
        RETURNING id, slug, name, created_at
        """,
        slug,
        name or slug,
    )
    if row is not None:
        return dict(row), True
    row = await conn.fetchrow(
        "SELECT id, slug, name, created_at FROM projects WHERE slug = $1", slug
    )
    assert row is not None
    return dict(row), False


async def free_prefix(conn: asyncpg.Connection, project_id: str) -> str:
    """The first name no agent of the project uses as its alias's prefix:
    with ``alice-frontend`` there, ``alice`` is taken for every role (bdh
    appends ``-<role>`` to it). Deleted agents count: their alias comes
    back if the same workspace joins again."""
    used = {
        name_prefix(r["alias"])
        for r in await conn.fetch("SELECT alias FROM agents WHERE project_id = $1", project_id)
    }
    for round_ in range(1, 1000):
        for name in ALIAS_NAMES:
            candidate = name if round_ == 1 else f"{name}{round_}"
            if candidate not in used:
                return candidate
    raise conflict("no free alias left in this project")


async def suggest_alias(conn: asyncpg.Connection, project_id: str, role: str = "") -> str:
    prefix = await free_prefix(conn, project_id)
    return f"{prefix}-{slugify(role)}" if role else prefix


def name_prefix(alias: str) -> str:
    return alias.split("-", 1)[0]


async def init(hub: Hub, req: InitRequest, credential: str | None = None) -> dict[str, Any]:
    """Onboard one agent.

    Consent first: binding an alias that exists (even a deleted one) needs
    proof, ``credential`` being that agent's key or a human's ticket of the
    project; what the caller reports (hostname, path) is never proof. A new
    agent joins a project whose policy is ``open``, or with an invitation
    (``credential`` or ``req.invitation``), or once a human admitted its
    join request; otherwise its request is held and the answer says
    ``pending_validation``."""
    slug = req.project_slug or await _project_of_repo(hub, req.repo_origin)
    if req.alias is not None and not ALIAS_RE.match(req.alias):
        raise invalid_params(f"invalid alias {req.alias!r}: letters, digits, '.', '_' or '-'")
    invitation = req.invitation
    proof: Actor | None = None
    if credential and credential.startswith(admission.INVITATION_PREFIX):
        invitation = credential
    elif credential:
        proof = await auth.authenticate(hub, credential)
    for _attempt in range(5):
        try:
            outcome = await _init_once(hub, slug, req, proof, invitation)
        except asyncpg.UniqueViolationError:
            if req.alias is not None:
                raise conflict(
                    _taken(req.alias, slug), alias=req.alias, error="alias_exists"
                ) from None
            # Another init took the suggested alias at the same moment.
            continue
        if isinstance(outcome, RpcError):
            # Committed (the join request is kept), then refused.
            raise outcome
        return outcome
    raise conflict("could not allocate an alias, try again")


async def _project_of_repo(hub: Hub, repo_origin: str) -> str:
    """Without a slug, init joins the project that has the repo. bdh reads
    ``project_not_found`` in the body and retries with a slug of its own."""
    if not repo_origin:
        raise invalid_params("project_slug or repo_origin is required")
    try:
        repo = await repos.lookup(hub, repo_origin)
    except RpcError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        raise invalid_params(
            f"project_not_found: no project has the repo {repos.canonical_origin(repo_origin)}; "
            "send project_slug to create one",
            error="project_not_found",
        ) from None
    return str(repo["project_slug"])


def _request_fields(req: InitRequest, alias: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "human_name": req.human_name,
        "role": req.role,
        "hostname": req.hostname,
        "workspace_path": req.workspace_path,
    }


def _taken(alias: str, slug: str) -> str:
    # bdh reads "alias_exists" in the body to offer the next free name.
    return (
        f"alias_exists: alias {alias!r} is taken in project {slug!r}; binding it needs that "
        "agent's api key (Authorization: Bearer) or a human's; choose another alias"
    )


async def _init_once(
    hub: Hub, slug: str, req: InitRequest, proof: Actor | None, invitation: str
) -> dict[str, Any] | RpcError:
    project: dict[str, Any] | None = None
    refusal: RpcError | None = None
    # The project may not exist yet: its id is known inside the transaction.
    async with change(hub, project_id="") as tx:
        project, _ = await ensure_project(tx.conn, slug, req.project_name)
        tx.project_id = project["id"]
        if proof is not None and proof.project_id != project["id"]:
            proof = None  # another project's credential proves nothing here
        repo = None
        if req.repo_origin:
            repo, _ = await repos.ensure(tx.conn, project["id"], req.repo_origin)
        print_ = admission.fingerprint(
            req.alias,
            req.hostname,
            req.workspace_path,
            repo["canonical_origin"] if repo else "",
            req.human_name,
        )
        request = None
        if req.alias is None and proof is None:
            # The retry of an admitted request gets the alias it was shown.
            request = await admission.find_request(tx.conn, project["id"], print_)
        alias = req.alias or (request["alias"] if request else None)
        alias = alias or await suggest_alias(tx.conn, project["id"], req.role)
        existing = await tx.conn.fetchrow(
            "SELECT id, deleted_at FROM agents WHERE project_id = $1 AND alias = $2 FOR UPDATE",
            project["id"],
            alias,
        )
        if existing is not None:
            agent_id = existing["id"]
            own_key = proof is not None and proof.agent_id == agent_id and not proof.via_ticket
            human = proof is not None and proof.is_human
            if not (human or (own_key and existing["deleted_at"] is None)):
                return conflict(_taken(alias, slug), alias=alias, error="alias_exists")
            await tx.conn.execute(
                """
                UPDATE agents SET deleted_at = NULL, hostname = $2, workspace_path = $3,
                       human_name = coalesce(nullif($4, ''), human_name),
                       role = coalesce(nullif($5, ''), role),
                       repo_id = coalesce($6, repo_id)
                WHERE id = $1
                """,
                agent_id,
                req.hostname,
                req.workspace_path,
                req.human_name,
                req.role,
                repo["id"] if repo else None,
            )
            created = False
        else:
            refusal = await _admit_new(
                hub, tx, project, proof, invitation, print_, alias, req, repo
            )
            if refusal is not None:
                return refusal
            agent_id = await tx.conn.fetchval(
                """
                INSERT INTO agents (project_id, repo_id, alias, human_name, email, role,
                                    agent_type, hostname, workspace_path, program, model, repo,
                                    joined_hostname)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $8)
                RETURNING id
                """,
                project["id"],
                repo["id"] if repo else None,
                alias,
                req.human_name,
                req.email,
                req.role,
                req.agent_type or "agent",
                req.hostname,
                req.workspace_path,
                req.program,
                req.model,
                repo["name"] if repo else "",
            )
            await tx.conn.execute(
                "UPDATE join_requests SET status = 'joined', agent_id = $2 "
                "WHERE project_id = $1 AND fingerprint = $3 AND status = 'admitted'",
                project["id"],
                agent_id,
                print_,
            )
            created = True
        key = await auth.mint_key(tx.conn, project["id"], agent_id)
        created_at = await tx.conn.fetchval("SELECT created_at FROM agents WHERE id = $1", agent_id)
        tx.emit(
            "agent.registered",
            {"agent_id": agent_id, "alias": alias, "human_name": req.human_name, "role": req.role},
        )
    assert project is not None
    return {
        "status": "ok",
        "created_at": iso(created_at),
        "api_key": key,
        "project_id": project["id"],
        "project_slug": project["slug"],
        "agent_id": agent_id,
        "workspace_id": agent_id,
        "repo_id": repo["id"] if repo else None,
        "canonical_origin": repo["canonical_origin"] if repo else None,
        "alias": alias,
        "human_name": req.human_name,
        "created": created,
        "workspace_created": created,
    }


async def _admit_new(
    hub: Hub,
    tx: Any,
    project: dict[str, Any],
    proof: Actor | None,
    invitation: str,
    print_: str,
    alias: str,
    req: InitRequest,
    repo: dict[str, Any] | None,
) -> RpcError | None:
    """None when a new agent may join now; else the refusal to answer
    (after the join request it opened is committed)."""
    policy = admission.effective(
        hub.settings,
        await tx.conn.fetchval("SELECT join_policy FROM projects WHERE id = $1", project["id"]),
    )
    if policy == admission.OPEN or (proof is not None and proof.is_human):
        return None
    if invitation:
        if await admission.use_invitation(tx.conn, project["id"], invitation):
            return None
        return forbidden("this invitation is unknown, used up, expired or for another project")
    request = await admission.find_request(tx.conn, project["id"], print_)
    if request is not None and request["status"] == "admitted":
        return None
    if request is not None and request["status"] == "refused":
        return forbidden(
            f"join_refused: a human refused join request {request['id']} to project "
            f"{project['slug']!r}",
            join_refused=True,
            request_id=request["id"],
        )
    if request is None:
        request = await admission.open_request(
            tx.conn,
            project["id"],
            print_,
            {
                "alias": alias,
                "human_name": req.human_name,
                "role": req.role,
                "hostname": req.hostname,
                "workspace_path": req.workspace_path,
                "repo_origin": repo["canonical_origin"] if repo else req.repo_origin,
                "client_address": req.client_address,
            },
        )
        # The project's humans see it at once (no agent is a recipient).
        tx.emit("join.requested", {"request_id": request["id"], **_request_fields(req, alias)}, [])
    return admission.pending_error(project["slug"], dict(request))


async def get(hub: Hub, project_id: str) -> dict[str, Any]:
    row = await hub.store.fetchrow(
        "SELECT id, slug, name, created_at FROM projects WHERE id = $1", project_id
    )
    if row is None:
        raise not_found("project not found")
    return {
        "project_id": row["id"],
        "slug": row["slug"],
        "name": row["name"],
        "created_at": iso(row["created_at"]),
    }


async def whoami(hub: Hub, actor: Actor) -> dict[str, Any]:
    return {
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "agent_id": actor.agent_id,
        "workspace_id": actor.agent_id,
        "alias": actor.alias,
        "human_name": actor.human_name,
        "role": actor.role,
        "instance_id": hub.settings.instance_id,
    }


# -- the caller's own project (HTTP shim: bdh's project and repo calls) --------------
#
# An api key is bound to one project, so these answer only about that
# project: another project's slug or id is "not found" (ids) or forbidden
# (slugs), never created, read or changed.


async def ensure_own(hub: Hub, actor: Actor, slug: str) -> dict[str, Any]:
    """bdh's EnsureProject: the key's project when ``slug`` names it. A key
    cannot create or join another project; that is ``POST /v1/init``."""
    if slug != actor.project_slug:
        raise forbidden(
            f"this api key belongs to project {actor.project_slug!r}; "
            f"use POST /v1/init to create or join project {slug!r}"
        )
    return {"project_id": actor.project_id, "slug": actor.project_slug, "created": False}


async def list_own(hub: Hub, actor: Actor) -> list[dict[str, Any]]:
    row = await hub.store.fetchrow(
        """
        SELECT p.id, p.slug, p.name, p.created_at,
               (SELECT count(*) FROM repos r WHERE r.project_id = p.id) AS repo_count,
               (SELECT count(*) FROM agents a
                 WHERE a.project_id = p.id AND a.deleted_at IS NULL
                   AND a.alias NOT LIKE 'human:%') AS workspace_count
        FROM projects p WHERE p.id = $1
        """,
        actor.project_id,
    )
    if row is None:
        return []
    return [
        {
            "id": row["id"],
            "project_id": row["id"],
            "slug": row["slug"],
            "name": row["name"],
            "created_at": iso(row["created_at"]),
            "repo_count": row["repo_count"],
            "workspace_count": row["workspace_count"],
        }
    ]


#: Per-project tables that ON DELETE CASCADE does not reach (hot inserts
#: kept free of foreign-key checks): deleting a project empties them itself.
UNKEYED_PROJECT_TABLES = ("events", "mail_deliveries", "mail_messages", "reservations")


async def delete(hub: Hub, actor: Actor, project_id: str) -> dict[str, Any]:
    """Delete the caller's project and everything in it (foreign keys
    cascade). Humans only. No event: the project's event log goes with it;
    its keys stop working and its open sessions close on every instance."""
    if project_id != actor.project_id:
        raise not_found("project not found")
    actor.require_human("delete the project")
    online = await hub.bus.online_agents(project_id)
    async with hub.store.transaction() as conn:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM repos WHERE project_id = $1) AS repos,
                   (SELECT count(*) FROM agents
                     WHERE project_id = $1 AND deleted_at IS NULL) AS workspaces,
                   (SELECT count(*) FROM claims WHERE project_id = $1) AS claims
            FROM projects WHERE id = $1 FOR UPDATE
            """,
            project_id,
        )
        if row is None:
            raise not_found("project not found")
        agents = await conn.fetch(
            "SELECT id, http_online_until > now() AS http_online FROM agents WHERE project_id = $1",
            project_id,
        )
        # Tables without a foreign key to the project (migrations 0007, 0008) go
        # first; the rest follow by cascade.
        for table in UNKEYED_PROJECT_TABLES:
            await conn.execute(f"DELETE FROM {table} WHERE project_id = $1", project_id)
        await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
    await revocation.announce(hub, project_id, project=True, reason="project deleted")
    present = {a["id"] for a in agents if a["http_online"]} | (online & {a["id"] for a in agents})
    return {
        "id": project_id,
        "project_id": project_id,
        "repos_deleted": row["repos"],
        "workspaces_deleted": row["workspaces"],
        "claims_deleted": row["claims"],
        "presence_cleared": len(present),
    }


async def ensure_repo(hub: Hub, actor: Actor, project_id: str, origin: str) -> dict[str, Any]:
    if project_id != actor.project_id:
        raise not_found("project not found")
    async with change(hub, actor.project_id) as tx:
        repo, created = await repos.ensure(tx.conn, actor.project_id, origin)
        if created:
            tx.emit("repo.registered", {"repo_id": repo["id"], **_repo_fields(repo)})
    return {"repo_id": repo["id"], **_repo_fields(repo), "created": created}


def _repo_fields(repo: dict[str, Any]) -> dict[str, Any]:
    return {"canonical_origin": repo["canonical_origin"], "name": repo["name"]}


async def register_workspace(
    hub: Hub,
    actor: Actor,
    repo_origin: str,
    *,
    role: str = "",
    hostname: str = "",
    workspace_path: str = "",
) -> dict[str, Any]:
    """Attach the caller's workspace (made by init) to a repo of its
    project, registering the repo if it is new."""
    agent_id = actor.require_agent()
    async with change(hub, actor.project_id) as tx:
        repo, _ = await repos.ensure(tx.conn, actor.project_id, repo_origin)
        row = await tx.conn.fetchrow(
            """
            UPDATE agents SET repo_id = $3, repo = $4,
                   role = coalesce(nullif($5, ''), role),
                   hostname = coalesce(nullif($6, ''), hostname),
                   workspace_path = coalesce(nullif($7, ''), workspace_path)
            WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL
            RETURNING alias, human_name, role, hostname, workspace_path
            """,
            agent_id,
            actor.project_id,
            repo["id"],
            repo["name"],
            role,
            hostname,
            workspace_path,
        )
        if row is None:
            raise not_found("workspace not found")
        tx.emit(
            "workspace.registered",
            {"agent_id": agent_id, "workspace_id": agent_id, "repo_id": repo["id"], **dict(row)},
        )
    return {
        "workspace_id": agent_id,
        "agent_id": agent_id,
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "repo_id": repo["id"],
        "canonical_origin": repo["canonical_origin"],
        "alias": row["alias"],
        "human_name": row["human_name"],
        "role": row["role"],
        # The workspace itself was created by init.
        "created": False,
    }


async def suggest_name_prefix(hub: Hub, actor: Actor | None, origin_url: str) -> dict[str, Any]:
    """The next free name prefix for a new workspace of a registered repo
    (404 when no project has it; with a key, only the key's project counts).
    Unauthenticated (bdh asks before it has a key): it reveals a free first
    name and the ids bdh puts in its init, nothing about the agents."""
    repo = await repos.lookup(hub, origin_url, project_id=actor.project_id if actor else None)
    async with hub.store.connection() as conn:
        prefix = await free_prefix(conn, repo["project_id"])
    return {
        "name_prefix": prefix,
        "project_id": repo["project_id"],
        "project_slug": repo["project_slug"],
        "repo_id": repo["repo_id"],
        "canonical_origin": repo["canonical_origin"],
    }


async def suggest_alias_prefix(hub: Hub, project_slug: str) -> dict[str, Any]:
    """The next free name prefix in the project with this slug; for a slug
    no project has, the first name and no id (init will create it).
    Unauthenticated, like :func:`suggest_name_prefix`."""
    async with hub.store.connection() as conn:
        project_id = await conn.fetchval("SELECT id FROM projects WHERE slug = $1", project_slug)
        if project_id is None:
            return {"project_slug": project_slug, "project_id": None, "name_prefix": ALIAS_NAMES[0]}
        prefix = await free_prefix(conn, project_id)
    return {"project_slug": project_slug, "project_id": project_id, "name_prefix": prefix}


async def introspect(hub: Hub, actor: Actor) -> dict[str, Any]:
    agent_type = ""
    if actor.agent_id is not None:
        agent_type = (
            await hub.store.fetchval(
                "SELECT agent_type FROM agents WHERE id = $1 AND project_id = $2",
                actor.agent_id,
                actor.project_id,
            )
            or ""
        )
    return {
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "agent_id": actor.agent_id,
        "workspace_id": actor.agent_id,
        "alias": actor.alias,
        "human_name": actor.human_name,
        "agent_type": agent_type if actor.agent_id else "human",
        "role": actor.role,
    }
