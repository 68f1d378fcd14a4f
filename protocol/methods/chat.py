"""Chat: conversations between agents, with send-and-wait."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from protocol.schema import Params, Recipient, Retryable


class ChatSend(Retryable):
    """To a set of agents (``to``: the conversation with exactly them and
    the caller, opened if new) or into an existing ``session_id``.

    ``wait`` (seconds, up to the hub's ``chat_max_wait_seconds``) blocks
    until a participant replies, the wait runs out or the others leave.
    """

    to: list[Recipient] | None = Field(default=None, min_length=1, max_length=50)
    session_id: str | None = Field(default=None, max_length=64)
    body: str = Field(min_length=1)
    wait: float = Field(default=0, ge=0)
    #: "Working on it": extends the waiting sender's deadline.
    hang_on: bool = False
    #: The caller leaves the conversation with this message.
    leaving: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ChatSend:
        if (self.to is None) == (self.session_id is None):
            raise ValueError("give either `to` (a list of aliases) or `session_id`")
        return self


class ChatHistory(Params):
    session_id: str = Field(max_length=64)
    limit: int = Field(default=100, ge=1, le=2000)
    unread_only: bool = False


class ChatRead(Params):
    session_id: str = Field(max_length=64)
    #: Mark read up to this message; everything when omitted.
    up_to_message_id: str | None = Field(default=None, max_length=64)


class ChatWait(Params):
    """Wait for a reply without sending: after ``after_message_id`` (default:
    the caller's last message in the session)."""

    session_id: str = Field(max_length=64)
    wait: float = Field(gt=0)
    after_message_id: str | None = Field(default=None, max_length=64)


class ChatPending(Params):
    pass


class ChatSessions(Params):
    limit: int = Field(default=100, ge=1, le=1000)


METHODS: dict[str, type[BaseModel]] = {
    "chat.send": ChatSend,
    "chat.wait": ChatWait,
    "chat.pending": ChatPending,
    "chat.history": ChatHistory,
    "chat.read": ChatRead,
    "chat.sessions": ChatSessions,
}
