from __future__ import annotations

from typing import Any

from hub.services import activity
from hub.transport.rpc import Call, method
from protocol.methods.activity import ActivityRecent


@method("activity.recent")
async def recent(call: Call, params: ActivityRecent) -> dict[str, Any]:
    return await activity.recent(
        call.hub,
        call.actor,
        limit=params.limit,
        types=params.types,
        agent_id=params.agent_id,
        before=params.before,
    )
