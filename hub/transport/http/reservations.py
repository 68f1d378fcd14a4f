"""File reservations, reached with two body shapes on the same routes.

bdh's own client (auto-reserve of the files an agent edits) sends a list of
``paths`` and reads ``granted``/``conflicts``: a conflict informs, the
answer is 200. The aw library (``bdh :aweb lock|unlock|locks``) sends one
``resource_key`` and reads ReservationAcquireResponse: a conflict is HTTP
409 with the holder (ReservationHeldError). The registry picks the shape
by its required field (``paths`` or ``resource_key``).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from hub.services import claims, guards, presence, queues, reservations
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.base import ORJSONResponse
from hub.transport.http.registry import HttpCall, api
from protocol.errors import ErrorCode, conflict, invalid_params, not_found

TAG = "reservations"


def _held(detail: str, holder: dict[str, Any]) -> Response:
    """The aw library's ReservationHeldError, as a 409."""
    body = {
        "detail": detail,
        "code": int(ErrorCode.CONFLICT),
        "holder_agent_id": holder["holder_agent_id"],
        "holder_alias": holder["holder_alias"],
        "expires_at": holder["expires_at"],
        "retry_after_seconds": holder.get("retry_after_seconds"),
    }
    return ORJSONResponse(body, status_code=409)


@api.post(
    "/v1/reservations",
    retryable=True,
    summary="Reserve files: bdh's paths list, or the aw library's one resource_key",
    tag=TAG,
    body=(i.LockRequest, i.ReservationAcquireRequest),
    response=(o.LockResponse, o.ReservationAcquireResponse),
    errors={
        403: "workspace_id is another agent's",
        409: "(resource_key shape) held by another agent: ReservationHeldError",
    },
)
async def acquire(
    call: HttpCall, body: i.LockRequest | i.ReservationAcquireRequest
) -> dict[str, Any] | Response:
    """Advisory: a path someone else holds comes back in ``conflicts``
    (with holder, expiry, retry_after_seconds); the other paths are
    granted. The aw shape answers ReservationAcquireResponse or 409."""
    if isinstance(body, i.LockRequest):
        await presence.require_self(call.hub, call.actor, body.workspace_id)
        return await reservations.acquire(
            call.hub,
            call.actor,
            body.paths,
            ttl_seconds=body.ttl_seconds,
            exclusive=body.exclusive,
            reason=body.reason or None,
            bead_id=body.bead_id or None,
            wait=body.wait,
            idempotency_key=call.idempotency_key if body.wait else None,
        )
    result = await reservations.acquire(
        call.hub,
        call.actor,
        [body.resource_key],
        ttl_seconds=body.ttl_seconds,
        metadata=body.metadata,
    )
    if result["conflicts"]:
        holder = result["conflicts"][0]
        return _held(f"{body.resource_key} is reserved by {holder['holder_alias']}", holder)
    granted = result["granted"][0]
    return {
        "status": "renewed" if granted["renewed"] else "acquired",
        "project_id": call.actor.project_id,
        "resource_key": granted["path"],
        "reservation_id": granted["reservation_id"],
        "holder_agent_id": call.actor.agent_id,
        "holder_alias": call.actor.alias,
        "acquired_at": granted["acquired_at"],
        "expires_at": granted["expires_at"],
    }


@api.post(
    "/v1/reservations/renew",
    summary="Extend the caller's reservations",
    tag=TAG,
    body=(i.RenewLocksRequest, i.ReservationRenewRequest),
    response=(o.RenewLocksResponse, o.ReservationRenewResponse),
    errors={404: "(resource_key shape) the caller holds no live reservation on it"},
)
async def renew(
    call: HttpCall, body: i.RenewLocksRequest | i.ReservationRenewRequest
) -> dict[str, Any]:
    if isinstance(body, i.RenewLocksRequest):
        await presence.require_self(call.hub, call.actor, body.workspace_id)
        return await reservations.renew(call.hub, call.actor, body.paths, body.ttl_seconds)
    result = await reservations.renew(call.hub, call.actor, [body.resource_key], body.ttl_seconds)
    if not result["renewed"]:
        raise not_found(f"you hold no reservation on {body.resource_key}")
    renewed = result["renewed"][0]
    return {
        "status": "renewed",
        "resource_key": renewed["path"],
        "expires_at": renewed["expires_at"],
    }


