"""Outgoing webhooks of a project (humans only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from protocol.schema import Params

WebhookEvent = Literal["escalation.created", "escalation.expired", "chat.human"]


class WebhookCreate(Params):
    url: str = Field(min_length=8, max_length=2000)
    #: What to send; all of them when omitted.
    events: list[WebhookEvent] | None = Field(default=None, min_length=1, max_length=3)
    #: The HMAC key; the hub makes one (shown once) when omitted.
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class WebhookList(Params):
    pass


class WebhookDelete(Params):
    webhook_id: str = Field(max_length=64)


METHODS: dict[str, type[BaseModel]] = {
    "webhooks.create": WebhookCreate,
    "webhooks.list": WebhookList,
    "webhooks.delete": WebhookDelete,
}
