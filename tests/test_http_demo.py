"""The bdh demo, end to end over real HTTP and nothing else: two agents
onboard, see each other, chat (send-and-wait on the SSE stream), mail,
collide on a claim and on a file, and escalate."""

from __future__ import annotations

import json

from hub.transport.http import outputs as o
from tests.shim import Shim, bdh_agent, in_seconds, ok, sse
from tests.support import RunningHub


def refresh(shim: Shim, role: str) -> dict[str, object]:
    return {
        "workspace_id": shim.id,
        "alias": shim.alias,
        "human_name": shim.agent["human_name"],
        "project_slug": shim.agent["project_slug"],
        "repo_origin": "git@github.com:acme/shop.git",
        "program": "claude-code",
        "model": "opus",
        "repo": "shop",
        "branch": "main",
        "role": role,
        "ttl_seconds": 300,
    }


def beads_request(shim: Shim, **fields: object) -> dict[str, object]:
    return {
        "workspace_id": shim.id,
        "repo_id": shim.agent["repo_id"],
        "alias": shim.alias,
        "human_name": shim.agent["human_name"],
        "repo_origin": "git@github.com:acme/shop.git",
        **fields,
    }


def issue_line(status: str) -> str:
    return json.dumps(
        {
            "id": "bd-15",
            "title": "Orders API",
            "status": status,
            "priority": 1,
            "issue_type": "task",
        }
    )


async def test_bdh_demo_over_http(hub_server: RunningHub, slug: str):
    origin = "git@github.com:acme/shop.git"
    juan = await bdh_agent(
        hub_server.http_url,
        slug,
        "alice-frontend",
        human_name="juan",
        role="frontend",
        repo_origin=origin,
    )
    ana = await bdh_agent(
        hub_server.http_url,
        slug,
        "bob-backend",
        human_name="ana",
        role="backend",
        repo_origin=origin,
    )
    try:
        # Both come online over HTTP and see each other.
        ok(
            await juan.post("/v1/agents/register", refresh(juan, "frontend")),
            o.RefreshPresenceResponse,
        )
        ok(
            await ana.post("/v1/agents/register", refresh(ana, "backend")),
            o.RefreshPresenceResponse,
        )
        status = ok(await juan.get("/v1/status", workspace_id=juan.id), o.StatusResponse)
        assert status["workspace"]["alias"] == "alice-frontend"
        team = {a["alias"]: (a["status"], a["member"], a["role"]) for a in status["agents"]}
        assert team == {
            "alice-frontend": ("online", "juan", "frontend"),
            "bob-backend": ("online", "ana", "backend"),
        }

        # Chat, send-and-wait: juan asks and waits on the stream; ana answers.
        opened = ok(
            await juan.post(
                "/v1/chat/sessions",
                {"to_aliases": ["bob-backend"], "message": "Is the orders API ready?"},
            ),
            o.ChatCreateSessionResponse,
        )
        async with sse(juan, opened["session_id"], in_seconds(30)) as stream:
            assert (await stream.next())["message_id"] == opened["message_id"]
            pending = ok(await ana.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"]
            assert pending[0]["sender_waiting"] and pending[0]["last_from"] == "alice-frontend"
            await ana.post(
                f"/v1/chat/sessions/{opened['session_id']}/messages",
                {"body": "Yes: POST /v1/orders is live"},
            )
            reply = await stream.next()
        assert (reply["event"], reply["from_agent"], reply["body"]) == (
            "message",
            "bob-backend",
            "Yes: POST /v1/orders is live",
        )

        # Mail: send, list, ack.
        sent = ok(
            await ana.post(
                "/v1/messages",
                {
                    "from_workspace": ana.id,
                    "to_workspace": juan.id,
                    "from_alias": "bob-backend",
                    "subject": "Orders API",
                    "body": "Schema is in docs/orders.md",
                },
            ),
            o.SendMessageResponse,
        )
        inbox = ok(
            await juan.get("/v1/messages/inbox", workspace_id=juan.id, unread_only="true"),
            o.InboxResponse,
        )
        assert [m["subject"] for m in inbox["messages"]] == ["Orders API"]
        ok(
            await juan.post(f"/v1/messages/{sent['message_id']}/ack", {"workspace_id": juan.id}),
            o.AckResponse,
        )
        inbox = ok(
            await juan.get("/v1/messages/inbox", workspace_id=juan.id, unread_only="true"),
            o.InboxResponse,
        )
        assert inbox["count"] == 0

        # A claim conflict: juan takes bd-15, ana's bd command is rejected.
        claim = "bdh update bd-15 --status in_progress"
        ok(
            await juan.post("/v1/bdh/sync", beads_request(juan, issues_jsonl=issue_line("open"))),
            o.SyncResponse,
        )
        verdict = ok(
            await juan.post("/v1/bdh/command", beads_request(juan, command_line=claim)),
            o.CommandResponse,
        )
        assert verdict["approved"] is True
        ok(
            await juan.post(
                "/v1/bdh/sync",
                beads_request(
                    juan, sync_mode="incremental", changed_issues=issue_line("in_progress")
                ),
            ),
            o.SyncResponse,
        )
        verdict = ok(
            await ana.post("/v1/bdh/command", beads_request(ana, command_line=claim)),
            o.CommandResponse,
        )
        assert verdict["approved"] is False
        assert verdict["reason"] == "bd-15 is being worked on by alice-frontend (juan)"
        assert [b["bead_id"] for b in verdict["context"]["beads_in_progress"]] == ["bd-15"]

        # Reservations, both shapes: bdh's list of paths, the aw library's one key.
        mine = ok(
            await juan.post(
                "/v1/reservations",
                {
                    "workspace_id": juan.id,
                    "alias": "alice-frontend",
                    "paths": ["web/orders.tsx"],
                    "ttl_seconds": 300,
                    "exclusive": True,
                    "bead_id": "bd-15",
                },
            ),
            o.LockResponse,
        )
        assert [g["path"] for g in mine["granted"]] == ["web/orders.tsx"]
        held = await ana.post(
            "/v1/reservations", {"resource_key": "web/orders.tsx", "ttl_seconds": 60}
        )
        ok(held, o.ReservationHeldError, status=409)
        assert held.json()["holder_alias"] == "alice-frontend"
        other = ok(
            await ana.post("/v1/reservations", {"resource_key": "api/orders.py"}),
            o.ReservationAcquireResponse,
        )
        assert other["status"] == "acquired"
        locks = ok(await ana.get("/v1/reservations"), o.ListLocksResponse)
        assert sorted(r["resource_key"] for r in locks["reservations"]) == [
            "api/orders.py",
            "web/orders.tsx",
        ]

        # Escalate to a human; the team's status counts it.
        escalated = ok(
            await ana.post(
                "/v1/escalations",
                {
                    "workspace_id": ana.id,
                    "alias": "bob-backend",
                    "subject": "Payment provider keys",
                    "situation": "The orders API needs live keys to test refunds.",
                },
            ),
            o.EscalateResponse,
        )
        assert escalated["status"] == "pending"
        status = ok(await juan.get("/v1/status"), o.StatusResponse)
        assert status["escalations_pending"] == 1
        current = {a["alias"]: (a["current_issue"], a["current_locks"]) for a in status["agents"]}
        assert current == {
            "alice-frontend": ("bd-15", ["web/orders.tsx"]),
            "bob-backend": ("", ["api/orders.py"]),
        }
    finally:
        await juan.close()
        await ana.close()
