"""File reservations over real WebSockets: grants, conflicts with the
holder and when to retry, shared vs exclusive, globs, renew, release,
revoke, expiry (with its event), bad paths, races and project isolation;
event payloads as stored, and acquires and releases grouped into one commit
(a batch whose call fails, calls that collide, many overlapping at once)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from hub.services import reservations
from hub.services.clock import iso, now, parse
from hub.services.context import Actor
from hub.services.paths import overlaps
from hub.services.paths import parse as parse_path
from hub.store import group_commit
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import RunningHub, actor_of, grant_coordinator, onboard, sign_in_human, unique


def on(path: str):
    return lambda e: e["data"]["path"] == path


async def rpc_error(awaitable: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await awaitable
    return info.value


async def open_dashboard(server: RunningHub, agent: dict[str, Any]) -> HubClient:
    """A human's dashboard session for the agent's project, signed in with
    the operator's credential."""
    signed_in = await sign_in_human(server, agent["project_slug"])
    return await HubClient(server.ws_url, ticket=signed_in["ticket"]).connect()


async def listed(client: HubClient, **filters: Any) -> list[tuple[str, str]]:
    found = await client.call("reservations.list", **filters)
    assert found["count"] == len(found["reservations"])
    return [(r["path"], r["holder_alias"]) for r in found["reservations"]]


async def test_a_grant_is_announced_and_a_conflict_names_the_holder(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)

    got = await a.call(
        "reservations.acquire",
        paths=["./src/api//auth.py"],
        reason="rewriting login",
        bead_id="bd-12",
    )
    assert got["conflicts"] == []
    [grant] = got["granted"]
    assert grant["path"] == "src/api/auth.py"
    assert grant["exclusive"] is True
    lifetime = parse(grant["expires_at"]) - now()
    assert timedelta(seconds=290) < lifetime <= timedelta(seconds=300)

    event = await b.next_event("reservation.granted", where=on("src/api/auth.py"), timeout=2)
    assert event["data"]["holder_alias"] == "alice"
    assert event["data"]["holder_agent_id"] == alice["agent_id"]
    assert (event["data"]["reason"], event["data"]["bead_id"]) == ("rewriting login", "bd-12")
    assert event["data"]["expires_at"] == grant["expires_at"]

    denied = await b.call("reservations.acquire", paths=["src/api/auth.py", "src/api/db.py"])
    assert [g["path"] for g in denied["granted"]] == ["src/api/db.py"]
    [conflict] = denied["conflicts"]
    assert conflict["path"] == "src/api/auth.py"
    assert conflict["held_by"] == "alice"
    assert conflict["holder_agent_id"] == conflict["workspace_id"] == alice["agent_id"]
    assert (conflict["reason"], conflict["bead_id"]) == ("rewriting login", "bd-12")
    assert conflict["exclusive"] is True
    assert conflict["expires_at"] == grant["expires_at"]
    assert 290 <= conflict["retry_after_seconds"] <= 300

    assert await listed(b) == [("src/api/auth.py", "alice"), ("src/api/db.py", "bob")]
    assert await listed(b, holder_alias="alice") == [("src/api/auth.py", "alice")]
    [lock] = (await b.call("reservations.list", path_prefix="src/api/a"))["reservations"]
    assert lock["reservation_id"] == grant["reservation_id"]
    assert lock["resource_key"] == "src/api/auth.py"
    assert lock["project_id"] == alice["project_id"]
    assert 290 <= lock["ttl_remaining_seconds"] <= 300

    status = await b.call("status.get")
    by_alias = {agent["alias"]: agent for agent in status["agents"]}
    assert by_alias["alice"]["current_locks"] == ["src/api/auth.py"]
    assert by_alias["bob"]["current_locks"] == ["src/api/db.py"]
    assert {lock["path"] for lock in status["locks"]} == {"src/api/auth.py", "src/api/db.py"}