@api.post(
    "/v1/reservations/release",
    retryable=True,
    summary="Release the caller's reservations",
    tag=TAG,
    body=(i.UnlockRequest, i.ReservationReleaseRequest),
    response=(o.UnlockResponse, o.ReservationReleaseResponse),
    errors={
        404: "(resource_key shape) nobody holds it",
        409: "(resource_key shape) another agent holds it",
    },
)
async def release(
    call: HttpCall, body: i.UnlockRequest | i.ReservationReleaseRequest
) -> dict[str, Any]:
    """bdh's shape answers released / not_found / not_owner per path."""
    if isinstance(body, i.UnlockRequest):
        await presence.require_self(call.hub, call.actor, body.workspace_id)
        return await reservations.release(call.hub, call.actor, body.paths)
    result = await reservations.release(call.hub, call.actor, [body.resource_key])
    if result["not_owner"]:
        raise conflict(f"{body.resource_key} is reserved by another agent")
    if result["not_found"]:
        raise not_found(f"no reservation on {body.resource_key}")
    return {"status": "released", "resource_key": result["released"][0]}


@api.post(
    "/v1/reservations/revoke",
    summary="Remove anyone's reservations (coordinator or human)",
    tag=TAG,
    body=(i.RevokeLocksRequest, i.ReservationRevokeRequest),
    response=o.ReservationRevokeResponse,
    errors={403: "only the coordinator or a human may revoke"},
    human=True,
)
async def revoke(
    call: HttpCall, body: i.RevokeLocksRequest | i.ReservationRevokeRequest
) -> dict[str, Any]:
    """bdh's shape names exact paths; the aw library's a prefix (none:
    every reservation of the project)."""
    if isinstance(body, i.RevokeLocksRequest):
        await presence.require_self(call.hub, call.actor, body.workspace_id)
        return await reservations.revoke(call.hub, call.actor, paths=body.paths)
    return await reservations.revoke(call.hub, call.actor, prefix=body.prefix)


@api.post(
    "/v1/reservations/check",
    summary="Who holds these paths, with their fencing tokens",
    tag=TAG,
    body=i.CheckLocksRequest,
)
async def check(call: HttpCall, body: i.CheckLocksRequest) -> dict[str, Any]:
    """Per path: the live reservations overlapping it (each with its
    ``token``) and ``exclusive_holder``. Used by ``beadhub guard``."""
    return await reservations.check(call.hub, call.actor, body.paths)


@api.post(
    "/v1/guard/override",
    summary="Record that beadhub guard let a change through another agent's reservation",
    tag=TAG,
    body=i.GuardOverrideRequest,
)
async def guard_override(call: HttpCall, body: i.GuardOverrideRequest) -> dict[str, Any]:
    return await guards.record_override(
        call.hub, call.actor, body.paths, body.holders, body.reason, body.via
    )


@api.get(
    "/v1/queue",
    summary="Who waits in line for which path or issue, since when",
    tag=TAG,
    query=i.QueueQuery,
)
async def queue(call: HttpCall, query: i.QueueQuery) -> dict[str, Any]:
    if query.kind not in ("", "reservation", "claim"):
        raise invalid_params("kind must be reservation or claim", kind=query.kind)
    waiting = await queues.waiting(call.hub, call.actor.project_id, query.kind or None)
    return {"waiting": waiting, "count": len(waiting)}


@api.post(
    "/v1/claims",
    retryable=True,
    summary="Claim an issue; with wait, wait in line for it (a long request)",
    tag="beads",
    body=i.ClaimRequest,
    errors={404: "unknown issue", 409: "another agent holds it (after the wait, if any)"},
)
async def claim(call: HttpCall, body: i.ClaimRequest) -> dict[str, Any]:
    return await claims.claim(
        call.hub,
        call.actor,
        body.bead_id,
        wait=body.wait,
        idempotency_key=call.idempotency_key if body.wait else None,
    )


@api.post(
    "/v1/claims/release",
    retryable=True,
    summary="Release a claim (a human: anyone's)",
    tag="beads",
    body=i.ReleaseClaimRequest,
    errors={409: "another agent holds it"},
)
async def release_claim(call: HttpCall, body: i.ReleaseClaimRequest) -> dict[str, Any]:
    return await claims.release(call.hub, call.actor, body.bead_id)


@api.get(
    "/v1/reservations",
    summary="The project's live reservations",
    tag=TAG,
    query=i.LocksQuery,
    response=o.ListLocksResponse,
    errors={403: "workspace_id is another agent's"},
)
async def list_reservations(call: HttpCall, query: i.LocksQuery) -> dict[str, Any]:
    """Each entry carries bdh's LockInfo and the aw library's
    ReservationView fields. bdh sends ``workspace_id`` (its own) with every
    listing: it names the caller, it does not filter. ``alias`` is the
    holder filter (``bdh :reservations --mine``)."""
    await presence.require_self(call.hub, call.actor, query.workspace_id or None)
    found = await reservations.list_active(
        call.hub,
        call.actor.project_id,
        holder_alias=query.alias or None,
        path_prefix=query.path_prefix or None,
    )
    # Released bdh builds read LockInfo.alias; the contract's name is holder_alias.
    entries = [{**r, "alias": r["holder_alias"]} for r in found]
    waiting = await queues.waiting(call.hub, call.actor.project_id, "reservation")
    return {"reservations": entries, "count": len(entries), "waiting": waiting}
