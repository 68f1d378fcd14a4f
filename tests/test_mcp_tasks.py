"""Waiting MCP tool calls as tasks (the Tasks extension, 2026-07-28) on
``/mcp``: the call answers a task at once, ``tasks/get`` reports it,
``tasks/cancel`` ends the wait; the task lives in the store, so another
instance answers for it and adopts a wait its instance left. A client
that does not declare the extension gets the ordinary call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from hub.bus.relay import gap_signal
from hub.services import leases, tool_tasks
from protocol.client import HubClient
from tests.mcp_support import ModernHttp, ModernStdio, last_message, mcp_client
from tests.support import (
    REDIS_URL,
    RunningHub,
    grant_coordinator,
    onboard,
    running_hub,
    unique,
)
from tests.test_beads import issue, jsonl


async def pair(server: RunningHub) -> tuple[dict[str, Any], dict[str, Any]]:
    slug = unique("tasks")
    alice = await onboard(server.http_url, slug, "alice")
    bob = await onboard(server.http_url, slug, "bob")
    return alice, bob


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (bounded) for a state the hub reaches asynchronously."""
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def settled(client: ModernHttp, task_id: str) -> dict[str, Any]:
    """Poll ``tasks/get`` as a requester does, until the task is terminal."""
    for _ in range(600):
        task = await client.result("tasks/get", taskId=task_id)
        if task["status"] != "working":
            return task
        await asyncio.sleep(task["pollIntervalMs"] / 1000 / 10)
    raise AssertionError(f"task {task_id} still working")


async def sender_waiting(b: HubClient) -> bool:
    pending = (await b.call("chat.pending"))["pending"]
    return bool(pending and pending[0]["sender_waiting"])


async def test_chat_send_with_wait_runs_as_a_task_until_the_reply(
    hub_server: RunningHub,
) -> None:
    alice, bob = await pair(hub_server)
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        created = await client.result(
            "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "may I?", "wait": 60}
        )
        assert created["resultType"] == "task" and created["status"] == "working"
        assert created["pollIntervalMs"] > 0 and created["ttlMs"] >= 60_000
        task_id = created["taskId"]
        event = await b.next_event("chat.message", timeout=30)
        working = await client.result("tasks/get", taskId=task_id)
        assert working["status"] == "working" and working["resultType"] == "complete"
        assert "waiting for a reply" in working["statusMessage"]
        assert working["statusMessage"].endswith(" s of 60)")
        await until(lambda: sender_waiting(b), "alice shown waiting")
        await b.call("chat.send", session_id=event["data"]["session_id"], body="yes, go")
        done = await settled(client, task_id)
    assert done["status"] == "completed"
    result = done["result"]
    assert result["resultType"] == "complete" and result["isError"] is False
    assert result["structuredContent"]["status"] == "replied"
    assert result["structuredContent"]["reply"]["body"] == "yes, go"
    assert result["content"][0]["text"] == "replied: bob: yes, go"


async def test_cancelling_a_task_ends_the_wait_on_the_hub(hub_server: RunningHub) -> None:
    alice, bob = await pair(hub_server)
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        created = await client.result(
            "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "there?", "wait": 120}
        )
        await until(lambda: sender_waiting(b), "alice shown waiting")
        acked = await client.result("tasks/cancel", taskId=created["taskId"])
        assert acked["resultType"] == "complete" and set(acked) <= {"resultType", "_meta"}
        task = await client.result("tasks/get", taskId=created["taskId"])
        assert task["status"] == "cancelled" and "result" not in task
        await until(lambda: _not(sender_waiting(b)), "alice no longer shown waiting")
        # Cancelling again, or after the end, changes nothing.
        await client.result("tasks/cancel", taskId=created["taskId"])
        assert (await client.result("tasks/get", taskId=created["taskId"]))["status"] == "cancelled"


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_another_agents_key_is_refused_on_tasks_get_and_cancel(
    hub_server: RunningHub,
) -> None:
    alice, bob = await pair(hub_server)
    stranger = await onboard(hub_server.http_url, unique("other"), "mallory")
    mine = ModernHttp(hub_server.http_url, alice["api_key"])
    created = await mine.result(
        "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "hi", "wait": 60}
    )
    task_id = created["taskId"]
    for key in (bob["api_key"], stranger["api_key"]):
        other = ModernHttp(hub_server.http_url, key)
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            extra = {"inputResponses": {}} if method == "tasks/update" else {}
            answer = await other.request(method, taskId=task_id, **extra)
            assert answer["error"]["code"] == -32602, answer
            assert "not found" in answer["error"]["message"].lower()
    # Nothing changed: the task is still alice's, still waiting.
    assert (await mine.result("tasks/get", taskId=task_id))["status"] == "working"
    await mine.result("tasks/cancel", taskId=task_id)