async def test_shared_never_conflicts_with_shared_but_exclusive_does(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    c = await connect(await join("carol"))

    assert (await a.call("reservations.acquire", paths=["docs/spec.md"], exclusive=False))[
        "granted"
    ]
    shared = await b.call("reservations.acquire", paths=["docs/spec.md"], exclusive=False)
    assert [g["exclusive"] for g in shared["granted"]] == [False]
    assert shared["conflicts"] == []

    excl = await c.call("reservations.acquire", paths=["docs/spec.md"])
    assert excl["granted"] == []
    assert sorted(x["held_by"] for x in excl["conflicts"]) == ["alice", "bob"]
    assert all(x["exclusive"] is False for x in excl["conflicts"])

    assert (await a.call("reservations.acquire", paths=["docs/api.md"]))["granted"]
    versus = await b.call("reservations.acquire", paths=["docs/api.md"], exclusive=False)
    assert versus["granted"] == []
    assert [x["held_by"] for x in versus["conflicts"]] == ["alice"]


async def test_globs_conflict_with_the_paths_and_globs_they_may_cover(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))

    assert (await a.call("reservations.acquire", paths=["src/api/**"]))["granted"]
    inside = await b.call("reservations.acquire", paths=["src/api/x.py"])
    assert inside["granted"] == []
    assert [(x["path"], x["held_path"], x["held_by"]) for x in inside["conflicts"]] == [
        ("src/api/x.py", "src/api/**", "alice")
    ]
    outside = await b.call("reservations.acquire", paths=["src/web/x.py", "docs/**"])
    assert [g["path"] for g in outside["granted"]] == ["src/web/x.py", "docs/**"]

    wider = await a.call("reservations.acquire", paths=["src/**"])
    assert wider["granted"] == []
    assert [(x["held_path"], x["held_by"]) for x in wider["conflicts"]] == [("src/web/x.py", "bob")]


async def test_exact_paths_conflict_the_same_with_and_without_a_live_glob(join, connect):
    # Exact requests meet exact rows and, while one is live, a glob row.
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    c = await connect(await join("carol"))

    def seen(got: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(x["path"], x["held_path"], x["held_by"]) for x in got["conflicts"]]

    assert (await a.call("reservations.acquire", paths=["src/a.py", "src/b.py"]))["granted"]
    alone = await b.call("reservations.acquire", paths=["src/a.py", "src/c.py"])
    assert [g["path"] for g in alone["granted"]] == ["src/c.py"]
    assert seen(alone) == [("src/a.py", "src/a.py", "alice")]

    assert (await c.call("reservations.acquire", paths=["docs/**"]))["granted"]
    with_glob = await b.call("reservations.acquire", paths=["src/b.py", "docs/x.md", "lib/y.py"])
    assert [g["path"] for g in with_glob["granted"]] == ["lib/y.py"]
    assert seen(with_glob) == [
        ("src/b.py", "src/b.py", "alice"),
        ("docs/x.md", "docs/**", "carol"),
    ]

    # Once the glob is gone, only exact rows again.
    await c.call("reservations.release", paths=["docs/**"])
    after = await b.call("reservations.acquire", paths=["docs/x.md", "src/a.py"])
    assert [g["path"] for g in after["granted"]] == ["docs/x.md"]
    assert seen(after) == [("src/a.py", "src/a.py", "alice")]


CASES = [
    ("src/a.py", "src/a.py"),
    ("src/a.py", "src/b.py"),
    ("src/*.py", "src/a.py"),
    ("src/*.py", "src/api/a.py"),
    ("src/*.py", "src/*.js"),
    ("src/*.py", "**/*.py"),
    ("src/api/**", "src/web/**"),
    ("src/api/**", "src/api/v1/*.py"),
    ("**", "README.md"),
    ("src/[ab].py", "src/b.py"),
    ("src/[ab].py", "src/c.py"),
    ("lib/?.rs", "lib/x.rs"),
    ("lib/?.rs", "lib/xy.rs"),
]


