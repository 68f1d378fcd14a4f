"""Outgoing webhooks against a real HTTP receiver in the test: the body is
a Slack-style message, signed with HMAC-SHA256; failed attempts are
retried with backoff under the same delivery id; only humans configure
them, each project its own."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from hub.services import webhooks
from protocol.errors import ErrorCode, RpcError
from tests.support import human_ticket, onboard, unique


class Receiver:
    """A real HTTP server: answers 500 to the first ``failures`` POSTs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.done = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.requests) <= receiver.failures
                self.send_response(500 if failing else 200)
                self.end_headers()
                if not failing:
                    receiver.done.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    monkeypatch.setattr(webhooks, "FIRST_BACKOFF_SECONDS", 0.05)
    r = Receiver(failures=2)
    yield r
    r.server.shutdown()


async def test_an_escalation_is_posted_signed_and_retried(join, connect, hub_server, receiver):
    alice = await join("alice", human_name="Ana")
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    hook = await lead.call("webhooks.create", url=receiver.url, events=["escalation.created"])
    secret = hook["secret"]
    b = await connect(await join("bob"))
    await b.call("escalations.create", subject="Merge the big PR?", situation="CI is green")

    assert await asyncio.to_thread(receiver.done.wait, 10)
    assert len(receiver.requests) == 3
    ids = {headers["x-beadhub-delivery"] for headers, _ in receiver.requests}
    assert len(ids) == 1  # one delivery, three attempts
    headers, body = receiver.requests[-1]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-beadhub-signature"], expected)
    assert headers["x-beadhub-event"] == "escalation.created"
    assert headers["x-beadhub-attempt"] == "3"
    payload = orjson.loads(body)
    assert payload["text"] == "bob escalates: Merge the big PR?"
    assert payload["beadhub"]["data"]["situation"] == "CI is green"

    async def delivered() -> dict:
        while True:
            [listed] = (await lead.call("webhooks.list"))["webhooks"]
            if listed["last_delivery"]["status"] == "delivered":
                return listed
            await asyncio.sleep(0.05)

    listed = await asyncio.wait_for(delivered(), 5)
    assert listed["last_delivery"]["attempts"] == 3
    assert "secret" not in listed


async def test_chat_addressed_to_a_human_is_posted(join, connect, hub_server, receiver):
    receiver.failures = 0
    alice = await join("alice", human_name="Ana")
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    await lead.call("webhooks.create", url=receiver.url, events=["chat.human"])
    b = await connect(await join("bob"))
    await b.call("chat.send", to=["alice"], body="not for the hook")
    await b.call("chat.send", to=["human:Ana"], body="are you there?")
    assert await asyncio.to_thread(receiver.done.wait, 10)
    [(_, body)] = receiver.requests
    assert orjson.loads(body)["text"] == "bob → human:Ana: are you there?"


async def test_only_a_human_of_the_project_configures_hooks(join, connect, hub_server):
    alice = await join("alice", role="coordinator")
    a = await connect(alice)
    with pytest.raises(RpcError) as info:
        await a.call("webhooks.create", url="http://127.0.0.1:9/x")
    assert info.value.code == ErrorCode.FORBIDDEN
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    hook = await lead.call("webhooks.create", url="http://127.0.0.1:9/x")
    with pytest.raises(RpcError) as bad:
        await lead.call("webhooks.create", url="file:///etc/passwd")
    assert bad.value.code == ErrorCode.INVALID_PARAMS

    other = await onboard(hub_server.http_url, unique("other"), "eve")
    stranger = await connect(
        {"api_key": None}, ticket=await human_ticket(hub_server.http_url, other)
    )
    assert (await stranger.call("webhooks.list"))["webhooks"] == []
    with pytest.raises(RpcError) as info:
        await stranger.call("webhooks.delete", webhook_id=hook["webhook_id"])
    assert info.value.code == ErrorCode.NOT_FOUND
    assert (await lead.call("webhooks.delete", webhook_id=hook["webhook_id"]))["deleted"]
