"""Delivery into the live agent: what is new for its model (the hooks'
``POST /v1/news``) and the sender's delivery receipts."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hub.services import delivery, news
from hub.transport.http.base import Body, Query
from hub.transport.http.outputs import Out
from hub.transport.http.registry import HttpCall, api

TAG = "delivery"


class NewsRequest(Body):
    #: Count the mail and answers returned as shown to the model.
    mark_shown: bool = True
    limit: int = Field(default=20, ge=1, le=200)
    #: Repo-relative files the agent works on (conflicts are reported).
    working: list[str] = Field(default_factory=list, max_length=1000)


class NewsResponse(Out):
    mail: list[dict[str, Any]]
    chats: list[dict[str, Any]]
    waiting_on_me: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    unread_mail: int
    empty: bool


class ReceiptsQuery(Query):
    #: Comma-separated message ids; default: the caller's last sent.
    message_ids: str = ""
    limit: int = Field(default=20, ge=1, le=500)


class ReceiptsResponse(Out):
    messages: list[dict[str, Any]]
    count: int


@api.post(
    "/v1/news",
    summary="What is new for the key's agent's model (hooks); marks it shown",
    tag=TAG,
    body=NewsRequest,
    response=NewsResponse,
    errors={403: "a human credential: news is for agents"},
)
async def get_news(call: HttpCall, body: NewsRequest) -> dict[str, Any]:
    return await news.news(
        call.hub, call.actor, mark_shown=body.mark_shown, limit=body.limit, working=body.working
    )


@api.get(
    "/v1/messages/receipts",
    summary="Delivery states of mail the key's agent sent",
    tag=TAG,
    query=ReceiptsQuery,
    response=ReceiptsResponse,
    errors={404: "a message the caller did not send"},
)
async def receipts(call: HttpCall, query: ReceiptsQuery) -> dict[str, Any]:
    ids = [m for m in query.message_ids.split(",") if m.strip()] or None
    return await delivery.receipts(call.hub, call.actor, ids, query.limit)
