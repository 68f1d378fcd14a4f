"""Claims through bdh's command/sync passthrough, escalations and the
policy (with conditional GET), over the HTTP shim."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from hub.transport.http import outputs as o
from tests.shim import Shim, error, ok
from tests.support import grant_coordinator, unique

NewAgent = Callable[..., Awaitable[Shim]]


def issue(bead_id: str, title: str, status: str = "open", parent: str | None = None) -> str:
    line: dict[str, Any] = {
        "id": bead_id,
        "title": title,
        "status": status,
        "priority": 1,
        "issue_type": "epic" if parent is None and bead_id == "bd-1" else "task",
        "created_at": "2025-11-30T00:00:00Z",
        "updated_at": "2025-11-30T00:00:00Z",
    }
    if parent:
        line["dependencies"] = [
            {"issue_id": bead_id, "depends_on_id": parent, "type": "parent-child"}
        ]
    return json.dumps(line)


ISSUES = "\n".join(
    [
        issue("bd-1", "Checkout"),
        issue("bd-15", "Payment form", parent="bd-1"),
        issue("bd-16", "Receipt email", parent="bd-1"),
    ]
)


def command_body(shim: Shim, command_line: str) -> dict[str, Any]:
    """bdh's CommandRequest."""
    return {
        "workspace_id": shim.id,
        "repo_id": shim.agent["repo_id"],
        "alias": shim.alias,
        "human_name": shim.agent["human_name"],
        "repo_origin": "git@github.com:acme/widgets.git",
        "role": "frontend",
        "command_line": command_line,
    }


def sync_body(shim: Shim, **fields: Any) -> dict[str, Any]:
    """bdh's SyncRequest."""
    return {
        "workspace_id": shim.id,
        "repo_id": shim.agent["repo_id"],
        "alias": shim.alias,
        "human_name": shim.agent["human_name"],
        "repo_origin": "git@github.com:acme/widgets.git",
        "command_line": "bd update",
        "sync_protocol_version": 1,
        **fields,
    }


async def test_claims_through_command_and_sync(agent: NewAgent, connect):
    juan = await agent("alice-frontend", human_name="juan")
    ana = await agent("bob-backend", human_name="ana")
    watcher = await connect(ana.agent)

    full = ok(await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=ISSUES)), o.SyncResponse)
    assert full["synced"] and full["issues_count"] == 3
    assert full["stats"] == {"received": 3, "inserted": 3, "updated": 0, "deleted": 0}
    assert full["sync_protocol_version"] == 1

    claim = "bdh update bd-15 --status in_progress"
    approved = ok(await juan.post("/v1/bdh/command", command_body(juan, claim)), o.CommandResponse)
    assert approved["approved"] is True and approved["context"]["beads_in_progress"] == []
    synced = ok(
        await juan.post(
            "/v1/bdh/sync",
            sync_body(
                juan,
                sync_mode="incremental",
                changed_issues=issue("bd-15", "Payment form", "in_progress", parent="bd-1"),
                deleted_ids=[],
            ),
        ),
        o.SyncResponse,
    )
    assert synced["stats"]["updated"] == 1 and synced["issues_count"] == 3
    # The claim made over HTTP reaches a WebSocket agent.
    event = await watcher.next_event("claim.acquired", timeout=2)
    assert (event["data"]["bead_id"], event["data"]["alias"]) == ("bd-15", "alice-frontend")

    await juan.post("/v1/messages", {"to_alias": "bob-backend", "body": "I took bd-15"})
    rejected = ok(await ana.post("/v1/bdh/command", command_body(ana, claim)), o.CommandResponse)
    assert rejected["approved"] is False
    assert rejected["reason"] == "bd-15 is being worked on by alice-frontend (juan)"
    context = rejected["context"]
    assert context["messages_waiting"] == 1
    [busy] = context["beads_in_progress"]
    assert (busy["bead_id"], busy["alias"], busy["human_name"], busy["workspace_id"]) == (
        "bd-15",
        "alice-frontend",
        "juan",
        juan.id,
    )
    assert busy["title"] == "Payment form" and busy["started_at"]
    closing = command_body(ana, "bd close bd-15 --reason done")
    assert ok(await ana.post("/v1/bdh/command", closing), o.CommandResponse)["approved"] is False
    reading = command_body(ana, "bd show bd-15")
    assert ok(await ana.post("/v1/bdh/command", reading), o.CommandResponse)["approved"] is True

    # The claim shows in the workspace listings and in status.
    listed = ok(await ana.get("/v1/workspaces", include_claims="true"), o.WorkspacesResponse)
    held = {w["alias"]: w for w in listed["workspaces"]}["alice-frontend"]
    assert [c["bead_id"] for c in held["claims"]] == ["bd-15"]
    assert (held["claims"][0]["apex_id"], held["claims"][0]["apex_title"]) == ("bd-1", "Checkout")
    assert held["focus_apex_id"] == "bd-1"
    team = ok(await ana.get("/v1/workspaces/team", only_with_claims="true"), o.WorkspacesResponse)
    assert [w["alias"] for w in team["workspaces"]] == ["alice-frontend"]
    status = ok(await ana.get("/v1/status"), o.StatusResponse)
    issues = {a["alias"]: a["current_issue"] for a in status["agents"]}
    assert issues == {"alice-frontend": "bd-15", "bob-backend": ""}

    # Closing the issue releases the claim: now ana may take it.
    ok(
        await juan.post(
            "/v1/bdh/sync",
            sync_body(
                juan,
                sync_mode="incremental",
                changed_issues=issue("bd-15", "Payment form", "closed", parent="bd-1"),
            ),
        ),
        o.SyncResponse,
    )
    await watcher.next_event("claim.released", timeout=2)
    reopened = ok(await ana.post("/v1/bdh/command", command_body(ana, claim)), o.CommandResponse)
    assert reopened["approved"] is True