async def test_the_database_decides_overlap_by_the_documented_rules(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    for held, wanted in CASES + [(w, h) for h, w in CASES]:
        assert (await a.call("reservations.acquire", paths=[held]))["granted"]
        got = await b.call("reservations.acquire", paths=[wanted])
        expected = overlaps(parse_path(held), parse_path(wanted))
        assert bool(got["conflicts"]) is expected, (held, wanted)
        assert bool(got["granted"]) is not expected, (held, wanted)
        await a.call("reservations.release", paths=[held])
        await b.call("reservations.release", paths=[wanted])


async def test_the_same_holder_reserving_again_renews(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    first = (await a.call("reservations.acquire", paths=["src/x.py"], ttl_seconds=60))["granted"][0]
    again = await a.call(
        "reservations.acquire", paths=["src/x.py"], ttl_seconds=600, reason="still on it"
    )
    [renewed] = again["granted"]
    assert renewed["reservation_id"] == first["reservation_id"]
    assert renewed["renewed"] is True
    assert renewed["acquired_at"] == first["acquired_at"]
    assert parse(renewed["expires_at"]) - parse(first["expires_at"]) > timedelta(seconds=500)
    event = await b.next_event("reservation.renewed", where=on("src/x.py"), timeout=2)
    assert event["data"]["expires_at"] == renewed["expires_at"]
    assert event["data"]["reason"] == "still on it"
    assert await listed(b) == [("src/x.py", "alice")]


async def test_renew_extends_only_the_callers_live_reservations(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    grant = (await a.call("reservations.acquire", paths=["src/x.py"], ttl_seconds=60))["granted"][0]
    renewed = await a.call("reservations.renew", paths=["src/x.py", "src/y.py"], ttl_seconds=900)
    assert [r["path"] for r in renewed["renewed"]] == ["src/x.py"]
    assert renewed["renewed"][0]["reservation_id"] == grant["reservation_id"]
    assert parse(renewed["renewed"][0]["expires_at"]) - now() > timedelta(seconds=890)
    assert renewed["not_found"] == ["src/y.py"]
    await b.next_event("reservation.renewed", where=on("src/x.py"), timeout=2)

    theirs = await b.call("reservations.renew", paths=["src/x.py"])
    assert (theirs["renewed"], theirs["not_found"]) == ([], ["src/x.py"])
    [lock] = (await b.call("reservations.list"))["reservations"]
    assert lock["ttl_remaining_seconds"] > 890


async def test_release_frees_the_path_and_says_what_was_not_released(join, connect):
    a = await connect(await join("alice"))
    b = await connect(await join("bob"))
    await a.call("reservations.acquire", paths=["src/x.py", "src/y.py"])
    await b.call("reservations.acquire", paths=["src/z.py"])

    answer = await a.call("reservations.release", paths=["src/x.py", "src/z.py", "src/w.py"])
    assert answer == {
        "released": ["src/x.py"],
        "not_found": ["src/w.py"],
        "not_owner": ["src/z.py"],
    }
    event = await b.next_event("reservation.released", where=on("src/x.py"), timeout=2)
    assert event["data"]["holder_alias"] == "alice"
    assert (await b.call("reservations.acquire", paths=["src/x.py"]))["granted"]
    assert await listed(a) == [("src/x.py", "bob"), ("src/y.py", "alice"), ("src/z.py", "bob")]


async def test_only_coordinators_and_humans_revoke(join, connect, hub_server):
    alice = await join("alice", role="developer")
    a = await connect(alice)
    b = await connect(await join("bob", role="developer"))
    c = await connect(await grant_coordinator(hub_server, await join("carol", role="coordinator")))
    await a.call("reservations.acquire", paths=["src/x.py", "src/y.py", "docs/z.md"])

    for who in (a, b):
        error = await rpc_error(who.call("reservations.revoke", paths=["src/x.py"]))
        assert error.code == ErrorCode.FORBIDDEN
    assert len(await listed(b)) == 3

    done = await c.call("reservations.revoke", paths=["src/x.py"])
    assert (done["revoked_count"], done["revoked_keys"]) == (1, ["src/x.py"])
    event = await a.next_event("reservation.revoked", where=on("src/x.py"), timeout=2)
    assert event["data"]["revoked_by"] == "carol"
    assert event["data"]["holder_alias"] == "alice"

    human = await open_dashboard(hub_server, alice)
    try:
        by_prefix = await human.call("reservations.revoke", prefix="src/")
        assert by_prefix["revoked_keys"] == ["src/y.py"]
        everything = await human.call("reservations.revoke", prefix="")
        assert everything["revoked_keys"] == ["docs/z.md"]
    finally:
        await human.close()
    assert await listed(b) == []


# A retry-safe acquire runs inside its key's transaction: its expiry timer
# must not inherit that finished transaction (hub.services.background).
@pytest.mark.parametrize("key", [None, "acquire-once"])
async def test_an_expired_reservation_is_gone_and_announced(any_server: RunningHub, key):
    slug = unique("proj")
    alice = await onboard(any_server.http_url, slug, "alice")
    bob = await onboard(any_server.http_url, slug, "bob")
    async with (
        HubClient(any_server.ws_url, alice["api_key"]) as a,
        HubClient(any_server.ws_url, bob["api_key"]) as b,
    ):
        grant = await a.call(
            "reservations.acquire", paths=["src/x.py"], ttl_seconds=1, idempotency_key=key
        )
        early = await b.call("reservations.acquire", paths=["src/x.py"])
        assert [x["retry_after_seconds"] for x in early["conflicts"]] == [1]

        event = await b.next_event("reservation.expired", where=on("src/x.py"), timeout=5)
        assert event["data"]["reservation_id"] == grant["granted"][0]["reservation_id"]
        assert event["data"]["holder_alias"] == "alice"
        assert await listed(b) == []
        later = await b.call("reservations.acquire", paths=["src/x.py"])
        assert [g["path"] for g in later["granted"]] == ["src/x.py"]


async def test_an_expired_row_stops_counting_before_any_cleanup(join, connect, hub_server):
    """Holding the sweep lock (so no sweep runs) and with the granting
    timer minutes away, an expired row still in the table is not listed and
    does not conflict; the sweep then deletes it and announces it."""
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    grant = (await a.call("reservations.acquire", paths=["src/x.py"]))["granted"][0]
    conn = await asyncpg.connect(hub_server.settings.database_url)
    try:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", reservations.SWEEP_LOCK
        )
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1",
            grant["reservation_id"],
        )
        assert await listed(b) == []
        status = await b.call("status.get")
        assert status["locks"] == []
        taken = await b.call("reservations.acquire", paths=["src/x.py"])
        assert [g["path"] for g in taken["granted"]] == ["src/x.py"]
        left = await conn.fetchval(
            "SELECT count(*) FROM reservations WHERE id = $1", grant["reservation_id"]
        )
        assert left == 1
    finally:
        await conn.close()

    assert await reservations.sweep(hub_server.hub) >= 1
    event = await b.next_event("reservation.expired", where=on("src/x.py"), timeout=2)
    assert event["data"]["reservation_id"] == grant["reservation_id"]
    assert await listed(b) == [("src/x.py", "bob")]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "", "src/../../x", "  "])