async def test_bad_task_requests_are_clear_errors(hub_server: RunningHub) -> None:
    alice, _ = await pair(hub_server)
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    answer = await client.request("tasks/get", taskId="no-such-task")
    assert answer["error"]["code"] == -32602
    answer = await client.request("tasks/get", taskId="x" * 300)
    assert answer["error"]["code"] == -32602
    answer = await client.request("tasks/cancel")
    assert answer["error"]["code"] == -32602
    # Without the extension declared: the capability is missing.
    plain = ModernHttp(hub_server.http_url, alice["api_key"], tasks=False)
    answer = await plain.request("tasks/get", taskId="no-such-task")
    assert answer["error"]["code"] == -32021
    assert answer["error"]["data"]["requiredCapabilities"] == {
        "extensions": {"io.modelcontextprotocol/tasks": {}}
    }
    # A call refused at once is refused at once, not as a task.
    refused = await client.result("tools/call", name="chat_wait", arguments={"wait": 5})
    assert refused.get("resultType") != "task" and refused["isError"] is True


async def test_a_call_that_does_not_wait_is_no_task(hub_server: RunningHub) -> None:
    alice, _ = await pair(hub_server)
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    sent = await client.result(
        "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "fyi"}
    )
    assert sent["resultType"] == "complete" and sent["structuredContent"]["status"] == "sent"
    listed = await client.result("server/discover")
    assert listed["capabilities"]["extensions"] == {"io.modelcontextprotocol/tasks": {}}


async def test_without_the_extension_a_wait_is_the_ordinary_call(hub_server: RunningHub) -> None:
    """A 2026-07-28 client that does not declare Tasks, and the Python
    SDK's client (which does not either), wait in the call as before."""
    alice, bob = await pair(hub_server)
    plain = ModernHttp(hub_server.http_url, alice["api_key"], tasks=False)
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:

        async def bob_answers(body: str) -> None:
            event = await b.next_event(
                "chat.message", timeout=30, where=lambda e: e["data"]["from_alias"] == "alice"
            )
            await b.call("chat.send", session_id=event["data"]["session_id"], body=body)

        answering = asyncio.create_task(bob_answers("one"))
        result = await plain.result(
            "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "1?", "wait": 30}
        )
        await answering
        assert result["resultType"] == "complete"
        assert result["structuredContent"]["reply"]["body"] == "one"

        answering = asyncio.create_task(bob_answers("two"))
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        async with mcp_client("http", hub_server.http_url, alice["api_key"]) as client:
            answer = await client.call_tool(
                "chat_send",
                {"to": ["bob"], "body": "2?", "wait": 30},
                progress_callback=on_progress,
            )
        await answering
        assert not answer.is_error and (answer.structured_content or {})["reply"]["body"] == "two"
        assert progress

        # The 2025-11-25 handshake revision: the ordinary call, and no tasks/*.
        answering = asyncio.create_task(bob_answers("three"))
        async with mcp_client("http", hub_server.http_url, alice["api_key"], mode="legacy") as old:
            assert old.protocol_version == "2025-11-25"
            answer = await old.call_tool("chat_send", {"to": ["bob"], "body": "3?", "wait": 30})
            await answering
            assert (answer.structured_content or {})["reply"]["body"] == "three"
        async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
            response = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": "x"}},
                headers={
                    "Authorization": f"Bearer {alice['api_key']}",
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2025-11-25",
                },
            )
        answer = last_message(response.headers["content-type"], response.text)
        assert answer["error"]["code"] == -32601, answer


