"""Mail and chat, including bdh's send-and-wait stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

from hub.services import chat, mail, presence
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.registry import HttpCall, api

MAIL = "mail"
CHAT = "chat"
#: An SSE comment this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0

SELF = {403: "the body names another agent's workspace", 404: "unknown workspace"}


# -- mail -----------------------------------------------------------------------------


@api.post(
    "/v1/messages",
    retryable=True,
    summary="Send mail to an agent (by workspace id, agent id or alias)",
    tag=MAIL,
    body=i.SendMessageRequest,
    response=o.SendMessageResponse,
    errors={404: "no such recipient in the key's project", 413: "body too large"},
)
async def send_message(call: HttpCall, body: i.SendMessageRequest) -> dict[str, Any]:
    """bdh sends to_workspace; the aw library sends to_alias or
    to_agent_id. The sender is always the key's agent."""
    await presence.require_self(call.hub, call.actor, body.from_workspace)
    ids = [x for x in (body.to_workspace, body.to_agent_id) if x]
    return await mail.send(
        call.hub,
        call.actor,
        body=body.body,
        to=[body.to_alias] if body.to_alias else None,
        to_agent_ids=ids,
        subject=body.subject,
        priority=body.priority or "normal",
        thread_id=body.thread_id,
    )


@api.get(
    "/v1/messages/inbox",
    summary="The key's agent's mail, newest first",
    tag=MAIL,
    query=i.InboxQuery,
    response=o.InboxResponse,
    errors=SELF,
)
async def inbox(call: HttpCall, query: i.InboxQuery) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, query.workspace_id)
    from_alias = query.from_alias or None
    if query.from_workspace:
        # bdh names the sender by workspace id; aliases are unique in a
        # project, so filtering by its alias is the same filter.
        sender = await presence.alias_of(call.hub, call.actor.project_id, query.from_workspace)
        if sender is None or (from_alias is not None and sender != from_alias):
            return {"messages": [], "count": 0, "has_more": False}
        from_alias = sender
    return await mail.inbox(
        call.hub,
        call.actor,
        unread_only=query.unread_only,
        from_alias=from_alias,
        limit=query.limit,
    )


@api.post(
    "/v1/messages/{message_id}/ack",
    retryable=True,
    summary="Mark one message read",
    tag=MAIL,
    body=i.AckRequest,
    response=o.AckResponse,
    errors={404: "the message is not in the caller's inbox"},
)
async def ack_message(call: HttpCall, body: i.AckRequest) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    acked = await mail.ack(call.hub, call.actor, [call.path("message_id")])
    first: dict[str, Any] = acked["acknowledged"][0]
    return first


# -- chat -----------------------------------------------------------------------------


def _participants(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aw library reads agent_id, bdh's own client workspace_id."""
    return [{**p, "workspace_id": p["agent_id"]} for p in parts]


@api.post(
    "/v1/chat/sessions",
    retryable=True,
    summary="Open (or reuse) the conversation with these agents and send a first message",
    tag=CHAT,
    body=i.ChatCreateSessionRequest,
    response=o.ChatCreateSessionResponse,
    errors={404: "an alias is not in the key's project"},
)
async def create_chat_session(call: HttpCall, body: i.ChatCreateSessionRequest) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, body.from_workspace)
    opened = await chat.open_session(
        call.hub, call.actor, body.to_aliases, body.message, leaving=body.leaving
    )
    return {
        **opened,
        "participants": _participants(opened["participants"]),
        "sse_url": f"/v1/chat/sessions/{opened['session_id']}/stream",
    }


@api.get(
    "/v1/chat/sessions",
    summary="The key's agent's conversations, most recent first",
    tag=CHAT,
    response=o.ChatListSessionsResponse,
)
async def list_chat_sessions(call: HttpCall) -> dict[str, Any]:
    return await chat.list_sessions(call.hub, call.actor)


