"""``beadhub demo``: the coordination story, scripted against a running hub.

A coordinator and two developers come online; the coordinator asks bob over
chat and waits for his answer; bob claims bd-12 and alice's claim of it is
refused with bob's name; both reserve files and see each other's
reservations; alice escalates and a human answers from the "dashboard",
signed in with the operator's credential (what ``beadhub serve`` wrote to
its data directory), never with an agent's key. Every step goes through
the real protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def _post(base_url: str, path: str, body: dict[str, Any], credential: str = "") -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def dashboard_link(base_url: str, operator_token: str, slug: str) -> str:
    """The dashboard, signed in to the demo project as its human: a
    one-time sign-in link made with the operator's credential. The token
    rides in the fragment, which the browser never sends; the page trades
    it for a short-lived ticket and wipes it from the address bar."""
    link = await asyncio.to_thread(
        _post,
        base_url,
        "/v1/auth/links",
        {"human_name": "Ana", "project_slug": slug},
        _require(operator_token),
    )
    return str(link["url"])


def _require(operator_token: str) -> str:
    if not operator_token:
        raise SystemExit(
            "beadhub demo: the human's steps need the operator token: run it on the hub's host "
            "(--data-dir: the hub's data directory, where beadhub serve wrote operator-token)"
        )
    return operator_token


def _online(alias: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["data"]["alias"] == alias and event["data"]["online"] is True


async def run(
    base_url: str,
    say: Callable[[str], None] = print,
    *,
    pace: float = 0.0,
    keep: bool = False,
    until: asyncio.Event | None = None,
    operator_token: str = "",
) -> dict[str, Any]:
    """Play the story; return what each step produced (tests assert on it).

    ``pace``: seconds between steps. ``keep``: print a dashboard link first,
    and at the end leave the agents online (with a question waiting for the
    watcher) until ``until`` is set (never, by default: Ctrl-C).
    ``operator_token``: the human credential the hub's operator holds
    (``<data dir>/operator-token``); the human's answer is signed in with it."""
    slug = f"demo-{uuid.uuid4().hex[:6]}"

    async def pause(steps: float = 1.0) -> None:
        await asyncio.sleep(pace * steps)

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
    if keep:
        result["link"] = await dashboard_link(base_url, operator_token, slug)
        say(f"watch it in the dashboard (signed in as Ana, the team's human): {result['link']}")
        await pause(3)

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
        await pause()

        await carol.call("beads.sync", mode="full", issues_jsonl=ISSUES)
        ready = [i["bead_id"] for i in (await carol.call("beads.ready"))["issues"]]
        result["ready"] = ready
        say(f"ready work: {', '.join(ready)}")
        await pause()

        async def bob_answers() -> None:
            event = await bob.next_event("chat.message", timeout=10 + pace)
            say(f"bob reads: {event['data']['body']!r}")
            await pause()
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
        await pause()

        claim = await bob.call("claims.claim", bead_id="bd-12")
        say(f"bob claims bd-12 ({claim['claim']['bead_id']})")
        await pause()
        try:
            await alice.call("claims.claim", bead_id="bd-12")
            result["alice_claim"] = "granted"
        except RpcError as exc:
            result["alice_claim"] = exc.message
            say(f"alice's claim is refused: {exc.message}")
            await pause()

        await bob.call("reservations.acquire", paths=["src/api/**"], reason="bd-12 endpoints")
        await alice.call("reservations.acquire", paths=["src/web/list.js"], reason="bd-13")
        seen_by_alice = (await alice.call("reservations.list"))["reservations"]
        result["reservations"] = sorted((r["path"], r["holder_alias"]) for r in seen_by_alice)
        say(
            "alice sees reservations: "
            + ", ".join(f"{path} by {holder}" for path, holder in result["reservations"])
        )
        await pause()

        escalation = await alice.call(
            "escalations.create",
            subject="Pagination style?",
            situation="Cursor or offset pagination for the widget list? The API is not settled.",
        )
        say(f"alice escalates: {escalation['subject']}")
        await pause()
        signed_in = await post(
            "/v1/auth/signin",
            {"token": _require(operator_token), "project_slug": slug, "human_name": "Ana"},
        )
        async with HubClient(ws_url, ticket=signed_in["ticket"]) as human:
            await human.call(
                "escalations.respond",
                escalation_id=escalation["escalation_id"],
                response="Cursor pagination, like the mail inbox.",
            )
        answered = await alice.next_event("escalation.answered", timeout=10)
        result["escalation_response"] = answered["data"]["response"]
        say(f"a human answers alice: {answered['data']['response']!r}")
        if keep:
            await _stay_online(alice, say, until or asyncio.Event())
    finally:
        for client in (carol, alice, bob):
            await client.close()
    return result


async def _stay_online(alice: HubClient, say: Callable[[str], None], until: asyncio.Event) -> None:
    """The end of ``--keep``: the agents stay connected (online), and alice
    asks one more question for the watcher to answer in the dashboard."""
    question = await alice.call(
        "escalations.create",
        subject="Ship the widget list today?",
        situation="The list works with cursor pagination. Ship it today, or wait for review?",
    )
    say(
        "the agents stay online; alice asks you in the dashboard's Escalations:"
        f" {question['subject']!r}. Ctrl-C to stop."
    )

    async def relay_answer() -> None:
        async for event in alice.events():
            data = event["data"]
            if event["type"] == "escalation.answered" and (
                data["escalation_id"] == question["escalation_id"]
            ):
                say(f"alice got your answer: {data['response']!r}")
                return

    answer = asyncio.create_task(relay_answer())
    try:
        await until.wait()
    finally:
        answer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answer
