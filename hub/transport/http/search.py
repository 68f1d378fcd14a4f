"""Full-text search over the HTTP shim: the same service as the
``search.query`` method, for clients without a WebSocket."""

from __future__ import annotations

from typing import Any

from hub.services import search
from hub.transport.http import outputs as o
from hub.transport.http.registry import HttpCall, api
from protocol.methods.search import SearchQuery


class SearchResponse(o.Out):
    hits: list[dict[str, Any]]
    count: int
    next: str | None = None
    searched_at: str


@api.post(
    "/v1/search",
    summary="Full-text search over mail, chat, escalations and issues (search.query)",
    tag="search",
    body=SearchQuery,
    response=SearchResponse,
)
async def search_query(call: HttpCall, body: SearchQuery) -> dict[str, Any]:
    return await search.query(call.hub, call.actor, **body.model_dump())
