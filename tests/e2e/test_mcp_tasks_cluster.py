"""MCP Tasks on two hub processes behind nginx, driven by the official
requester (tests/mcp_requester): the instance running a task's wait is
killed (SIGKILL), the reply comes while nobody waits, and the requester's
next ``tasks/get`` (on the other instance, through the balancer) adopts the
task and finishes it from the store."""

from __future__ import annotations

import asyncpg
import pytest

from protocol.client import HubClient
from tests.e2e.cluster import Cluster, running_cluster
from tests.support import onboard, unique
from tests.test_mcp_requester import over_http, requester
from tests.test_mcp_tasks import sender_waiting, until

pytestmark = pytest.mark.timeout(120)


async def runner_of(cluster: Cluster, task_id: str) -> int:
    """Which hub (index) runs the task's wait, from the store."""
    conn = await asyncpg.connect(cluster.database_url)
    try:
        runner = await conn.fetchval("SELECT runner FROM tool_tasks WHERE id = $1", task_id)
    finally:
        await conn.close()
    return [cluster.instance_id(i) for i in range(len(cluster.hubs))].index(runner)


async def test_a_task_whose_instance_was_killed_is_finished_by_the_other() -> None:
    async with running_cluster() as cluster:
        slug = unique("tasksc")
        alice = await onboard(cluster.http_url, slug, "alice")
        bob = await onboard(cluster.http_url, slug, "bob")
        scenario = over_http(
            cluster.http_url,
            alice,
            scenario="settle",
            tool="chat_send",
            arguments={"to": ["bob"], "body": "still there?", "wait": 90},
        )
        async with requester(scenario) as r:
            started = await r.next("started")
            assert started["kind"] == "task"
            running = await runner_of(cluster, started["taskId"])
            survivor = cluster.hubs[1 - running]
            async with HubClient(survivor.ws_url, bob["api_key"]) as b:
                await until(lambda: sender_waiting(b), "alice shown waiting")
                cluster.kill(running)
                pending = (await b.call("chat.pending"))["pending"]
                await b.call("chat.send", session_id=pending[0]["session_id"], body="I am here")
                outcome = await r.next("outcome", timeout=90)
        assert outcome["status"] == "completed", outcome
        answer = outcome["result"]["structuredContent"]
        assert answer["status"] == "replied" and answer["reply"]["body"] == "I am here"
        assert await runner_of(cluster, started["taskId"]) == 1 - running
