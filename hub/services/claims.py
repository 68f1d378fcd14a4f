"""Claims: who works on which Beads issue. One holder per issue per project.

A claim is decided by one statement (:func:`hub.services.beads.acquire`:
INSERT ... ON CONFLICT on the unique (project_id, bead_id)), so of N agents
claiming at once, on any number of hub instances, exactly one wins; the
others get CONFLICT naming the holder, e.g. ``bd-15 is being worked on by
alice-frontend (juan)``. The holder re-claiming is a no-op. Releasing,
closing the issue (through a sync) or deleting it ends the claim.

Both ``claim.acquired`` and ``claim.released`` go to the whole project.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from hub.services import beads, idempotency, queues
from hub.services.context import Actor, Hub
from hub.services.events import Change, change
from protocol.errors import RpcError, conflict, not_found
from protocol.methods.beads import BEAD_ID_RE


def holder_conflict(bead_id: str, data: dict[str, Any]) -> RpcError:
    data = {k: v for k, v in data.items() if k != "reason"}
    return conflict(
        beads.holder_message(bead_id, data["holder_alias"], data["holder_human_name"]), **data
    )


async def claim(
    hub: Hub,
    actor: Actor,
    bead_id: str,
    *,
    allow_unknown: bool = False,
    wait: float | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Claim ``bead_id`` for the calling agent.

    Returns ``claim`` (bead_id, title, agent_id, alias, human_name,
    claimed_at, token) and ``acquired`` (false when the agent already held
    it). An issue the hub has not synced is NOT_FOUND unless
    ``allow_unknown`` (bdh may claim before its first sync); a closed issue
    is CONFLICT. With ``wait`` (seconds) an issue another agent holds is
    waited for in line (:mod:`hub.services.queues`); CONFLICT if the wait
    ends first."""
    actor.require_agent()
    bead_id = beads.check_bead_id(bead_id)
    waiting = queues.check_wait(hub, wait)
    if waiting is not None:
        if idempotency_key is None:
            return await _claim_waiting(hub, actor, bead_id, allow_unknown, waiting)
        return await idempotency.run(
            hub,
            actor,
            "claims.claim",
            idempotency_key,
            {"bead_id": bead_id, "wait": waiting},
            lambda: _claim_waiting(hub, actor, bead_id, allow_unknown, waiting),
            atomic=False,
        )
    async with change(hub, actor.project_id) as tx:
        outcome = await _take(tx, actor, bead_id, allow_unknown)
    if isinstance(outcome, beads.Held):
        raise holder_conflict(bead_id, beads.holder_data(bead_id, outcome.row))
    return outcome


async def _take(
    tx: Change, actor: Actor, bead_id: str, allow_unknown: bool
) -> dict[str, Any] | beads.Held:
    """Decide a claim in the open transaction: the answer, or who holds it."""
    issue = await tx.conn.fetchrow(
        "SELECT title, status FROM beads_issues WHERE project_id = $1 AND bead_id = $2",
        actor.project_id,
        bead_id,
    )
    if issue is None and not allow_unknown:
        raise not_found(f"issue {bead_id} not found in this project", bead_id=bead_id)
    if issue is not None and issue["status"] == "closed":
        raise conflict(f"{bead_id} is closed", bead_id=bead_id, status="closed")
    title = issue["title"] if issue is not None else ""
    outcome = await beads.take(tx.conn, actor.project_id, bead_id, actor.require_agent())
    if isinstance(outcome, beads.Held):
        return outcome
    event = beads.actor_claim_event(actor, bead_id, title, outcome)
    if outcome["inserted"]:
        tx.emit("claim.acquired", event)
    return {"claim": event, "acquired": bool(outcome["inserted"])}


async def _claim_waiting(
    hub: Hub, actor: Actor, bead_id: str, allow_unknown: bool, wait: float
) -> dict[str, Any]:
    held: beads.Held | None = None
    async with queues.Turn(hub, actor, "claim", wait, lambda d: d["bead_id"] == bead_id) as turn:
        while True:
            turn.woken.clear()
            if not (turn.rows and await turn.blocked([(bead_id, True)], str.__eq__)):
                async with change(hub, actor.project_id) as tx:
                    # The claim's own lock orders the line's entries and grants.
                    await tx.conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        f"claim:{actor.project_id}:{bead_id}",
                    )
                    line = await turn.line(tx.conn)
                    outcome: dict[str, Any] | beads.Held | None = None
                    if turn.ahead(line, bead_id, True, str.__eq__) is None:
                        outcome = await _take(tx, actor, bead_id, allow_unknown)
                    if isinstance(outcome, dict):
                        await turn.granted(tx.conn, [bead_id])
                    else:
                        held = outcome or held
                        for type_, data in await turn.enter(tx.conn, [(bead_id, True)]):
                            tx.emit(type_, data)
                if isinstance(outcome, dict):
                    return {**outcome, "status": "granted", "waited_seconds": turn.waited_seconds}
            if not await turn.sleep():
                break
        waited = turn.waited_seconds
    if held is None:
        raise conflict(f"{bead_id} is still claimed; waited {waited} s", bead_id=bead_id)
    data = beads.holder_data(bead_id, held.row)
    error = holder_conflict(bead_id, data)
    error.data = {**(error.data or {}), "waited_seconds": waited}
    raise error


