from __future__ import annotations

from typing import Any

from hub.services import webhooks
from hub.transport.rpc import Call, method
from protocol.methods.webhooks import WebhookCreate, WebhookDelete, WebhookList


@method("webhooks.create")
async def create(call: Call, params: WebhookCreate) -> dict[str, Any]:
    return await webhooks.create(
        call.hub, call.actor, params.url, list(params.events or []) or None, params.secret
    )


@method("webhooks.list")
async def list_(call: Call, params: WebhookList) -> dict[str, Any]:
    return await webhooks.list_(call.hub, call.actor)


@method("webhooks.delete")
async def delete(call: Call, params: WebhookDelete) -> dict[str, Any]:
    return await webhooks.delete(call.hub, call.actor, params.webhook_id)
