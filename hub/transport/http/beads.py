"""bdh's Beads passthrough: approve a bd command before it runs, then sync
the issues it changed."""

from __future__ import annotations

from typing import Any

from hub.services import beads, claims, presence, status
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.registry import HttpCall, api

TAG = "beads"
#: The sync protocol this hub speaks (bdh's sync_protocol_version).
SYNC_PROTOCOL_VERSION = 1


@api.post(
    "/v1/bdh/command",
    summary="May this bd command run? (claims)",
    tag=TAG,
    body=i.CommandRequest,
    response=o.CommandResponse,
    errors={403: "workspace_id is another agent's"},
)
async def command(call: HttpCall, body: i.CommandRequest) -> dict[str, Any]:
    """``approved: false`` with a reason such as "bd-15 is being worked on
    by alice-frontend (juan)" when the command would claim or close an
    issue another agent holds. Always carries the team context."""
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    verdict = await claims.check_command(call.hub, call.actor, body.command_line)
    context = await status.command_context(call.hub, call.actor)
    return {**verdict, "context": context}


@api.post(
    "/v1/bdh/sync",
    summary="Upload issues after a bd command (full or incremental)",
    tag=TAG,
    body=i.SyncRequest,
    response=o.SyncResponse,
    errors={404: "repo_id is not in the key's project"},
)
async def sync(call: HttpCall, body: i.SyncRequest) -> dict[str, Any]:
    """Moving an issue to in_progress claims it for the caller; closing it
    or moving it back releases the claim. ``conflicts`` lists issues the
    caller moved to in_progress that another agent holds."""
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    mode = body.sync_mode or "full"
    result = await beads.sync(
        call.hub,
        call.actor,
        mode,
        issues_jsonl=body.issues_jsonl if mode == "full" else None,
        changed_issues=body.changed_issues if mode == "incremental" else None,
        deleted_ids=body.deleted_ids if mode == "incremental" else None,
        repo_id=body.repo_id or None,
    )
    return {
        "synced": True,
        "issues_count": result["issues_count"],
        "stats": {k: result[k] for k in ("received", "inserted", "updated", "deleted")},
        "conflicts": result["conflicts"],
        "context": await status.command_context(call.hub, call.actor),
        "sync_protocol_version": SYNC_PROTOCOL_VERSION,
    }