async def test_bad_paths_are_rejected_and_nothing_is_written(join, connect, bad: str):
    a = await connect(await join("alice"))
    for method in ("reservations.acquire", "reservations.renew", "reservations.release"):
        error = await rpc_error(a.call(method, paths=["src/ok.py", bad]))
        assert error.code == ErrorCode.INVALID_PARAMS, method
        assert error.data["path"] == bad
    assert await listed(a) == []


async def test_bad_ttls_are_rejected(join, connect, hub_server):
    a = await connect(await join("alice"))
    limit = hub_server.settings.reservation_max_ttl
    for ttl in (0, limit + 1):
        error = await rpc_error(a.call("reservations.acquire", paths=["x.py"], ttl_seconds=ttl))
        assert error.code == ErrorCode.INVALID_PARAMS
    assert await listed(a) == []


async def test_fifty_agents_racing_get_exactly_one_grant(
    hub_server: RunningHub, redis_hub_server: RunningHub
):
    """Half the agents are on one hub instance and half on another (same
    database): the decision is PostgreSQL's."""
    slug = unique("proj")
    agents = await asyncio.gather(
        *(onboard(hub_server.http_url, slug, f"agent{i:02d}") for i in range(50))
    )
    servers = [hub_server, redis_hub_server]
    clients = [HubClient(servers[i % 2].ws_url, agent["api_key"]) for i, agent in enumerate(agents)]
    await asyncio.gather(*(client.connect() for client in clients))
    try:
        results = await asyncio.gather(
            *(c.call("reservations.acquire", paths=["src/hot.py"]) for c in clients)
        )
        winners = [i for i, r in enumerate(results) if r["granted"]]
        assert len(winners) == 1
        winner = agents[winners[0]]["alias"]
        losers = [r for r in results if not r["granted"]]
        assert all([x["held_by"] for x in r["conflicts"]] == [winner] for r in losers)
        assert await listed(clients[0]) == [("src/hot.py", winner)]

        # Overlapping spellings of the same files race just the same.
        patterns = ["lib/**", "lib/core.py", "lib/*.py", "**/core.py", "lib/core.py"]
        results = await asyncio.gather(
            *(
                c.call("reservations.acquire", paths=[patterns[i % len(patterns)]])
                for i, c in enumerate(clients)
            )
        )
        assert sum(len(r["granted"]) for r in results) == 1
        assert (
            len(await listed(clients[1], path_prefix="lib"))
            + len(await listed(clients[1], path_prefix="**"))
            == 1
        )
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_projects_do_not_see_or_touch_each_others_reservations(hub_server, connect):
    alice = await onboard(hub_server.http_url, unique("proj"), "alice")
    bob = await onboard(hub_server.http_url, unique("proj"), "bob", role="coordinator")
    await grant_coordinator(hub_server, bob)
    a, b = await connect(alice), await connect(bob)
    await a.call("reservations.acquire", paths=["src/x.py"])
    theirs = await b.call("reservations.acquire", paths=["src/x.py"])
    assert [g["path"] for g in theirs["granted"]] == ["src/x.py"]
    assert await listed(b) == [("src/x.py", "bob")]
    assert (await b.call("reservations.revoke", prefix=""))["revoked_count"] == 1
    assert await listed(a) == [("src/x.py", "alice")]
    seen = (await a.call("events.since", cursor=0))["events"]
    assert [e["type"] for e in seen if e["type"].startswith("reservation.")] == [
        "reservation.granted"
    ]


