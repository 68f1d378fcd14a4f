from __future__ import annotations

from typing import Any

from hub.services import chat
from hub.transport.rpc import Call, method
from protocol.methods.chat import (
    ChatHistory,
    ChatPending,
    ChatRead,
    ChatSend,
    ChatSessions,
    ChatWait,
)


@method("chat.send")
async def send(call: Call, params: ChatSend) -> dict[str, Any]:
    return await chat.send(call.hub, call.actor, **params.model_dump())


@method("chat.wait")
async def wait(call: Call, params: ChatWait) -> dict[str, Any]:
    return await chat.wait_reply(
        call.hub,
        call.actor,
        params.session_id,
        wait=params.wait,
        after_message_id=params.after_message_id,
    )


@method("chat.pending")
async def pending(call: Call, params: ChatPending) -> dict[str, Any]:
    return await chat.pending(call.hub, call.actor)


@method("chat.history")
async def history(call: Call, params: ChatHistory) -> dict[str, Any]:
    return await chat.history(
        call.hub,
        call.actor,
        params.session_id,
        limit=params.limit,
        unread_only=params.unread_only,
    )


@method("chat.read")
async def read(call: Call, params: ChatRead) -> dict[str, Any]:
    return await chat.mark_read(call.hub, call.actor, params.session_id, params.up_to_message_id)


@method("chat.sessions")
async def sessions(call: Call, params: ChatSessions) -> dict[str, Any]:
    return await chat.list_sessions(call.hub, call.actor, params.limit)
