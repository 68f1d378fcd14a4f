from __future__ import annotations

from typing import Any

from hub.services import delivery, mail
from hub.transport.rpc import Call, method
from protocol.methods.mail import MailAck, MailInbox, MailReceipts, MailSend, MailThread


@method("mail.send", self_keyed=True)
async def send(call: Call, params: MailSend) -> dict[str, Any]:
    return await mail.send(
        call.hub,
        call.actor,
        to=params.to,
        to_all=params.to_all,
        subject=params.subject,
        body=params.body,
        priority=params.priority,
        thread_id=params.thread_id,
        idempotency_key=params.idempotency_key,
    )


@method("mail.inbox")
async def inbox(call: Call, params: MailInbox) -> dict[str, Any]:
    return await mail.inbox(call.hub, call.actor, **params.model_dump())


@method("mail.ack")
async def ack(call: Call, params: MailAck) -> dict[str, Any]:
    return await mail.ack(call.hub, call.actor, params.message_ids)


@method("mail.thread")
async def thread(call: Call, params: MailThread) -> dict[str, Any]:
    return await mail.thread(call.hub, call.actor, params.thread_id, params.limit)


@method("mail.receipts")
async def receipts(call: Call, params: MailReceipts) -> dict[str, Any]:
    return await delivery.receipts(call.hub, call.actor, params.message_ids, params.limit)
