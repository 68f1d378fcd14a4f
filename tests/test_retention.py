"""Retention: old events are pruned in the background, a resume from
before the window is told to resync (and the client does), and mail and
chat stay until their own retention is set. Rows are backdated rather
than waited for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from hub import metrics
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import create_database, drop_database, onboard, running_hub, unique


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Wait (without asserting on time) until ``check()`` returns a truthy value."""
    async with asyncio.timeout(timeout):
        # The pruner's effect is in the database: there is nothing to await.
        while not (found := await check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def fresh_db() -> AsyncIterator[str]:
    """A database of its own: the pruner walks the log from its oldest
    seq and stops at the first batch holding recent events, as it should
    in a log written in time order. Backdated rows at the top of a shared
    test database's log would sit behind every other test's events."""
    dsn = await create_database()
    yield dsn
    await drop_database(dsn)


async def backdate(dsn: str, project_id: str, tables: tuple[str, ...], days: int = 2) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table in tables:
            await conn.execute(
                f"UPDATE {table} SET created_at = created_at - make_interval(days => $2) "
                "WHERE project_id = $1",
                project_id,
                days,
            )
    finally:
        await conn.close()


async def test_resume_from_before_the_window_is_told_to_resync(fresh_db: str) -> None:
    async with running_hub(
        database_url=fresh_db, event_retention_days=1, prune_interval_seconds=0.2
    ) as server:
        hub = server.hub
        slug = unique("retention")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        project = alice["project_id"]
        async with (
            HubClient(server.ws_url, alice["api_key"], reconnect=False) as a,
            HubClient(server.ws_url, bob["api_key"], reconnect=False) as b,
        ):
            for n in ("one", "two", "three"):
                await a.call("mail.send", to=["bob"], subject=n, body=n)
            first = await b.next_event("mail")
            old_cursor = int(first["cursor"])  # bob saw "one", not "two" or "three"
            await b.next_event("mail")
            last = int((await b.next_event("mail"))["cursor"])

        pruned_before = metrics.sample("beadhub_events_pruned_total") or 0
        resyncs_before = metrics.sample("beadhub_resyncs_total") or 0
        await backdate(fresh_db, project, ("events", "mail_messages", "mail_deliveries"))

        async def pruned() -> int:
            value = await hub.store.fetchval(
                "SELECT pruned_through FROM event_horizons WHERE project_id = $1", project
            )
            return int(value or 0) if (value or 0) >= last else 0

        horizon = await eventually(pruned)
        left = await hub.store.fetchval(
            "SELECT count(*) FROM events WHERE project_id = $1 AND seq <= $2", project, last
        )
        assert left == 0

        async with HubClient(server.ws_url, alice["api_key"], reconnect=False) as a:
            await a.call("mail.send", to=["bob"], subject="four", body="four")
            inboxes: list[list[str]] = []

            async def reread(client: HubClient) -> None:
                inbox = await client.call("mail.inbox")
                inboxes.append([m["subject"] for m in inbox["messages"]])

            b = HubClient(
                server.ws_url,
                bob["api_key"],
                cursor=old_cursor,
                reconnect=False,
                on_resync=lambda event: reread(b),
            )
            async with b:
                resync = await b.next_event()
                assert resync["type"] == "resync"
                assert resync["data"]["requested_cursor"] == str(old_cursor)
                assert int(resync["data"]["pruned_through"]) == horizon
                assert b.cursor == int(resync["cursor"]) > horizon
                assert metrics.sample("beadhub_resyncs_total") > resyncs_before
                assert metrics.sample("beadhub_events_pruned_total") > pruned_before
                # The client re-read its state: mail outlives the pruned events.
                await eventually(lambda: asyncio.sleep(0, inboxes))
                assert sorted(inboxes[0]) == ["four", "one", "three", "two"]
                # ... and continues live from now.
                await a.call("mail.send", to=["bob"], subject="five", body="five")
                live = await b.next_event("mail", where=lambda e: e["data"]["subject"] == "five")
                assert int(live["cursor"]) > int(resync["cursor"])

                with pytest.raises(RpcError) as expired:
                    await b.call("events.since", cursor=old_cursor)
                assert expired.value.code == ErrorCode.CURSOR_EXPIRED
                assert int(expired.value.data["cursor"]) >= int(resync["cursor"])

            # A cursor at or after the horizon resumes as before.
            async with HubClient(
                server.ws_url, bob["api_key"], cursor=int(live["cursor"]) - 1, reconnect=False
            ) as again:
                # (Events just before the cursor may repeat: the late-commit window.)
                await again.next_event("mail", where=lambda e: e["data"]["subject"] == "five")
                assert again.resyncs == 0
                assert (await again.call("events.since", cursor=horizon))["events"]


async def test_pruning_skips_recent_events_and_other_projects(fresh_db: str) -> None:
    async with running_hub(
        database_url=fresh_db, event_retention_days=1, prune_interval_seconds=0.2
    ) as server:
        old = await onboard(server.http_url, unique("old"), "alice")
        recent = await onboard(server.http_url, unique("recent"), "alice")
        await backdate(fresh_db, old["project_id"], ("events",))
        store = server.hub.store

        async def old_gone() -> bool:
            left = await store.fetchval(
                "SELECT count(*) FROM events WHERE project_id = $1", old["project_id"]
            )
            return left == 0

        await eventually(old_gone)
        kept = await store.fetchval(
            "SELECT count(*) FROM events WHERE project_id = $1", recent["project_id"]
        )
        assert kept > 0
        assert (
            await store.fetchval(
                "SELECT count(*) FROM event_horizons WHERE project_id = $1", recent["project_id"]
            )
            == 0
        )


async def test_mail_and_chat_have_their_own_retention(fresh_db: str) -> None:
    async with running_hub(
        database_url=fresh_db,
        event_retention_days=0,
        message_retention_days=1,
        prune_interval_seconds=0.2,
    ) as server:
        slug = unique("mailret")
        alice = await onboard(server.http_url, slug, "alice")
        await onboard(server.http_url, slug, "bob")
        async with HubClient(server.ws_url, alice["api_key"], reconnect=False) as a:
            await a.call("mail.send", to=["bob"], subject="old", body="old")
            chat = await a.call("chat.send", to=["bob"], body="old chat")
            await backdate(
                fresh_db,
                alice["project_id"],
                ("mail_messages", "mail_deliveries", "chat_messages"),
            )
            await a.call("mail.send", to=["bob"], subject="new", body="new")

            async def only_new_left() -> bool:
                thread = await server.hub.store.fetch(
                    "SELECT subject FROM mail_messages WHERE project_id = $1", alice["project_id"]
                )
                return [r["subject"] for r in thread] == ["new"]

            await eventually(only_new_left)
            history = await a.call("chat.history", session_id=chat["session_id"])
            assert history["messages"] == []
            # Events are kept (event retention is off here).
            left = await server.hub.store.fetchval(
                "SELECT count(*) FROM events WHERE project_id = $1", alice["project_id"]
            )
            assert left > 0