# -- events as stored, and group commit ------------------------------------------------


async def stored_row(server: RunningHub, reservation_id: str) -> asyncpg.Record:
    row = await server.hub.store.fetchrow(
        "SELECT * FROM reservations WHERE id = $1", reservation_id
    )
    assert row is not None
    return row


async def stored_events(server: RunningHub, project_id: str, after: int) -> list[Any]:
    return await server.hub.store.fetch(  # type: ignore[no-any-return]
        "SELECT type, payload FROM events WHERE project_id = $1 AND seq > $2"
        " AND type LIKE 'reservation.%' ORDER BY seq",
        project_id,
        after,
    )


async def test_wire_time_renders_timestamps_as_the_wire_does(hub_server):
    conn = await asyncpg.connect(hub_server.settings.database_url)
    try:
        # The session's time zone must not matter.
        await conn.execute("SET TimeZone = 'America/New_York'")
        for moment in (
            datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC),
            datetime(2026, 3, 8, 7, 0, 0, 1, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
        ):
            assert await conn.fetchval("SELECT wire_time($1)", moment) == iso(moment)
    finally:
        await conn.close()


async def test_events_carry_the_reservation_as_it_was(join, hub_server):
    """Acquire and release build their events in SQL: the payloads are
    _event_data of the row (as granted, renewed, replaced, released)."""
    alice = await join("alice")
    a = actor_of(alice)
    hub, pid = hub_server.hub, alice["project_id"]
    start = await hub.store.fetchval("SELECT coalesce(max(seq), 0) FROM events")

    first = await reservations.acquire(
        hub, a, ["src/x.py"], ttl_seconds=60, reason="why", bead_id="bd-1"
    )
    granted = await stored_row(hub_server, first["granted"][0]["reservation_id"])
    await reservations.acquire(hub, a, ["src/x.py"], ttl_seconds=90)
    renewed = await stored_row(hub_server, granted["id"])
    assert renewed["reason"] == "why"

    # Expired in place, at a whole second (no fraction on the wire), with
    # no sweep running: the next acquire replaces the row and announces it.
    conn = await asyncpg.connect(hub_server.settings.database_url)
    try:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", reservations.SWEEP_LOCK
        )
        await conn.execute(
            "UPDATE reservations SET expires_at = date_trunc('second', now()) - interval '1s'"
            " WHERE id = $1",
            granted["id"],
        )
        expired = await stored_row(hub_server, granted["id"])
        again = await reservations.acquire(hub, a, ["src/x.py", "src/y.py"])
        assert [g["renewed"] for g in again["granted"]] == [False, False]
        new_x = await stored_row(hub_server, again["granted"][0]["reservation_id"])
        y = await stored_row(hub_server, again["granted"][1]["reservation_id"])
        assert new_x["id"] != expired["id"]
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1s' WHERE id = $1", y["id"]
        )
        old_y = await stored_row(hub_server, y["id"])
        answer = await reservations.release(hub, a, ["src/y.py", "src/x.py"])
    finally:
        await conn.close()
    assert answer == {"released": ["src/x.py"], "not_found": ["src/y.py"], "not_owner": []}

    seen = [(e["type"], e["payload"]) for e in await stored_events(hub_server, pid, start)]
    data = reservations._event_data
    assert seen == [
        ("reservation.granted", data(granted)),
        ("reservation.renewed", data(renewed)),
        ("reservation.expired", data(expired)),
        ("reservation.granted", data(new_x)),
        ("reservation.granted", data(y)),
        ("reservation.expired", data(old_y)),
        ("reservation.released", data(new_x)),
    ]
    assert "." not in data(expired)["expires_at"]