async def test_escalate_and_claim_with_wait_run_as_tasks(hub_server: RunningHub) -> None:
    slug = unique("tasks")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    lead = await grant_coordinator(
        hub_server, await onboard(hub_server.http_url, slug, "lead", role="coordinator")
    )
    async with HubClient(hub_server.ws_url, lead["api_key"]) as coordinator:
        created = await client.result(
            "tools/call",
            name="escalate",
            arguments={"subject": "Which API?", "situation": "v1 or v2?", "wait": 60},
        )
        assert created["resultType"] == "task"
        event = await coordinator.next_event("escalation.created", timeout=30)
        await coordinator.call(
            "escalations.respond", escalation_id=event["data"]["escalation_id"], response="v2"
        )
        done = await settled(client, created["taskId"])
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"]["status"] == "answered"
    assert done["result"]["structuredContent"]["response"] == "v2"

    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-q")))
        await b.call("claims.claim", bead_id="bd-q")
        queued = await client.result(
            "tools/call", name="claim", arguments={"bead_id": "bd-q", "wait": 60}
        )
        await b.next_event("claim.queued", timeout=30)
        await b.call("claims.release", bead_id="bd-q")
        done = await settled(client, queued["taskId"])
    answer = done["result"]["structuredContent"]
    assert answer["status"] == "granted" and answer["claim"]["alias"] == "alice"


async def test_a_cancel_whose_doorbell_the_bus_lost_ends_the_wait_after_the_gap(
    database_url: str,
) -> None:
    """Fault injection on a private hub: the cancel is committed but its
    doorbell never reaches the runner (as when Redis restarts meanwhile).
    When the bus reports the gap, the runner reads the store and stops."""
    async with running_hub(database_url=database_url) as server:
        alice, bob = await pair(server)
        client = ModernHttp(server.http_url, alice["api_key"])
        async with HubClient(server.ws_url, bob["api_key"]) as b:
            created = await client.result(
                "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "?", "wait": 120}
            )
            await until(lambda: sender_waiting(b), "alice shown waiting")
            relay = server.hub.relay
            relay.deliver = lambda channel, message: None  # the bus loses what follows
            try:
                await client.result("tasks/cancel", taskId=created["taskId"])
            finally:
                del relay.deliver
            assert await sender_waiting(b), "the doorbell was not lost"
            relay.on_bus_message(tool_tasks.CHANNEL, gap_signal(5.0))
            await until(lambda: _not(sender_waiting(b)), "the wait ended after the gap")
        task = await client.result("tasks/get", taskId=created["taskId"])
        assert task["status"] == "cancelled"


async def test_a_task_past_its_ttl_is_pruned(hub_server: RunningHub) -> None:
    alice, _ = await pair(hub_server)
    client = ModernHttp(hub_server.http_url, alice["api_key"])
    created = await client.result(
        "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "x", "wait": 60}
    )
    await client.result("tasks/cancel", taskId=created["taskId"])
    hub = hub_server.hub
    await leases.sweep(hub)
    assert (await client.result("tasks/get", taskId=created["taskId"]))["status"] == "cancelled"
    await hub.store.execute(
        "UPDATE tool_tasks SET expires_at = now() - interval '1 second' WHERE id = $1",
        created["taskId"],
    )
    await leases.sweep(hub)
    answer = await client.request("tasks/get", taskId=created["taskId"])
    assert answer["error"]["code"] == -32602


# -- several instances ---------------------------------------------------------------------


async def test_another_instance_answers_for_a_task_and_cancels_its_wait(
    database_url: str, bus_prefix: str
) -> None:
    async with (
        running_hub(database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix) as one,
        running_hub(database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix) as two,
    ):
        alice, bob = await pair(one)
        on_one = ModernHttp(one.http_url, alice["api_key"])
        on_two = ModernHttp(two.http_url, alice["api_key"])
        async with HubClient(two.ws_url, bob["api_key"]) as b:
            created = await on_one.result(
                "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "?", "wait": 120}
            )
            await until(lambda: sender_waiting(b), "alice shown waiting")
            task = await on_two.result("tasks/get", taskId=created["taskId"])
            assert task["status"] == "working"
            await on_two.result("tasks/cancel", taskId=created["taskId"])
            # The wait ran on the first instance: the bus told it to stop.
            await until(lambda: _not(sender_waiting(b)), "the wait ended on the first instance")
            cancelled = await on_one.result("tasks/get", taskId=created["taskId"])
            assert cancelled["status"] == "cancelled"