@api.get(
    "/v1/chat/pending",
    summary="Conversations with unread messages, and who is waiting for an answer",
    tag=CHAT,
    response=o.ChatPendingResponse,
)
async def chat_pending(call: HttpCall) -> dict[str, Any]:
    return await chat.pending(call.hub, call.actor)


@api.post(
    "/v1/chat/sessions/{session_id}/messages",
    retryable=True,
    summary="Send a message into a conversation (hang_on asks the waiter for more time)",
    tag=CHAT,
    body=i.ChatSendMessageRequest,
    response=o.ChatSendMessageResponse,
    errors={404: "no such conversation for the caller"},
)
async def send_chat_message(call: HttpCall, body: i.ChatSendMessageRequest) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    sent = await chat.send(
        call.hub,
        call.actor,
        body=body.body,
        session_id=call.path("session_id"),
        hang_on=body.hang_on,
    )
    return {
        "message_id": sent["message_id"],
        "session_id": sent["session_id"],
        "delivered": sent["delivered"],
        "extends_wait_seconds": sent["extends_wait_seconds"],
        "timestamp": sent["timestamp"],
    }


@api.get(
    "/v1/chat/sessions/{session_id}/messages",
    summary="A conversation's history, oldest first",
    tag=CHAT,
    query=i.ChatMessagesQuery,
    response=o.ChatHistoryResponse,
    errors={404: "no such conversation for the caller"},
)
async def chat_history(call: HttpCall, query: i.ChatMessagesQuery) -> dict[str, Any]:
    found = await chat.history(
        call.hub,
        call.actor,
        call.path("session_id"),
        limit=query.limit,
        unread_only=query.unread_only,
    )
    # bdh's own client reads created_at, the aw library timestamp.
    found["messages"] = [{**m, "created_at": m["timestamp"]} for m in found["messages"]]
    return found


@api.post(
    "/v1/chat/sessions/{session_id}/read",
    summary="Mark a conversation read up to a message",
    tag=CHAT,
    body=i.ChatMarkReadRequest,
    response=o.ChatMarkReadResponse,
    errors={404: "no such conversation or message for the caller"},
)
async def mark_chat_read(call: HttpCall, body: i.ChatMarkReadRequest) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    return await chat.mark_read(
        call.hub, call.actor, call.path("session_id"), body.up_to_message_id
    )


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone. Starlette notices a gone client
    only when a write fails (the next keepalive); bdh hangs up as soon as
    its own timer ends, and the wait it showed must end with it."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse_stream(
    events: AsyncGenerator[dict[str, Any], None], request: Request
) -> AsyncIterator[bytes]:
    """The events as SSE frames, with a keepalive comment while quiet.
    Closing (the client left, or the deadline passed) closes the service's
    generator, which clears the caller's wait."""
    # The first frame goes out at once, so the client knows it is connected.
    yield b": connected\n\n"
    gone = asyncio.ensure_future(_disconnected(request))
    pending = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait(
                {pending, gone}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if gone in done:
                return
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield _sse(event)
            pending = asyncio.ensure_future(anext(events))
    finally:
        gone.cancel()
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        await events.aclose()


@api.get(
    "/v1/chat/sessions/{session_id}/stream",
    summary="Server-Sent Events of one conversation until the deadline",
    tag=CHAT,
    query=i.ChatStreamQuery,
    response=o.ChatEvent,
    media_type="text/event-stream",
    errors={404: "no such conversation for the caller", 422: "the deadline is not in the future"},
)
async def chat_stream(call: HttpCall, query: i.ChatStreamQuery) -> StreamingResponse:
    """Frames are ``event: message`` or ``event: read_receipt`` with one
    JSON ``data:`` line (bdh's chat Event). The stream ends at the
    deadline, which read receipts and hang-ons push back."""
    # Checks first (a stranger's session is 404), before the 200 goes out.
    events = await chat.open_stream(call.hub, call.actor, call.path("session_id"), query.deadline)
    return StreamingResponse(
        _sse_stream(events, call.request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
