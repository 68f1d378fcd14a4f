from __future__ import annotations

from typing import Any

from hub.services import news
from hub.transport.rpc import Call, method
from protocol.methods.news import NewsGet


@method("news.get")
async def get(call: Call, params: NewsGet) -> dict[str, Any]:
    return await news.news(
        call.hub,
        call.actor,
        mark_shown=params.mark_shown,
        limit=params.limit,
        working=params.working,
    )
