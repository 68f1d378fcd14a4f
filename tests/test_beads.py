"""Beads issues synced from bd's JSONL: full and incremental sync, ready
work, unknown fields kept, bad input rejected whole, and claims that follow
the status changes a sync carries."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from protocol.errors import ErrorCode, RpcError


def issue(bead_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": bead_id,
        "title": f"Title of {bead_id}",
        "status": "open",
        "priority": 2,
        "issue_type": "task",
        "created_at": "2025-11-30T00:00:00Z",
        "updated_at": "2025-11-30T00:00:00Z",
    }
    return {**base, **fields}


def dep(bead_id: str, on: str, kind: str) -> dict[str, Any]:
    return {
        "issue_id": bead_id,
        "depends_on_id": on,
        "type": kind,
        "created_at": "2025-11-30T00:01:00Z",
        "created_by": "test",
    }


def jsonl(*issues: dict[str, Any]) -> str:
    return "\n".join(orjson.dumps(i).decode() for i in issues) + "\n"


async def ready_ids(client: Any) -> list[str]:
    return [i["bead_id"] for i in (await client.call("beads.ready"))["issues"]]


async def test_full_sync_then_ready_follows_blocks_but_not_parent_child(join, connect):
    alice = await connect(await join("alice"))
    text = jsonl(
        issue("bd-epic", issue_type="epic", priority=1, created_at="2025-11-30T00:00:00Z"),
        issue(
            "bd-root",
            priority=1,
            created_at="2025-11-30T00:01:00Z",
            dependencies=[dep("bd-root", "bd-epic", "parent-child")],
        ),
        issue(
            "bd-child",
            priority=0,
            dependencies=[dep("bd-child", "bd-root", "blocks")],
        ),
        issue(
            "bd-leaf",
            priority=2,
            dependencies=[dep("bd-leaf", "bd-root", "parent-child")],
        ),
        issue("bd-done", status="closed", closed_at="2025-12-01T10:00:00.123456789+01:00"),
    )
    stats = await alice.call("beads.sync", mode="full", issues_jsonl=text)
    assert {k: stats[k] for k in ("received", "inserted", "updated", "deleted")} == {
        "received": 5,
        "inserted": 5,
        "updated": 0,
        "deleted": 0,
    }
    assert stats["issues_count"] == 5
    assert stats["conflicts"] == []

    # bd-child waits on the open bd-root; the parent-child links do not block.
    assert await ready_ids(alice) == ["bd-epic", "bd-root", "bd-leaf"]

    stats = await alice.call(
        "beads.sync",
        mode="incremental",
        changed_issues=jsonl(
            issue(
                "bd-root",
                status="closed",
                priority=1,
                dependencies=[dep("bd-root", "bd-epic", "parent-child")],
            )
        ),
    )
    assert (stats["received"], stats["inserted"], stats["updated"]) == (1, 0, 1)
    assert await ready_ids(alice) == ["bd-child", "bd-epic", "bd-leaf"]

    leaf = (await alice.call("beads.get", bead_id="bd-leaf"))["issue"]
    assert (leaf["parent_id"], leaf["apex_id"], leaf["apex_type"]) == ("bd-root", "bd-epic", "epic")
    child = (await alice.call("beads.get", bead_id="bd-child"))["issue"]
    assert child["blockers"] == [
        {"bead_id": "bd-root", "title": "Title of bd-root", "status": "closed"}
    ]
    done = (await alice.call("beads.get", bead_id="bd-done"))["issue"]
    assert done["closed_at"] == "2025-12-01T09:00:00.123456Z"


async def test_resending_unchanged_issues_counts_them_unchanged(join, connect):
    alice = await connect(await join("alice"))
    text = jsonl(issue("bd-1"), issue("bd-2"))
    await alice.call("beads.sync", mode="full", issues_jsonl=text)
    stats = await alice.call("beads.sync", mode="full", issues_jsonl=text)
    assert (stats["inserted"], stats["updated"], stats["unchanged"]) == (0, 0, 2)


async def test_unknown_fields_are_kept_and_returned(join, connect):
    alice = await connect(await join("alice"))
    original = issue(
        "bd-a1b2",
        description="## Steps\n\n1. do it",
        notes="remember the cache",
        labels=["backend", "api"],
        status="deferred",
        custom_field={"nested": [1, 2, {"deep": True}]},
        compaction_level=2,
        external_ref="gh-42",
    )
    await alice.call("beads.sync", mode="full", issues_jsonl=jsonl(original))
    got = (await alice.call("beads.get", bead_id="bd-a1b2"))["issue"]
    assert got["raw"] == original
    assert got["raw"]["custom_field"] == {"nested": [1, 2, {"deep": True}]}
    assert got["description"] == "## Steps\n\n1. do it"
    assert got["labels"] == ["backend", "api"]
    # A status the hub does not know counts as open (and so is ready work).
    assert got["status"] == "open"
    assert await ready_ids(alice) == ["bd-a1b2"]


async def test_incremental_delete_and_full_sync_replacement(join, connect):
    alice = await connect(await join("alice"))
    await alice.call(
        "beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2"), issue("bd-3"))
    )
    stats = await alice.call("beads.sync", mode="incremental", deleted_ids=["bd-2", "bd-404"])
    assert (stats["received"], stats["deleted"], stats["issues_count"]) == (0, 1, 2)
    listed = [i["bead_id"] for i in (await alice.call("beads.list"))["issues"]]
    assert listed == ["bd-1", "bd-3"]
    with pytest.raises(RpcError) as err:
        await alice.call("beads.get", bead_id="bd-2")
    assert err.value.code == ErrorCode.NOT_FOUND

    # A full sync is the whole file: what it lacks is gone.
    stats = await alice.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-3")))
    assert (stats["deleted"], stats["issues_count"]) == (1, 1)
    assert [i["bead_id"] for i in (await alice.call("beads.list"))["issues"]] == ["bd-3"]


@pytest.mark.parametrize(
    ("params", "line", "problem"),
    [
        ({"mode": "full", "issues_jsonl": '{"id":"bd-9"}\n\n{"id": "bd-10",\n'}, 3, "JSON"),
        ({"mode": "full", "issues_jsonl": '{"id":"bd-9"}\n["bd-10"]\n'}, 2, "object"),
        ({"mode": "incremental", "changed_issues": '{"id":"bd-9"}\n{"title":"x"}'}, 2, "id"),
        (
            {"mode": "incremental", "changed_issues": '{"id":"bd-9","priority":"high"}'},
            1,
            "priority",
        ),
        ({"mode": "full", "issues_jsonl": '{"id":"bd-9","created_at":"yesterday"}'}, 1, "created"),
        ({"mode": "full", "issues_jsonl": '{"id":"bd-9","priority":99999999999}'}, 1, "priority"),
        ({"mode": "full", "issues_jsonl": '{"id":"bd-9","title":"a\\u0000b"}'}, 1, "NUL"),
    ],
)
async def test_a_bad_line_rejects_the_whole_sync(join, connect, params, line, problem):
    alice = await connect(await join("alice"))
    await alice.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2")))
    with pytest.raises(RpcError) as err:
        await alice.call("beads.sync", **params)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert f"line {line}" in err.value.message and problem in err.value.message
    assert err.value.data["line"] == line
    # Nothing was written: not bd-9 from the good line, and no deletions.
    listed = [i["bead_id"] for i in (await alice.call("beads.list"))["issues"]]
    assert listed == ["bd-1", "bd-2"]


async def test_sync_moves_claims_with_status_changes(join, connect):
    alice = await connect(await join("alice", human_name="Alice A"))
    bob = await connect(await join("bob", human_name="Bob B"))
    await alice.call(
        "beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2"), issue("bd-3"))
    )

    stats = await alice.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-1", status="in_progress"))
    )
    assert stats["conflicts"] == []
    acquired = await bob.next_event("claim.acquired", timeout=2)
    assert (acquired["data"]["bead_id"], acquired["data"]["alias"]) == ("bd-1", "alice")
    assert acquired["data"]["title"] == "Title of bd-1"

    # Bob's stale copy also says in_progress: alice keeps it, bob is told.
    stats = await bob.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-1", status="open"))
    )
    stats = await bob.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-1", status="in_progress"))
    )
    [conflict] = stats["conflicts"]
    assert conflict["holder_alias"] == "alice"
    assert conflict["reason"] == "bd-1 is being worked on by alice (Alice A)"
    claims = (await bob.call("claims.list"))["claims"]
    assert [(c["bead_id"], c["alias"]) for c in claims] == [("bd-1", "alice")]

    # Bob claimed bd-2 on the socket; his full sync re-sending bd-2 as open
    # (unchanged) must not drop that claim.
    await bob.call("claims.claim", bead_id="bd-2")
    await bob.call(
        "beads.sync",
        mode="full",
        issues_jsonl=jsonl(issue("bd-1", status="in_progress"), issue("bd-2"), issue("bd-3")),
    )
    held = {c["bead_id"]: c["alias"] for c in (await bob.call("claims.list"))["claims"]}
    assert held == {"bd-1": "alice", "bd-2": "bob"}

    # Closing releases it, whoever synced the close.
    await alice.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-1", status="closed"))
    )
    released = await bob.next_event(
        "claim.released", where=lambda e: e["data"]["bead_id"] == "bd-1", timeout=2
    )
    assert (released["data"]["alias"], released["data"]["reason"]) == ("alice", "closed")
    held = {c["bead_id"]: c["alias"] for c in (await bob.call("claims.list"))["claims"]}
    assert held == {"bd-2": "bob"}

    # Moving an in_progress issue back to open releases the syncer's claim.
    await bob.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-2", status="in_progress"))
    )
    await bob.call(
        "beads.sync", mode="incremental", changed_issues=jsonl(issue("bd-2", status="open"))
    )
    assert (await bob.call("claims.list"))["claims"] == []
    assert "bd-2" in await ready_ids(bob)


async def test_beads_synced_event_reaches_the_team(join, connect):
    alice = await connect(await join("alice"))
    bob = await connect(await join("bob"))
    await alice.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1")))
    event = await bob.next_event("beads.synced", timeout=2)
    assert (event["data"]["alias"], event["data"]["inserted"], event["data"]["issues_count"]) == (
        "alice",
        1,
        1,
    )
