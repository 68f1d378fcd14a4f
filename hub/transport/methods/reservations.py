from __future__ import annotations

from typing import Any

from hub.services import queues, reservations
from hub.transport.rpc import Call, method
from protocol.methods.reservations import (
    QueueList,
    ReservationAcquire,
    ReservationCheck,
    ReservationList,
    ReservationRelease,
    ReservationRenew,
    ReservationRevoke,
)


@method("reservations.acquire")
async def acquire(call: Call, params: ReservationAcquire) -> dict[str, Any]:
    return await reservations.acquire(
        call.hub,
        call.actor,
        params.paths,
        ttl_seconds=params.ttl_seconds,
        exclusive=params.exclusive,
        reason=params.reason,
        bead_id=params.bead_id,
        metadata=params.metadata,
        wait=params.wait,
        idempotency_key=params.idempotency_key if params.wait else None,
    )


@method("reservations.renew")
async def renew(call: Call, params: ReservationRenew) -> dict[str, Any]:
    return await reservations.renew(call.hub, call.actor, params.paths, params.ttl_seconds)


@method("reservations.release")
async def release(call: Call, params: ReservationRelease) -> dict[str, Any]:
    return await reservations.release(call.hub, call.actor, params.paths)


@method("reservations.revoke")
async def revoke(call: Call, params: ReservationRevoke) -> dict[str, Any]:
    return await reservations.revoke(call.hub, call.actor, paths=params.paths, prefix=params.prefix)


@method("reservations.list")
async def list_(call: Call, params: ReservationList) -> dict[str, Any]:
    found = await reservations.list_active(
        call.hub,
        call.actor.project_id,
        holder_alias=params.holder_alias,
        path_prefix=params.path_prefix,
    )
    waiting = await queues.waiting(call.hub, call.actor.project_id, "reservation")
    return {"reservations": found, "count": len(found), "waiting": waiting}


@method("reservations.check")
async def check(call: Call, params: ReservationCheck) -> dict[str, Any]:
    return await reservations.check(call.hub, call.actor, params.paths)


@method("queue.list")
async def queue(call: Call, params: QueueList) -> dict[str, Any]:
    waiting = await queues.waiting(call.hub, call.actor.project_id, params.kind)
    return {"waiting": waiting, "count": len(waiting)}