async def hold_locks(server: RunningHub, project_id: str, path: str) -> asyncpg.Connection:
    """Another session in the middle of a request on ``path``: it holds the
    path's reservation locks until the connection is closed."""
    conn = await asyncpg.connect(server.settings.database_url)
    keys = parse_path(path).lock_keys()
    await conn.execute("BEGIN")
    await conn.execute(
        "SELECT reservation_locks($1::uuid[], $2::text[], $3::boolean[])",
        [project_id] * len(keys),
        [key for key, _ in keys],
        [exclusive for _, exclusive in keys],
    )
    return conn


async def queue_behind_a_gate(
    server: RunningHub, gatekeeper: Actor
) -> tuple[asyncpg.Connection, list[asyncio.Task[Any]]]:
    """Occupy every writer of the acquire group (each waits at a held path),
    so the calls made next queue up and are written as one batch once the
    gate (the returned connection) closes."""
    gate = await hold_locks(server, gatekeeper.project_id, "src/gate.py")
    waiting = [
        asyncio.create_task(reservations.acquire(server.hub, gatekeeper, ["src/gate.py"]))
        for _ in range(group_commit.MAX_INFLIGHT)
    ]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in waiting)
    return gate, waiting


async def test_concurrent_acquires_are_committed_together(join, hub_server):
    gatekeeper, *agents = [actor_of(await join(f"agent{i}")) for i in range(6)]
    gate, waiting = await queue_behind_a_gate(hub_server, gatekeeper)
    calls = [reservations.acquire(hub_server.hub, a, [f"src/{a.alias}.py"]) for a in agents]
    queued = [asyncio.create_task(call) for call in calls]
    await asyncio.sleep(0.1)
    await gate.close()
    results = await asyncio.gather(*queued)
    await asyncio.gather(*waiting)

    assert [[g["path"] for g in r["granted"]] for r in results] == [
        [f"src/{a.alias}.py"] for a in agents
    ]
    transactions = await hub_server.hub.store.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM reservations WHERE path = ANY($1::text[])",
        [f"src/{a.alias}.py" for a in agents],
    )
    assert transactions == 1


async def test_a_failing_call_in_a_batch_fails_alone(join, hub_server, connect):
    gatekeeper, alice, bob = [actor_of(await join(name)) for name in ("gk", "alice", "bob")]
    watcher = await connect(await join("watcher"))
    # An actor the database refuses (no alias: holder_alias is NOT NULL).
    ghost = dataclasses.replace(alice, agent_id=str(uuid.uuid4()), alias=None)
    gate, waiting = await queue_behind_a_gate(hub_server, gatekeeper)
    queued = [
        asyncio.create_task(reservations.acquire(hub_server.hub, who, [f"src/{who.alias}.py"]))
        for who in (alice, ghost, bob)
    ]
    await asyncio.sleep(0.1)
    await gate.close()
    done = await asyncio.gather(*queued, return_exceptions=True)
    await asyncio.gather(*waiting)

    assert [g["path"] for g in done[0]["granted"]] == ["src/alice.py"]
    assert isinstance(done[1], asyncpg.NotNullViolationError)
    assert [g["path"] for g in done[2]["granted"]] == ["src/bob.py"]
    assert await listed(watcher) == [
        ("src/alice.py", "alice"),
        ("src/bob.py", "bob"),
        ("src/gate.py", "gk"),
    ]
    # Each grant is announced once; the failed call stored and sent nothing.
    since = (await watcher.call("events.since", cursor=0))["events"]
    paths = [e["data"]["path"] for e in since if e["type"] == "reservation.granted"]
    assert sorted(paths) == ["src/alice.py", "src/bob.py", "src/gate.py"]