async def release(hub: Hub, actor: Actor, bead_id: str) -> dict[str, Any]:
    """Give up a claim. An agent releases its own (another's is CONFLICT
    naming the holder); a human on the dashboard may release any. Releasing
    an issue nobody holds answers ``released: false``."""
    bead_id = beads.check_bead_id(bead_id)
    async with change(hub, actor.project_id) as tx:
        rows = await beads.release_claims(tx.conn, actor.project_id, [bead_id], actor.agent_id)
        for row in rows:
            reason = "revoked" if actor.is_human else "released"
            tx.emit("claim.released", beads.claim_event(row, reason=reason, by=actor.alias))
        held = None if rows else await beads.holder(tx.conn, actor.project_id, bead_id)
    if held is not None:
        raise holder_conflict(bead_id, beads.holder_data(bead_id, held))
    return {"bead_id": bead_id, "released": bool(rows)}


async def list_(hub: Hub, actor: Actor) -> dict[str, Any]:
    """Every claim in the project with its holder, newest first."""
    rows = await beads.claim_rows(hub, actor.project_id)
    return {"claims": rows, "count": len(rows)}


async def by_agent(hub: Hub, project_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each agent's claims, newest first, in bdh's ``Claim`` shape (bead_id,
    title, claimed_at, apex_id, apex_title, apex_type)."""
    held: dict[str, list[dict[str, Any]]] = {}
    for c in await beads.claim_rows(hub, project_id):
        held.setdefault(c["agent_id"], []).append(
            {
                k: c[k]
                for k in ("bead_id", "title", "claimed_at", "apex_id", "apex_title", "apex_type")
            }
        )
    return held


# -- bd command lines (the HTTP shim's /v1/bdh/command) -----------------------

#: bd flags that take a value, so the value is not read as an issue id.
_VALUE_FLAGS = frozenset(
    {
        "--status", "-s", "--title", "--description", "-d", "--priority", "-p",
        "--assignee", "-a", "--notes", "--design", "--acceptance", "--acceptance-criteria",
        "--external-ref", "--add-label", "--remove-label", "--set-labels", "--labels", "-l",
        "--type", "-t", "--parent", "--reason", "-r", "--estimate", "-e", "--due", "--defer",
        "--actor", "--db", "--session", "--body-file", "--description-file", "-m",
        "--message", "--comment",
    }
)  # fmt: skip
_PROGRAMS = frozenset({"bd", "bdh", "beads"})


def parse_command(command_line: str) -> list[tuple[str, str]]:
    """The (intent, bead_id) pairs a bd command line would change:
    ``claim`` (``update ID --status in_progress`` / ``-s`` / ``--claim``)
    or ``close`` (``close ID``, ``update ID --status closed``). Other
    commands (``reopen``, ``show``, ``create``, ...) claim nothing."""
    try:
        tokens = shlex.split(command_line)
    except ValueError:
        tokens = command_line.split()
    while tokens and os.path.basename(tokens[0]) in _PROGRAMS:
        tokens = tokens[1:]
    subcommand: str | None = None
    ids: list[str] = []
    status: str | None = None
    claim_flag = False
    pending = iter(tokens)
    for token in pending:
        if token == "--":
            ids.extend(pending)
            break
        if token.startswith("-") and len(token) > 1:
            name, has_value, value = token.partition("=")
            if not has_value and name in _VALUE_FLAGS:
                value = next(pending, "")
            if name in ("--status", "-s"):
                # An unbalanced quote falls back to str.split, which keeps it.
                status = value.strip().strip("'\"").lower()
            claim_flag = claim_flag or name == "--claim"
        elif subcommand is None:
            subcommand = token
        else:
            ids.append(token)
    intent = None
    if subcommand == "close":
        intent = "close"
    elif subcommand == "update":
        if status == "in_progress" or claim_flag:
            intent = "claim"
        elif status == "closed":
            intent = "close"
    if intent is None:
        return []
    return [(intent, i) for i in dict.fromkeys(ids) if BEAD_ID_RE.match(i)]


async def check_command(hub: Hub, actor: Actor, command_line: str) -> dict[str, Any]:
    """May the caller run this bd command? ``approved: false`` with a
    ``reason`` like ``bd-12 is being worked on by bob (Bob Human)`` when it
    would claim or close an issue another agent holds."""
    wanted = parse_command(command_line)
    if not wanted:
        return {"approved": True}
    async with hub.store.connection() as conn:
        for intent, bead_id in wanted:
            held = await beads.holder(conn, actor.project_id, bead_id)
            if held is not None and held["agent_id"] != actor.agent_id:
                return {"approved": False, "intent": intent, **beads.holder_data(bead_id, held)}
    return {"approved": True}
