"""``beadhub demo``: the coordination story, scripted against a running hub.

A coordinator and two developers come online; the coordinator asks bob over
chat and waits for his answer; bob claims bd-12 and alice's claim of it is
refused with bob's name; both reserve files and see each other's
reservations; alice escalates and a human answers from the "dashboard" (a
browser ticket). Every step goes through the real protocol.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from protocol.client import HubClient
from protocol.errors import RpcError

ISSUES = "\n".join(
    json.dumps(issue)
    for issue in [
        {"id": "bd-10", "title": "API epic", "status": "open", "priority": 1, "issue_type": "epic"},
        {
            "id": "bd-12",
            "title": "API endpoints for widgets",
            "status": "open",
            "priority": 1,
            "issue_type": "task",
            "dependencies": [
                {"issue_id": "bd-12", "depends_on_id": "bd-10", "type": "parent-child"}
            ],
        },
        {
            "id": "bd-13",
            "title": "Widget list page",
            "status": "open",
            "priority": 2,
            "issue_type": "task",
        },
    ]
)


def _post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _online(alias: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["data"]["alias"] == alias and event["data"]["online"] is True


async def run(base_url: str, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Play the story; return what each step produced (tests assert on it)."""
    slug = f"demo-{uuid.uuid4().hex[:6]}"
    ws_url = "ws" + base_url.rstrip("/")[4:]
    post = lambda path, body: asyncio.to_thread(_post, base_url, path, body)  # noqa: E731
    team = {}
    for alias, human_name, role in [
        ("carol-coordinator", "Ana", "coordinator"),
        ("alice-frontend", "Juan", "frontend"),
        ("bob-backend", "Maria", "backend"),
    ]:
        team[alias] = await post(
            "/v1/init",
            {
                "project_slug": slug,
                "alias": alias,
                "human_name": human_name,
                "role": role,
                "repo_origin": "git@github.com:acme/widgets.git",
                "workspace_path": f"/src/{alias}",
            },
        )
    say(f"project {slug}: carol-coordinator, alice-frontend and bob-backend onboarded")
    result: dict[str, Any] = {"project": slug}

    carol = await HubClient(ws_url, team["carol-coordinator"]["api_key"]).connect()
    alice = await HubClient(ws_url, team["alice-frontend"]["api_key"]).connect()
    bob = await HubClient(ws_url, team["bob-backend"]["api_key"]).connect()
    try:
        for alias in ("alice-frontend", "bob-backend"):
            await carol.next_event("presence", where=_online(alias))
        online = [
            a["alias"] for a in (await carol.call("presence.list", online_only=True))["agents"]
        ]
        result["online"] = online
        say(f"online: {', '.join(online)}")

        await carol.call("beads.sync", mode="full", issues_jsonl=ISSUES)
        ready = [i["bead_id"] for i in (await carol.call("beads.ready"))["issues"]]
        result["ready"] = ready
        say(f"ready work: {', '.join(ready)}")

        async def bob_answers() -> None:
            event = await bob.next_event("chat.message", timeout=10)
            say(f"bob reads: {event['data']['body']!r}")
            await bob.call(
                "chat.send", session_id=event["data"]["session_id"], body="Yes, I'll take bd-12."
            )

        answering = asyncio.create_task(bob_answers())
        say("carol asks bob and waits: 'Can you handle the API endpoints?'")
        chat = await carol.call(
            "chat.send", to=["bob-backend"], body="Can you handle the API endpoints?", wait=30
        )
        await answering
        result["chat"] = chat
        say(f"carol's wait ended ({chat['status']}): bob said {chat['reply']['body']!r}")

        claim = await bob.call("claims.claim", bead_id="bd-12")
        say(f"bob claims bd-12 ({claim['claim']['bead_id']})")
        try:
            await alice.call("claims.claim", bead_id="bd-12")
            result["alice_claim"] = "granted"
        except RpcError as exc:
            result["alice_claim"] = exc.message
            say(f"alice's claim is refused: {exc.message}")

        await bob.call("reservations.acquire", paths=["src/api/**"], reason="bd-12 endpoints")
        await alice.call("reservations.acquire", paths=["src/web/list.js"], reason="bd-13")
        seen_by_alice = (await alice.call("reservations.list"))["reservations"]
        result["reservations"] = sorted((r["path"], r["holder_alias"]) for r in seen_by_alice)
        say(
            "alice sees reservations: "
            + ", ".join(f"{path} by {holder}" for path, holder in result["reservations"])
        )

        escalation = await alice.call(
            "escalations.create",
            subject="Pagination style?",
            situation="Cursor or offset pagination for the widget list? The API is not settled.",
        )
        say(f"alice escalates: {escalation['subject']}")
        signed_in = await post("/v1/auth/ticket", {"api_key": team["carol-coordinator"]["api_key"]})
        async with HubClient(ws_url, ticket=signed_in["ticket"]) as human:
            await human.call(
                "escalations.respond",
                escalation_id=escalation["escalation_id"],
                response="Cursor pagination, like the mail inbox.",
            )
        answered = await alice.next_event("escalation.answered", timeout=10)
        result["escalation_response"] = answered["data"]["response"]
        say(f"a human answers alice: {answered['data']['response']!r}")
    finally:
        for client in (carol, alice, bob):
            await client.close()
    return result
