"""The official MCP Tasks requester against the hub: ``@modelcontextprotocol/
ext-tasks`` on ``@modelcontextprotocol/client`` (versions pinned in
tests/mcp_requester/package-lock.json, installed by scripts/test-deps.sh),
run by node from tests/mcp_requester/requester.mjs. It calls a waiting tool
as a task and polls ``tasks/get`` until a WebSocket agent answers, or
cancels it; its steps come back as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from protocol.client import HubClient
from tests.mcp_support import ModernHttp, stdio_params
from tests.support import RunningHub, onboard, unique
from tests.test_mcp_tasks import _not, sender_waiting, until

HERE = Path(__file__).parent / "mcp_requester"


class Requester:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []

    async def next(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The next step of that kind (a crash fails the test with its stack)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"the requester ended early; it said {self.seen}"
                step = json.loads(line)
                self.seen.append(step)
                assert step["event"] != "crashed", step
                if step["event"] == event:
                    return dict(step)

    async def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()


@contextlib.asynccontextmanager
async def requester(scenario: dict[str, Any]) -> AsyncIterator[Requester]:
    node = shutil.which("node")
    assert node, "node is needed (scripts/test-deps.sh installs the requester)"
    assert (HERE / "node_modules" / "@modelcontextprotocol" / "ext-tasks").is_dir(), (
        "run scripts/test-deps.sh: it installs tests/mcp_requester with npm ci"
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "requester.mjs"),
        json.dumps(scenario),
        cwd=HERE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Requester(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def over_http(http_url: str, agent: dict[str, Any], **scenario: Any) -> dict[str, Any]:
    return {
        "transport": "http",
        "url": http_url + "/mcp",
        "apiKey": agent["api_key"],
        **scenario,
    }


def over_stdio(http_url: str, agent: dict[str, Any], **scenario: Any) -> dict[str, Any]:
    params = stdio_params(http_url, agent["api_key"])
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **(params.env or {})}
    return {
        "transport": "stdio",
        "command": params.command,
        "args": params.args,
        "env": env,
        "cwd": str(Path(__file__).parent.parent),
        **scenario,
    }


async def pair(server: RunningHub) -> tuple[dict[str, Any], dict[str, Any]]:
    slug = unique("requester")
    return (
        await onboard(server.http_url, slug, "alice"),
        await onboard(server.http_url, slug, "bob"),
    )


CHAT = {"tool": "chat_send", "arguments": {"to": ["bob"], "body": "may I?", "wait": 60}}


async def _answered_by_bob(server: RunningHub, how: Any) -> None:
    alice, bob = await pair(server)
    async with (
        HubClient(server.ws_url, bob["api_key"]) as b,
        requester(how(server.http_url, alice, scenario="settle", **CHAT)) as r,
    ):
        connected = await r.next("connected")
        assert connected["era"] == "modern" and connected["version"] == "2026-07-28"
        started = await r.next("started")
        assert started["kind"] == "task" and started["taskId"]
        event = await b.next_event("chat.message", timeout=30)
        await until(lambda: sender_waiting(b), "alice shown waiting")
        await b.call("chat.send", session_id=event["data"]["session_id"], body="yes, go")
        outcome = await r.next("outcome")
    assert outcome["status"] == "completed", outcome
    assert "working" in outcome["statuses"] and outcome["statuses"][-1] == "completed"
    result = outcome["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["reply"]["body"] == "yes, go"
    assert result["content"][0]["text"] == "replied: bob: yes, go"


async def test_the_requester_runs_a_chat_wait_as_a_task_over_http(hub_server: RunningHub) -> None:
    await _answered_by_bob(hub_server, over_http)


async def test_the_requester_runs_a_chat_wait_as_a_task_over_stdio(
    hub_server: RunningHub,
) -> None:
    await _answered_by_bob(hub_server, over_stdio)


async def test_the_requester_cancels_a_task_and_the_wait_ends(hub_server: RunningHub) -> None:
    alice, bob = await pair(hub_server)
    chat = {**CHAT, "arguments": {**CHAT["arguments"], "wait": 120}}
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        requester(over_http(hub_server.http_url, alice, scenario="cancel", **chat)) as r,
    ):
        started = await r.next("started")
        assert started["kind"] == "task"
        await until(lambda: sender_waiting(b), "alice shown waiting")
        await r.tell("cancel")
        await r.next("cancel-sent")
        snapshot = await r.next("snapshot")
        assert snapshot["status"] == "cancelled"
        outcome = await r.next("outcome")
        assert outcome["status"] == "cancelled", outcome
        await until(lambda: _not(sender_waiting(b)), "the wait ended on the hub")
    # And the store says so to anyone who asks (alice, on the wire).
    task = await ModernHttp(hub_server.http_url, alice["api_key"]).result(
        "tasks/get", taskId=started["taskId"]
    )
    assert task["status"] == "cancelled"


async def test_the_requester_of_another_agent_cannot_see_or_cancel_a_task(
    hub_server: RunningHub,
) -> None:
    alice, bob = await pair(hub_server)
    mine = ModernHttp(hub_server.http_url, alice["api_key"])
    created = await mine.result("tools/call", name=CHAT["tool"], arguments=CHAT["arguments"])
    scenario = over_http(hub_server.http_url, bob, scenario="foreign", taskId=created["taskId"])
    async with requester(scenario) as r:
        for what in ("snapshot", "cancel"):
            refused = await r.next("refused")
            assert refused["what"] == what and refused["code"] == -32602, refused
    assert (await mine.result("tasks/get", taskId=created["taskId"]))["status"] == "working"
    await mine.result("tasks/cancel", taskId=created["taskId"])
