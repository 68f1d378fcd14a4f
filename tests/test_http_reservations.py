"""Reservations through the shim: bdh's paths shape (200 with granted and
conflicts) and the aw library's resource_key shape (409 on conflict) on the
same routes, and reservations crossing between HTTP and WebSocket agents."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hub.transport.http import outputs as o
from tests.shim import Shim, error, ok
from tests.support import grant_coordinator, unique

NewAgent = Callable[..., Awaitable[Shim]]


def lock(shim: Shim, *paths: str, **extra: Any) -> dict[str, Any]:
    """bdh's LockRequest (auto-reserve of modified files)."""
    return {
        "workspace_id": shim.id,
        "alias": shim.alias,
        "paths": list(paths),
        "ttl_seconds": 300,
        "exclusive": True,
        **extra,
    }


async def listed(shim: Shim, **params: Any) -> list[dict[str, Any]]:
    answer = ok(await shim.get("/v1/reservations", **params), o.ListLocksResponse)
    assert answer["count"] == len(answer["reservations"])
    return answer["reservations"]  # type: ignore[no-any-return]


async def test_bdh_shape_grants_and_reports_conflicts(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    mine = ok(
        await alice.post(
            "/v1/reservations",
            lock(alice, "src/api/auth.py", "src/api/db.py", reason="editing", bead_id="bd-12"),
        ),
        o.LockResponse,
    )
    assert [g["path"] for g in mine["granted"]] == ["src/api/auth.py", "src/api/db.py"]
    assert mine["conflicts"] == [] and all(g["reservation_id"] for g in mine["granted"])

    theirs = ok(
        await bob.post("/v1/reservations", lock(bob, "src/api/auth.py", "src/web/app.js")),
        o.LockResponse,
    )
    assert [g["path"] for g in theirs["granted"]] == ["src/web/app.js"]
    [clash] = theirs["conflicts"]
    assert (clash["path"], clash["held_by"], clash["workspace_id"]) == (
        "src/api/auth.py",
        "alice",
        alice.id,
    )
    assert (clash["bead_id"], clash["reason"], clash["exclusive"]) == ("bd-12", "editing", True)
    assert 0 < clash["retry_after_seconds"] <= 300 and clash["expires_at"]

    everything = await listed(bob)
    assert [(r["path"], r["alias"]) for r in everything] == [
        ("src/api/auth.py", "alice"),
        ("src/api/db.py", "alice"),
        ("src/web/app.js", "bob"),
    ]
    first = everything[0]
    # bdh's LockInfo and the aw library's ReservationView in one entry.
    assert (first["resource_key"], first["holder_alias"], first["holder_agent_id"]) == (
        "src/api/auth.py",
        "alice",
        alice.id,
    )
    assert first["project_id"] == alice.agent["project_id"] and first["ttl_remaining_seconds"] > 0
    assert [r["path"] for r in await listed(bob, alias="bob")] == ["src/web/app.js"]
    # workspace_id names the caller (bdh sends its own with every listing), not a holder.
    assert len(await listed(bob, workspace_id=bob.id)) == 3
    assert [r["path"] for r in await listed(bob, path_prefix="src/web")] == ["src/web/app.js"]

    status = ok(await bob.get("/v1/status"), o.StatusResponse)
    locks = {a["alias"]: a["current_locks"] for a in status["agents"]}
    assert locks == {"alice": ["src/api/auth.py", "src/api/db.py"], "bob": ["src/web/app.js"]}
    assert len(status["locks"]) == 3

    renewed = ok(
        await alice.post(
            "/v1/reservations/renew",
            {
                "workspace_id": alice.id,
                "alias": "alice",
                "paths": ["src/api/db.py", "x.py"],
                "ttl_seconds": 600,
            },
        ),
        o.RenewLocksResponse,
    )
    assert [r["path"] for r in renewed["renewed"]] == ["src/api/db.py"]
    assert renewed["not_found"] == ["x.py"]

    unlock = {
        "workspace_id": alice.id,
        "alias": "alice",
        "paths": ["src/api/auth.py", "src/web/app.js", "nope.py"],
    }
    released = ok(await alice.post("/v1/reservations/release", unlock), o.UnlockResponse)
    assert released == {
        "released": ["src/api/auth.py"],
        "not_found": ["nope.py"],
        "not_owner": ["src/web/app.js"],
    }
    taken = ok(await bob.post("/v1/reservations", lock(bob, "src/api/auth.py")), o.LockResponse)
    assert [g["path"] for g in taken["granted"]] == ["src/api/auth.py"]


async def test_aw_shape_answers_409_with_the_holder(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    body = {"resource_key": "docs/readme.md", "ttl_seconds": 120, "metadata": {"why": "typo"}}
    got = ok(await alice.post("/v1/reservations", body), o.ReservationAcquireResponse)
    assert (got["status"], got["resource_key"], got["holder_alias"]) == (
        "acquired",
        "docs/readme.md",
        "alice",
    )
    assert got["holder_agent_id"] == alice.id and got["expires_at"] and got["acquired_at"]
    again = ok(await alice.post("/v1/reservations", body), o.ReservationAcquireResponse)
    assert again["status"] == "renewed"

    held = await bob.post("/v1/reservations", {"resource_key": "docs/readme.md"})
    ok(held, o.ReservationHeldError, status=409)
    assert (held.json()["holder_alias"], held.json()["holder_agent_id"]) == ("alice", alice.id)
    assert "alice" in held.json()["detail"]

    [entry] = await listed(bob)
    assert entry["metadata"] == {"why": "typo"}

    error(await bob.post("/v1/reservations/renew", {"resource_key": "docs/readme.md"}), 404)
    renewed = ok(
        await alice.post(
            "/v1/reservations/renew", {"resource_key": "docs/readme.md", "ttl_seconds": 60}
        ),
        o.ReservationRenewResponse,
    )
    assert renewed["status"] == "renewed" and renewed["resource_key"] == "docs/readme.md"

    error(await bob.post("/v1/reservations/release", {"resource_key": "docs/readme.md"}), 409)
    gone = ok(
        await alice.post("/v1/reservations/release", {"resource_key": "docs/readme.md"}),
        o.ReservationReleaseResponse,
    )
    assert gone == {"status": "released", "resource_key": "docs/readme.md"}
    error(await alice.post("/v1/reservations/release", {"resource_key": "docs/readme.md"}), 404)
    assert await listed(bob) == []


async def test_reservations_cross_between_http_and_websocket(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    ws_bob = await connect(bob.agent)
    await alice.post("/v1/reservations", lock(alice, "src/core.py"))
    event = await ws_bob.next_event("reservation.granted", timeout=2)
    assert (event["data"]["path"], event["data"]["holder_alias"]) == ("src/core.py", "alice")
    seen = await ws_bob.call("reservations.list")
    assert [(r["path"], r["holder_alias"]) for r in seen["reservations"]] == [
        ("src/core.py", "alice")
    ]

    await ws_bob.call("reservations.acquire", paths=["src/ui/**"])
    clash = ok(
        await alice.post("/v1/reservations", lock(alice, "src/ui/button.tsx")), o.LockResponse
    )
    assert [c["held_by"] for c in clash["conflicts"]] == ["bob"]
    held = await alice.post("/v1/reservations", {"resource_key": "src/ui/menu.tsx"})
    assert held.status_code == 409 and held.json()["holder_alias"] == "bob"


async def test_revoke_is_for_the_coordinator(agent: NewAgent, hub_server):
    alice, bob = await agent("alice"), await agent("bob")
    boss = await agent("carol", role="coordinator")
    # A declared role grants nothing: refused until a human grants it.
    error(await boss.post("/v1/reservations/revoke", {"prefix": ""}), 403)
    await grant_coordinator(hub_server, boss.agent)
    await alice.post("/v1/reservations", lock(alice, "src/a.py", "src/b.py"))
    await bob.post("/v1/reservations", lock(bob, "lib/c.py"))
    error(await alice.post("/v1/reservations/revoke", {"prefix": "src/"}), 403)
    bdh_shape = {
        "workspace_id": boss.id,
        "alias": "carol",
        "paths": ["src/a.py"],
        "reason": "stale",
    }
    one = ok(await boss.post("/v1/reservations/revoke", bdh_shape), o.ReservationRevokeResponse)
    assert one["revoked_keys"] == ["src/a.py"] and one["revoked_count"] == 1
    rest = ok(
        await boss.post("/v1/reservations/revoke", {"prefix": "src/"}), o.ReservationRevokeResponse
    )
    assert rest["revoked_keys"] == ["src/b.py"]
    assert [r["path"] for r in await listed(alice)] == ["lib/c.py"]


async def test_revoke_needs_an_explicit_target(agent: NewAgent, hub_server):
    alice = await agent("alice")
    boss = await agent("carol", role="coordinator")
    await grant_coordinator(hub_server, boss.agent)
    await alice.post("/v1/reservations", lock(alice, "src/a.py", "lib/b.py"))
    for body in ({}, None, {"prefx": "src/"}, {"path": ["src/a.py"]}, {"prefix": None}):
        detail = error(await boss.post("/v1/reservations/revoke", body), 422)
        assert "prefix" in detail, detail
    assert sorted(r["path"] for r in await listed(alice)) == ["lib/b.py", "src/a.py"]
    # Everything, when that is what is asked for.
    every = ok(
        await boss.post("/v1/reservations/revoke", {"prefix": ""}), o.ReservationRevokeResponse
    )
    assert every["revoked_count"] == 2 and await listed(alice) == []


async def test_bad_reservation_bodies_change_nothing(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    await alice.post("/v1/reservations", lock(alice, "src/a.py"))
    detail = error(await alice.post("/v1/reservations", {"ttl_seconds": 60}), 422)
    assert "paths" in detail and "resource_key" in detail
    error(await alice.post("/v1/reservations", lock(alice)), 422)
    error(await alice.post("/v1/reservations", {**lock(alice), "paths": "src/x.py"}), 422)
    error(await alice.post("/v1/reservations", lock(alice, "src/x.py", ttl_seconds="long")), 422)
    error(await alice.post("/v1/reservations", lock(alice, "src/x.py", exclusive="yes")), 422)
    error(await alice.post("/v1/reservations", lock(alice, "/etc/passwd")), 422)
    error(await alice.post("/v1/reservations", lock(alice, "../outside.py")), 422)
    error(await alice.post("/v1/reservations", {"resource_key": 12}), 422)
    error(await alice.post("/v1/reservations", {"resource_key": "x", "metadata": "nope"}), 422)
    error(await bob.post("/v1/reservations", lock(alice, "src/y.py")), 403)
    error(await mallory.post("/v1/reservations", lock(alice, "src/y.py")), 404)
    error(
        await bob.post(
            "/v1/reservations/release", {"workspace_id": alice.id, "paths": ["src/a.py"]}
        ),
        403,
    )
    assert [r["path"] for r in await listed(bob)] == ["src/a.py"]
    # Another project sees none of it, and its agents' reservations never clash.
    assert await listed(mallory) == []
    free = ok(await mallory.post("/v1/reservations", lock(mallory, "src/a.py")), o.LockResponse)
    assert free["conflicts"] == [] and len(free["granted"]) == 1


async def test_deleting_a_workspace_frees_its_claims_and_files(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    watcher = await connect(bob.agent)
    working = '{"id": "bd-7", "title": "Cart", "status": "in_progress"}'
    synced = {
        "workspace_id": alice.id,
        "alias": "alice",
        "human_name": "Juan",
        "repo_origin": "git@github.com:acme/widgets.git",
        "issues_jsonl": working,
    }
    ok(await alice.post("/v1/bdh/sync", synced), o.SyncResponse)
    await alice.post("/v1/reservations", lock(alice, "src/cart.py"))

    gone = ok(await bob.delete(f"/v1/workspaces/{alice.id}"), o.DeleteWorkspaceResponse)
    assert gone["claims_released"] == ["bd-7"] and gone["reservations_released"] == ["src/cart.py"]
    released = await watcher.next_event("claim.released", timeout=2)
    assert (released["data"]["bead_id"], released["data"]["reason"]) == (
        "bd-7",
        "workspace_deleted",
    )
    await watcher.next_event("reservation.released", timeout=2)
    assert await listed(bob) == []
    command = {
        "workspace_id": bob.id,
        "alias": "bob",
        "human_name": "Juan",
        "repo_origin": "git@github.com:acme/widgets.git",
        "command_line": "bd update bd-7 --status in_progress",
    }
    assert ok(await bob.post("/v1/bdh/command", command), o.CommandResponse)["approved"] is True