async def test_a_wait_whose_instance_stopped_is_adopted_and_misses_no_reply(
    database_url: str, bus_prefix: str
) -> None:
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as two:
        alice, bob = await pair(two)
        on_two = ModernHttp(two.http_url, alice["api_key"])
        async with HubClient(two.ws_url, bob["api_key"]) as b:
            async with running_hub(
                database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
            ) as one:
                on_one = ModernHttp(one.http_url, alice["api_key"])
                created = await on_one.result(
                    "tools/call",
                    name="chat_send",
                    arguments={"to": ["bob"], "body": "still there?", "wait": 120},
                )
                event = await b.next_event("chat.message", timeout=30)
                await until(lambda: sender_waiting(b), "alice shown waiting")
            # The first instance is gone; bob answers while nobody waits.
            await b.call("chat.send", session_id=event["data"]["session_id"], body="here")
            done = await settled(on_two, created["taskId"])
    assert done["status"] == "completed"
    answer = done["result"]["structuredContent"]
    assert answer["status"] == "replied" and answer["reply"]["body"] == "here"


# -- the stdio server ------------------------------------------------------------------------


async def test_the_stdio_server_runs_waits_as_tasks_too(hub_server: RunningHub) -> None:
    alice, bob = await pair(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        ModernStdio.running(hub_server.http_url, alice["api_key"]) as client,
    ):
        created = await client.result(
            "tools/call", name="chat_send", arguments={"to": ["bob"], "body": "ok?", "wait": 60}
        )
        assert created["resultType"] == "task"
        event = await b.next_event("chat.message", timeout=30)
        assert (await client.result("tasks/get", taskId=created["taskId"]))["status"] == "working"
        await b.call("chat.send", session_id=event["data"]["session_id"], body="ok")
        for _ in range(600):
            done = await client.result("tasks/get", taskId=created["taskId"])
            if done["status"] != "working":
                break
            await asyncio.sleep(0.05)
        assert done["status"] == "completed"
        assert done["result"]["structuredContent"]["reply"]["body"] == "ok"

        waiting = await client.result(
            "tools/call",
            name="chat_reply",
            arguments={"session_id": event["data"]["session_id"], "body": "and?", "wait": 120},
        )
        await until(lambda: sender_waiting(b), "alice shown waiting")
        await client.result("tasks/cancel", taskId=waiting["taskId"])
        cancelled = await client.result("tasks/get", taskId=waiting["taskId"])
        assert cancelled["status"] == "cancelled"
        await until(lambda: _not(sender_waiting(b)), "the wait ended on the hub")


async def test_an_adopted_escalation_is_not_asked_twice(database_url: str, bus_prefix: str) -> None:
    """The instance that adopts an escalate task repeats the call: its
    escalations.create carries the task's key, so the human sees one."""
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as two:
        slug = unique("tasks")
        alice = await onboard(two.http_url, slug, "alice")
        lead = await grant_coordinator(
            two, await onboard(two.http_url, slug, "lead", role="coordinator")
        )
        async with HubClient(two.ws_url, lead["api_key"]) as coordinator:
            async with running_hub(
                database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
            ) as one:
                created = await ModernHttp(one.http_url, alice["api_key"]).result(
                    "tools/call",
                    name="escalate",
                    arguments={"subject": "Which API?", "situation": "v1 or v2?", "wait": 60},
                )
                asked = await coordinator.next_event("escalation.created", timeout=30)
            on_two = ModernHttp(two.http_url, alice["api_key"])
            assert (await on_two.result("tasks/get", taskId=created["taskId"]))[
                "status"
            ] == "working"
            eid = asked["data"]["escalation_id"]
            await coordinator.call("escalations.respond", escalation_id=eid, response="v2")
            done = await settled(on_two, created["taskId"])
            listed = await coordinator.call("escalations.list")
    answer = done["result"]["structuredContent"]
    assert answer["status"] == "answered" and answer["escalation_id"] == eid
    assert [e["escalation_id"] for e in listed["escalations"]] == [eid]
