from __future__ import annotations

from typing import Any

from hub.services import search
from hub.transport.rpc import Call, method
from protocol.methods.search import SearchQuery


@method("search.query")
async def query(call: Call, params: SearchQuery) -> dict[str, Any]:
    return await search.query(call.hub, call.actor, **params.model_dump())