async def test_sync_conflict_keeps_the_holder(agent: NewAgent, connect):
    juan, ana = await agent("alice", human_name="juan"), await agent("bob", human_name="ana")
    await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=ISSUES))
    # juan claims over the WebSocket; ana's bd then marks the issue in_progress.
    ws_juan = await connect(juan.agent)
    await ws_juan.call("claims.claim", bead_id="bd-16")
    taking = issue("bd-16", "Receipt email", "in_progress")
    answer = ok(
        await ana.post(
            "/v1/bdh/sync", sync_body(ana, sync_mode="incremental", changed_issues=taking)
        ),
        o.SyncResponse,
    )
    [clash] = answer["conflicts"]
    assert clash["holder_alias"] == "alice"
    assert clash["reason"] == "bd-16 is being worked on by alice (juan)"
    status = ok(await ana.get("/v1/status"), o.StatusResponse)
    assert {a["alias"]: a["current_issue"] for a in status["agents"]} == {
        "alice": "bd-16",
        "bob": "",
    }


async def test_full_sync_deletes_what_the_file_lacks(agent: NewAgent):
    juan = await agent("alice")
    await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=ISSUES))
    # bdh omits sync_mode for a full sync.
    fewer = "\n".join(ISSUES.splitlines()[:2])
    answer = ok(
        await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=fewer)), o.SyncResponse
    )
    assert answer["issues_count"] == 2 and answer["stats"]["deleted"] == 1
    gone = ok(
        await juan.post(
            "/v1/bdh/sync", sync_body(juan, sync_mode="incremental", deleted_ids=["bd-15"])
        ),
        o.SyncResponse,
    )
    assert gone["issues_count"] == 1 and gone["stats"]["deleted"] == 1


async def test_bad_syncs_and_commands_change_nothing(agent: NewAgent):
    juan, ana = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=ISSUES))
    broken = ISSUES + "\n{not json"
    error(await juan.post("/v1/bdh/sync", sync_body(juan, issues_jsonl=broken)), 422)
    error(await juan.post("/v1/bdh/sync", sync_body(juan, sync_mode="sideways")), 422)
    error(await juan.post("/v1/bdh/sync", sync_body(juan, deleted_ids="bd-1")), 422)
    error(await juan.post("/v1/bdh/sync", sync_body(juan, repo_id=mallory.agent["repo_id"])), 404)
    error(await juan.post("/v1/bdh/sync", sync_body(ana, issues_jsonl="")), 403)
    error(await mallory.post("/v1/bdh/sync", sync_body(juan, issues_jsonl="")), 404)
    no_line = command_body(juan, "bd close bd-1")
    del no_line["command_line"]
    error(await juan.post("/v1/bdh/command", no_line), 422)
    error(await juan.post("/v1/bdh/command", {**command_body(juan, "x"), "command_line": 5}), 422)
    check = ok(
        await juan.post("/v1/bdh/sync", sync_body(juan, sync_mode="incremental")), o.SyncResponse
    )
    assert check["issues_count"] == 3
    # Mallory's project has its own (empty) issue set.
    theirs = ok(
        await mallory.post("/v1/bdh/sync", sync_body(mallory, sync_mode="incremental")),
        o.SyncResponse,
    )
    assert theirs["issues_count"] == 0


