"""Shared reads (hub.store.shared_read): concurrent identical reads run
once, yet nobody gets a result that started before it asked."""

from __future__ import annotations

import asyncio

import pytest

from hub.store.shared_read import SharedReads
from protocol.client import HubClient
from tests.support import onboard


class Source:
    """A read whose runs are counted and can be held open."""

    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def read(self) -> int:
        self.runs += 1
        run = self.runs
        self.started.set()
        await self.gate.wait()
        return run


async def test_concurrent_callers_share_runs():
    shared, source = SharedReads(), Source()
    source.gate.clear()
    callers = [asyncio.create_task(shared.get("k", source.read)) for _ in range(50)]
    await source.started.wait()
    source.gate.set()
    results = await asyncio.gather(*callers)
    assert source.runs == 2  # the first caller's run, then one for the 49 others
    assert results == [1] + [2] * 49


async def test_a_caller_never_gets_a_run_that_started_before_it_asked():
    shared, source = SharedReads(), Source()
    source.gate.clear()
    first = asyncio.create_task(shared.get("k", source.read))
    await source.started.wait()
    late = asyncio.create_task(shared.get("k", source.read))
    source.gate.set()
    assert await first == 1
    assert await late == 2
    assert await shared.get("k", source.read) == 3  # idle again: a fresh run


async def test_keys_do_not_share():
    shared, source = SharedReads(), Source()
    source.gate.clear()
    a = asyncio.create_task(shared.get("a", source.read))
    b = asyncio.create_task(shared.get("b", source.read))
    await asyncio.sleep(0)
    source.gate.set()
    assert sorted([await a, await b]) == [1, 2]


async def test_a_failed_run_fails_its_callers_only():
    shared = SharedReads()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("database hiccup")
        return "ok"

    with pytest.raises(RuntimeError):
        await shared.get("k", flaky)
    assert await shared.get("k", flaky) == "ok"


async def test_a_cancelled_caller_does_not_cancel_the_run_others_wait_on():
    shared, source = SharedReads(), Source()
    source.gate.clear()
    quitter = asyncio.create_task(shared.get("k", source.read))
    stayer = asyncio.create_task(shared.get("k", source.read))
    await source.started.wait()
    quitter.cancel()
    source.gate.set()
    assert await stayer == 2
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_status_under_concurrent_polling_shows_a_callers_own_change(hub_server, slug):
    """Many agents polling status at once; each one's claim is in the status
    it asks for right after claiming."""
    agents = [await onboard(hub_server.http_url, slug, f"agent{i}") for i in range(8)]
    jsonl = "\n".join(f'{{"id": "bd-{i}", "title": "t{i}", "status": "open"}}' for i in range(8))
    async with HubClient(hub_server.ws_url, agents[0]["api_key"]) as first:
        await first.call("beads.sync", mode="full", issues_jsonl=jsonl)
    clients = [HubClient(hub_server.ws_url, a["api_key"]) for a in agents]
    await asyncio.gather(*(c.connect() for c in clients))
    try:

        async def claim_then_look(i: int) -> None:
            for _ in range(3):
                await clients[i].call("status.get")
            await clients[i].call("claims.claim", bead_id=f"bd-{i}")
            status = await clients[i].call("status.get")
            assert status["workspace"]["current_issue"] == f"bd-{i}"

        await asyncio.gather(*(claim_then_look(i) for i in range(8)))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