async def test_queued_acquires_of_one_path_are_decided_one_after_the_other(join, hub_server):
    """Calls that queue up together are written as one batch, except those
    that collide: the same path from two agents, or twice from one."""
    gatekeeper, alice, bob, carol = [actor_of(await join(n)) for n in ("gk", "a", "b", "c")]
    gate, waiting = await queue_behind_a_gate(hub_server, gatekeeper)
    hub = hub_server.hub
    queued = [
        asyncio.create_task(reservations.acquire(hub, who, [path]))
        for who, path in [
            (alice, "src/one.py"),
            (bob, "src/one.py"),
            (carol, "src/two.py"),
            (carol, "src/two.py"),
            (carol, "src/*.md"),
        ]
    ]
    await asyncio.sleep(0.1)
    await gate.close()
    a, b, c1, c2, c3 = await asyncio.gather(*queued)
    await asyncio.gather(*waiting)

    # One of alice and bob got src/one.py; the other was told who has it.
    winner, loser = (a, b) if a["granted"] else (b, a)
    assert [g["path"] for g in winner["granted"]] == ["src/one.py"]
    assert loser["granted"] == []
    assert [c["held_by"] for c in loser["conflicts"]] == ["a" if winner is a else "b"]
    # carol's two requests of src/two.py: a grant, then its renewal.
    assert sorted(r["granted"][0]["renewed"] for r in (c1, c2)) == [False, True]
    assert {r["granted"][0]["reservation_id"] for r in (c1, c2)} == {
        c1["granted"][0]["reservation_id"]
    }
    assert [g["path"] for g in c3["granted"]] == ["src/*.md"]


async def test_queued_releases_of_one_reservation_release_it_once(join, hub_server):
    gatekeeper, alice = [actor_of(await join(n)) for n in ("gk", "alice")]
    await reservations.acquire(hub_server.hub, alice, ["src/x.py"])
    gate, waiting = await queue_behind_a_gate(hub_server, gatekeeper)
    queued = [
        asyncio.create_task(reservations.release(hub_server.hub, alice, ["src/x.py"]))
        for _ in range(2)
    ]
    await asyncio.sleep(0.1)
    await gate.close()
    answers = await asyncio.gather(*queued)
    await asyncio.gather(*waiting)
    assert sorted(answers, key=lambda r: r["released"]) == [
        {"released": [], "not_found": ["src/x.py"], "not_owner": []},
        {"released": ["src/x.py"], "not_found": [], "not_owner": []},
    ]


async def test_overlapping_requests_at_once_never_grant_overlapping_reservations(join, hub_server):
    """Many agents requesting overlapping paths and globs at once, through
    batches: every call is answered (no deadlock), and no two agents end up
    holding overlapping exclusive reservations."""
    agents = [actor_of(await join(f"agent{i}")) for i in range(24)]
    pool = ["src/a.py", "src/b.py", "src/lib/c.py", "src/lib/d.py", "src/*.py",
            "src/lib/**", "docs/x.md", "**/*.md"]  # fmt: skip
    rng = random.Random(7)

    async def requests(who: Actor) -> None:
        for _ in range(4):
            await reservations.acquire(hub_server.hub, who, rng.sample(pool, rng.randint(1, 3)))

    await asyncio.wait_for(asyncio.gather(*(requests(who) for who in agents)), timeout=60)
    held = await reservations.list_active(hub_server.hub, agents[0].project_id)
    assert held
    for i, one in enumerate(held):
        for other in held[i + 1 :]:
            if one["holder_alias"] != other["holder_alias"]:
                assert not overlaps(parse_path(one["path"]), parse_path(other["path"])), (
                    one,
                    other,
                )


async def test_a_renewal_keeps_what_it_does_not_restate(join, connect):
    alice = await connect(await join("alice"))

    async def held() -> tuple[Any, ...]:
        (one,) = (await alice.call("reservations.list"))["reservations"]
        return one["reason"], one["bead_id"], one["metadata"]

    first = {"reason": "refactor", "bead_id": "bd-7", "metadata": {"step": 1}}
    await alice.call("reservations.acquire", paths=["src/x.py"], **first)
    renewed = await alice.call("reservations.acquire", paths=["src/x.py"])
    assert renewed["granted"][0]["renewed"] is True
    assert await held() == ("refactor", "bd-7", {"step": 1})
    await alice.call("reservations.acquire", paths=["src/x.py"], metadata={"step": 2})
    assert await held() == ("refactor", "bd-7", {"step": 2})