# -- escalations ------------------------------------------------------------------------------


async def test_escalate_reaches_the_team_and_counts_in_status(agent: NewAgent, connect):
    juan, ana = await agent("alice"), await agent("bob")
    watcher = await connect(ana.agent)
    body = {
        "workspace_id": juan.id,
        "alias": "alice",
        "subject": "Need prod credentials",
        "situation": "The deploy step needs a token I do not have.",
    }
    made = ok(await juan.post("/v1/escalations", body), o.EscalateResponse)
    assert made["status"] == "pending" and made["created_at"] and made["expires_at"]
    event = await watcher.next_event("escalation.created", timeout=2)
    assert event["data"]["escalation_id"] == made["escalation_id"]
    status = ok(await ana.get("/v1/status"), o.StatusResponse)
    assert status["escalations_pending"] == 1
    listed = ok(await ana.get("/v1/escalations", status="pending"), o.EscalationsResponse)
    assert [e["subject"] for e in listed["escalations"]] == ["Need prod credentials"]

    error(await juan.post("/v1/escalations", {**body, "situation": ""}), 422)
    error(await juan.post("/v1/escalations", {"subject": "no situation"}), 422)
    error(await ana.post("/v1/escalations", body), 403)
    error(await ana.get("/v1/escalations", status="sideways"), 422)
    mallory = await agent("mallory", project=unique("other"))
    assert ok(await mallory.get("/v1/escalations"), o.EscalationsResponse)["count"] == 0
    assert ok(await ana.get("/v1/status"), o.StatusResponse)["escalations_pending"] == 1


# -- policy -----------------------------------------------------------------------------------


async def test_active_policy_with_conditional_get(agent: NewAgent):
    juan = await agent("alice")
    first = await juan.get("/v1/policies/active")
    policy = ok(first, o.ActivePolicyResponse)
    assert policy["version"] >= 1 and policy["invariants"] and policy["roles"]
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    assert etag and last_modified.endswith("GMT")

    same = await juan.http.get("/v1/policies/active", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    since = await juan.http.get("/v1/policies/active", headers={"If-Modified-Since": last_modified})
    assert since.status_code == 304
    old = format_datetime(datetime(2001, 1, 1, tzinfo=UTC), usegmt=True)
    changed = await juan.http.get("/v1/policies/active", headers={"If-Modified-Since": old})
    assert changed.status_code == 200
    other = await juan.http.get("/v1/policies/active", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200

    role = sorted(policy["roles"])[0]
    picked = ok(
        await juan.get("/v1/policies/active", role=role, only_selected="true"),
        o.ActivePolicyResponse,
    )
    assert picked["selected_role"]["role"] == role and list(picked["roles"]) == [role]
    error(await juan.get("/v1/policies/active", role="astronaut"), 400)


async def test_policy_reset_needs_the_coordinator(agent: NewAgent, hub_server):
    juan = await agent("alice", role="backend")
    boss = await agent("carol", role="coordinator")
    # A declared role grants nothing: refused until a human grants it.
    error(await boss.post("/v1/policies/reset"), 403)
    await grant_coordinator(hub_server, boss.agent)
    before = await juan.get("/v1/policies/active")
    error(await juan.post("/v1/policies/reset"), 403)
    reset = ok(await boss.post("/v1/policies/reset"), o.ResetPolicyResponse)
    assert reset["reset"] is True and reset["version"] == before.json()["version"] + 1
    after = await juan.http.get(
        "/v1/policies/active", headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200 and after.json()["policy_id"] == reset["active_policy_id"]
