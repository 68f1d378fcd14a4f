from __future__ import annotations

from typing import Any

from hub.services import beads, claims, queues
from hub.transport.rpc import Call, method
from protocol.methods.beads import (
    BeadsGet,
    BeadsList,
    BeadsReady,
    BeadsSync,
    ClaimsClaim,
    ClaimsList,
    ClaimsRelease,
)


@method("beads.sync")
async def sync(call: Call, params: BeadsSync) -> dict[str, Any]:
    return await beads.sync(
        call.hub,
        call.actor,
        params.mode,
        issues_jsonl=params.issues_jsonl,
        changed_issues=params.changed_issues,
        deleted_ids=params.deleted_ids,
    )


@method("beads.list")
async def list_(call: Call, params: BeadsList) -> dict[str, Any]:
    return await beads.list_(call.hub, call.actor, status=params.status, limit=params.limit)


@method("beads.get")
async def get(call: Call, params: BeadsGet) -> dict[str, Any]:
    return await beads.get(call.hub, call.actor, params.bead_id)


@method("beads.ready")
async def ready(call: Call, params: BeadsReady) -> dict[str, Any]:
    return await beads.ready(call.hub, call.actor, limit=params.limit)


@method("claims.claim")
async def claim(call: Call, params: ClaimsClaim) -> dict[str, Any]:
    # Agents on the WebSocket claim what the hub knows; only the bdh shim
    # may claim an issue ahead of its first sync.
    return await claims.claim(
        call.hub,
        call.actor,
        params.bead_id,
        allow_unknown=False,
        wait=params.wait,
        idempotency_key=params.idempotency_key if params.wait else None,
    )


@method("claims.release")
async def release(call: Call, params: ClaimsRelease) -> dict[str, Any]:
    return await claims.release(call.hub, call.actor, params.bead_id)


@method("claims.list")
async def list_claims(call: Call, params: ClaimsList) -> dict[str, Any]:
    listed = await claims.list_(call.hub, call.actor)
    return {**listed, "waiting": await queues.waiting(call.hub, call.actor.project_id, "claim")}
