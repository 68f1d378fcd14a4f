"""Mail: asynchronous messages with a subject, an inbox and read/ack."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from protocol.schema import Params, Recipient, Retryable, ShortText

Priority = Literal["low", "normal", "high", "urgent"]


class MailSend(Retryable):
    """To some agents by alias (``to``) or to every agent of the project
    (``to_all``), exactly one of the two. The body's size limit is a hub
    setting (TOO_LARGE over it)."""

    to: list[Recipient] | None = Field(default=None, min_length=1, max_length=500)
    to_all: bool = False
    subject: ShortText = ""
    body: str = Field(min_length=1)
    priority: Priority = "normal"
    #: Reply within this thread; without it the message starts a new one.
    thread_id: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_audience(self) -> MailSend:
        if bool(self.to) == self.to_all:
            raise ValueError("give either `to` (a list of aliases) or `to_all: true`")
        return self


class MailInbox(Params):
    unread_only: bool = False
    from_alias: ShortText | None = None
    limit: int = Field(default=50, ge=1, le=500)
    #: Page backwards: only messages older than this message id.
    before: str | None = Field(default=None, max_length=64)
    offset: int = Field(default=0, ge=0, le=100_000)


class MailAck(Retryable):
    message_ids: list[str] = Field(min_length=1, max_length=1000)


class MailThread(Params):
    thread_id: str = Field(max_length=64)
    limit: int = Field(default=200, ge=1, le=1000)


class MailReceipts(Params):
    """Delivery states of messages the caller sent; without ids, of its
    last ``limit`` sent messages."""

    message_ids: list[str] | None = Field(default=None, min_length=1, max_length=500)
    limit: int = Field(default=20, ge=1, le=500)


METHODS: dict[str, type[BaseModel]] = {
    "mail.send": MailSend,
    "mail.inbox": MailInbox,
    "mail.ack": MailAck,
    "mail.thread": MailThread,
    "mail.receipts": MailReceipts,
}
