"""Nothing stays stuck (issue 17), on one hub with short graces: fencing
tokens, claims and reservations released when their holder is gone,
waiting in line instead of polling, and retry-safe writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import RunningHub, onboard, running_hub, unique
from tests.test_beads import issue, jsonl
from tests.test_reservations import open_dashboard

pytestmark = pytest.mark.timeout(60)

CLAIM_GRACE = 1.5
RESERVATION_GRACE = 0.5


@pytest.fixture(scope="module")
async def hub(database_url: str) -> AsyncIterator[RunningHub]:
    async with running_hub(
        database_url=database_url,
        bus_url="memory://",
        claim_holder_grace_seconds=CLAIM_GRACE,
        reservation_holder_grace_seconds=RESERVATION_GRACE,
    ) as server:
        yield server


@pytest.fixture
async def team(hub: RunningHub) -> AsyncIterator[Any]:
    """``await team("alice")``: an agent of this test's project with an open
    session (``.client``)."""
    slug = unique("proj")
    clients: list[HubClient] = []

    async def member(alias: str, connect: bool = True) -> dict[str, Any]:
        agent = await onboard(hub.http_url, slug, alias)
        if connect:
            agent["client"] = await HubClient(hub.ws_url, agent["api_key"]).connect()
            clients.append(agent["client"])
        return agent

    yield member
    for client in clients:
        await client.close()


async def refused(awaitable: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await awaitable
    return info.value


# -- fencing tokens ---------------------------------------------------------------


async def test_every_grant_carries_a_token_that_only_grows_per_path_and_issue(team):
    alice, bob = await team("alice"), await team("bob")
    a, b = alice["client"], bob["client"]
    await a.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1")))

    first = (await a.call("reservations.acquire", paths=["src/app.py"]))["granted"][0]
    renewed = (await a.call("reservations.acquire", paths=["src/app.py"]))["granted"][0]
    assert renewed["renewed"] and renewed["token"] == first["token"]
    await a.call("reservations.release", paths=["src/app.py"])
    second = (await b.call("reservations.acquire", paths=["src/app.py"]))["granted"][0]
    assert second["token"] > first["token"]

    claim = (await a.call("claims.claim", bead_id="bd-1"))["claim"]
    await a.call("claims.release", bead_id="bd-1")
    again = (await b.call("claims.claim", bead_id="bd-1"))["claim"]
    assert again["token"] > claim["token"]
    listed = (await a.call("claims.list"))["claims"]
    assert listed[0]["token"] == again["token"] and listed[0]["stale"] is False

    # reservations.check: who holds what, with tokens; a glob covers files.
    await b.call("reservations.acquire", paths=["docs/**"], exclusive=True)
    checked = (await a.call("reservations.check", paths=["src/app.py", "docs/x.md", "free.txt"]))[
        "paths"
    ]
    assert [p["path"] for p in checked] == ["src/app.py", "docs/x.md", "free.txt"]
    assert checked[0]["exclusive_holder"]["holder_alias"] == "bob"
    assert checked[0]["exclusive_holder"]["token"] == second["token"]
    assert checked[1]["exclusive_holder"]["path"] == "docs/**"
    assert checked[2] == {"path": "free.txt", "holders": [], "exclusive_holder": None}


async def test_check_and_the_queue_see_only_the_callers_project(hub, team):
    alice = await team("alice")
    await alice["client"].call("reservations.acquire", paths=["secret.txt"])
    stranger = await onboard(hub.http_url, unique("other"), "mallory")
    async with HubClient(hub.ws_url, stranger["api_key"]) as other:
        checked = await other.call("reservations.check", paths=["secret.txt"])
        assert checked["paths"][0]["holders"] == []
        assert (await other.call("queue.list"))["waiting"] == []
    async with httpx.AsyncClient(base_url=hub.http_url) as http:
        for method, path in (
            ("POST", "/v1/reservations/check"),
            ("GET", "/v1/queue"),
            ("POST", "/v1/claims"),
            ("POST", "/v1/claims/release"),
        ):
            response = await http.request(method, path, json={"paths": ["x"], "bead_id": "bd-1"})
            assert response.status_code == 401, (path, response.text)


# -- leases -------------------------------------------------------------------------


async def test_a_gone_holder_goes_stale_then_loses_its_claim_and_reservations(hub, team):
    alice, bob = await team("alice"), await team("bob")
    a, b = alice["client"], bob["client"]
    await a.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-7")))
    await a.call("claims.claim", bead_id="bd-7")
    await a.call("reservations.acquire", paths=["src/a.py"], ttl_seconds=600)
    assert (await b.call("beads.ready"))["count"] == 0

    await a.close()
    # Stale first, with the holder's last-seen time ...
    await b.next_event("presence", where=lambda e: e["data"]["alias"] == "alice")
    stale = (await b.call("claims.list"))["claims"][0]
    assert stale["stale"] is True and stale["holder_last_seen"]
    # ... the reservation goes after its grace, the claim after its own.
    gone = await b.next_event("reservation.released", timeout=10)
    assert gone["data"]["release_reason"] == "holder_gone"
    assert gone["data"]["path"] == "src/a.py"
    released = await b.next_event("claim.released", timeout=10)
    assert released["data"]["reason"] == "holder_gone"
    assert released["data"]["bead_id"] == "bd-7" and released["data"]["alias"] == "alice"
    assert [i["bead_id"] for i in (await b.call("beads.ready"))["issues"]] == ["bd-7"]
    assert (await b.call("reservations.list"))["reservations"] == []


async def test_a_holder_that_comes_back_within_the_grace_keeps_what_it_holds(hub, team):
    alice, bob = await team("alice"), await team("bob")
    a, b = alice["client"], bob["client"]
    await a.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-8")))
    await a.call("claims.claim", bead_id="bd-8")
    await a.call("reservations.acquire", paths=["keep.py"], ttl_seconds=600)
    await a.close()
    async with HubClient(hub.ws_url, alice["api_key"]):
        # Past both graces while it is back: nothing is released.
        await asyncio.sleep(CLAIM_GRACE + 1)
        assert (await b.call("claims.list"))["claims"][0]["stale"] is False
        assert [r["path"] for r in (await b.call("reservations.list"))["reservations"]] == [
            "keep.py"
        ]


async def test_a_human_releases_any_claim_at_once(hub, team):
    alice = await team("alice")
    await alice["client"].call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-9")))
    await alice["client"].call("claims.claim", bead_id="bd-9")
    human = await open_dashboard(hub, alice)
    try:
        assert (await human.call("claims.release", bead_id="bd-9"))["released"] is True
        event = await alice["client"].next_event("claim.released")
        assert event["data"]["reason"] == "revoked"
    finally:
        await human.close()


# -- waiting in line ------------------------------------------------------------------


async def test_waiters_are_granted_in_arrival_order_when_the_holder_releases(team):
    holder = await team("holder")
    waiters = [await team(f"w{n}") for n in range(3)]
    h = holder["client"]
    await h.call("reservations.acquire", paths=["src/hot.py"])
    calls = []
    for w in waiters:
        calls.append(
            asyncio.create_task(
                w["client"].call("reservations.acquire", paths=["src/hot.py"], wait=20)
            )
        )
        await h.next_event(
            "reservation.queued", where=lambda e, a=w["alias"]: e["data"]["alias"] == a
        )
    line = (await h.call("queue.list"))["waiting"]
    assert [(x["alias"], x["path"], x["position"]) for x in line] == [
        ("w0", "src/hot.py", 1),
        ("w1", "src/hot.py", 2),
        ("w2", "src/hot.py", 3),
    ]
    assert [x["alias"] for x in (await h.call("reservations.list"))["waiting"]] == [
        "w0",
        "w1",
        "w2",
    ]
    await h.call("reservations.release", paths=["src/hot.py"])
    owners = dict(zip(calls, waiters, strict=True))
    order, tokens = [], []
    pending = set(calls)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1  # never two holders at once
        task = done.pop()
        result = task.result()
        assert result["status"] == "granted" and result["queued"] == []
        order.append(owners[task]["alias"])
        tokens.append(result["granted"][0]["token"])
        await owners[task]["client"].call("reservations.release", paths=["src/hot.py"])
    assert order == ["w0", "w1", "w2"]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


async def test_a_waiter_that_disconnects_leaves_the_line_and_a_wait_can_time_out(hub, team):
    holder, quitter, patient = await team("holder"), await team("quitter"), await team("patient")
    h = holder["client"]
    await h.call("reservations.acquire", paths=["a.txt"])
    call = quitter["client"].call("reservations.acquire", paths=["a.txt"], wait=30)
    waiting = asyncio.create_task(call)
    await h.next_event("reservation.queued")
    await quitter["client"].close()
    with pytest.raises(ConnectionError):
        await waiting
    left = await h.next_event("reservation.dequeued")
    assert left["data"]["alias"] == "quitter" and left["data"]["why"] == "left"
    assert (await h.call("queue.list"))["waiting"] == []

    timed = await patient["client"].call("reservations.acquire", paths=["a.txt", "b.txt"], wait=0.3)
    assert timed["status"] == "timeout"
    assert [g["path"] for g in timed["granted"]] == ["b.txt"]
    assert timed["queued"] == ["a.txt"]
    assert timed["conflicts"][0]["held_by"] == "holder"
    assert (await h.call("queue.list"))["waiting"] == []


async def test_a_claim_waits_in_line_and_is_granted_when_the_holder_leaves(team):
    alice, bob = await team("alice"), await team("bob")
    await alice["client"].call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-q")))
    await alice["client"].call("claims.claim", bead_id="bd-q")
    waiting = asyncio.create_task(bob["client"].call("claims.claim", bead_id="bd-q", wait=30))
    queued = await alice["client"].next_event("claim.queued")
    assert queued["data"]["bead_id"] == "bd-q" and queued["data"]["alias"] == "bob"
    assert [w["alias"] for w in (await bob["client"].call("claims.list"))["waiting"]] == ["bob"]
    await alice["client"].close()  # gone: released after the grace, then granted
    result = await asyncio.wait_for(waiting, 20)
    assert result["status"] == "granted" and result["claim"]["alias"] == "bob"
    assert (await bob["client"].call("queue.list"))["waiting"] == []


async def test_a_human_cannot_wait_in_line(hub, team):
    alice = await team("alice")
    await alice["client"].call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-h")))
    human = await open_dashboard(hub, alice)
    try:
        error = await refused(human.call("claims.claim", bead_id="bd-h", wait=5))
        assert error.code == ErrorCode.FORBIDDEN
        error = await refused(human.call("reservations.acquire", paths=["x"], wait=5))
        assert error.code == ErrorCode.FORBIDDEN
        assert (await human.call("queue.list"))["waiting"] == []
    finally:
        await human.close()


async def test_bad_waits_are_refused_and_change_nothing(team):
    alice = await team("alice")
    for wait in (-1, 601):
        error = await refused(alice["client"].call("reservations.acquire", paths=["x"], wait=wait))
        assert error.code == ErrorCode.INVALID_PARAMS
    assert (await alice["client"].call("reservations.list"))["count"] == 0


async def test_over_http_the_wait_is_a_long_request(hub, team):
    alice = await team("alice")
    bob = await team("bob", connect=False)
    await alice["client"].call("reservations.acquire", paths=["api.py"])
    headers = {"Authorization": f"Bearer {bob['api_key']}"}
    async with httpx.AsyncClient(base_url=hub.http_url, headers=headers, timeout=30) as http:
        request = asyncio.create_task(
            http.post("/v1/reservations", json={"paths": ["api.py"], "wait": 20})
        )
        await alice["client"].next_event("reservation.queued")
        await alice["client"].call("reservations.release", paths=["api.py"])
        response = await request
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "granted" and body["granted"][0]["path"] == "api.py"


# -- retry-safe writes ----------------------------------------------------------------


async def test_a_repeated_key_returns_the_first_answer_and_changes_nothing(team):
    alice, bob = await team("alice"), await team("bob")
    a = alice["client"]
    first = await a.call("mail.send", to=["bob"], body="once", idempotency_key="k-mail-1")
    again = await a.call("mail.send", to=["bob"], body="once", idempotency_key="k-mail-1")
    assert again == first
    inbox = await bob["client"].call("mail.inbox")
    assert [m["body"] for m in inbox["messages"]] == ["once"]

    other = await refused(a.call("mail.send", to=["bob"], body="twice", idempotency_key="k-mail-1"))
    assert other.code == ErrorCode.INVALID_PARAMS

    acquired = await a.call("reservations.acquire", paths=["f.py"], idempotency_key="k-res")
    await a.call("reservations.release", paths=["f.py"])
    replay = await a.call("reservations.acquire", paths=["f.py"], idempotency_key="k-res")
    assert replay == acquired
    assert (await a.call("reservations.list"))["count"] == 0  # not granted again

    sent = await a.call("chat.send", to=["bob"], body="hi", idempotency_key="k-chat")
    assert await a.call("chat.send", to=["bob"], body="hi", idempotency_key="k-chat") == sent
    history = await a.call("chat.history", session_id=sent["session_id"])
    assert [m["body"] for m in history["messages"]] == ["hi"]


async def test_a_repeated_escalation_is_created_once(team):
    alice, bob = await team("alice"), await team("bob")
    a, b = alice["client"], bob["client"]
    asked = {"subject": "Which API?", "situation": "v1 or v2?", "bead_id": "bd-1"}
    first = await a.call("escalations.create", **asked, idempotency_key="k-esc")
    again = await a.call("escalations.create", **asked, idempotency_key="k-esc")
    assert again == first
    created = await b.next_event("escalation.created")
    assert created["data"]["escalation_id"] == first["escalation_id"]

    other = await refused(
        a.call("escalations.create", **{**asked, "subject": "Other?"}, idempotency_key="k-esc")
    )
    assert other.code == ErrorCode.INVALID_PARAMS
    mine = await a.call("escalations.list", mine=True)
    assert [e["escalation_id"] for e in mine["escalations"]] == [first["escalation_id"]]
    # The next escalation bob hears of is a new one: the repeats announced nothing.
    marker = await a.call("escalations.create", subject="Marker", situation="-")
    created = await b.next_event("escalation.created")
    assert created["data"]["escalation_id"] == marker["escalation_id"]


async def test_a_repeated_ack_returns_the_first_answer_and_changes_nothing(team):
    alice, bob = await team("alice"), await team("bob")
    a, b = alice["client"], bob["client"]
    one = await a.call("mail.send", to=["bob"], body="one")
    two = await a.call("mail.send", to=["bob"], body="two")
    first = await b.call("mail.ack", message_ids=[one["message_id"]], idempotency_key="k-ack")
    again = await b.call("mail.ack", message_ids=[one["message_id"]], idempotency_key="k-ack")
    assert again == first and first["count"] == 1
    read = await a.next_event("mail.read")
    assert [m["message_id"] for m in read["data"]["messages"]] == [one["message_id"]]

    other = await refused(
        b.call("mail.ack", message_ids=[two["message_id"]], idempotency_key="k-ack")
    )
    assert other.code == ErrorCode.INVALID_PARAMS
    unread = await b.call("mail.inbox", unread_only=True)
    assert [m["message_id"] for m in unread["messages"]] == [two["message_id"]]
    # The next receipt alice gets is for `two`: the repeat sent none for `one`.
    await b.call("mail.ack", message_ids=[two["message_id"]])
    read = await a.next_event("mail.read")
    assert [m["message_id"] for m in read["data"]["messages"]] == [two["message_id"]]


async def test_concurrent_repeats_of_one_key_make_one_change(team):
    alice, bob = await team("alice"), await team("bob")
    answers = await asyncio.gather(
        *(
            alice["client"].call("mail.send", to=["bob"], body="race", idempotency_key="k-race")
            for _ in range(8)
        )
    )
    assert len({a["message_id"] for a in answers}) == 1
    assert (await bob["client"].call("mail.inbox"))["count"] == 1


async def test_the_http_shim_takes_an_idempotency_key_header(hub, team):
    alice = await team("alice", connect=False)
    bob = await team("bob")
    headers = {"Authorization": f"Bearer {alice['api_key']}", "Idempotency-Key": "http-1"}
    body = {"to_alias": "bob", "body": "over http"}
    async with httpx.AsyncClient(base_url=hub.http_url, headers=headers) as http:
        first = await http.post("/v1/messages", json=body)
        second = await http.post("/v1/messages", json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()
    assert (await bob["client"].call("mail.inbox"))["count"] == 1


async def test_the_client_sends_a_write_again_with_its_key_after_a_reconnect(hub, team):
    alice, bob = await team("alice", connect=False), await team("bob")
    b = bob["client"]
    await b.call("reservations.acquire", paths=["shared.py"])
    async with HubClient(hub.ws_url, alice["api_key"], retry_writes=True) as a:
        call = asyncio.create_task(
            a.call("reservations.acquire", paths=["shared.py"], wait=30, idempotency_key="k-1")
        )
        await b.next_event("reservation.queued", where=lambda e: e["data"]["alias"] == "alice")
        assert a._ws is not None
        a._ws.transport.abort()  # the connection drops while the call waits
        left = await b.next_event("reservation.dequeued")
        assert left["data"]["why"] == "left"
        # Reconnected, the client sent the call again (same key): back in line.
        await b.next_event("reservation.queued", where=lambda e: e["data"]["alias"] == "alice")
        await b.call("reservations.release", paths=["shared.py"])
        result = await asyncio.wait_for(call, 20)
        assert result["status"] == "granted" and a.connections == 2
        await a.call("reservations.release", paths=["shared.py"])
        # The same key again: the first answer, and nothing granted anew.
        again = await a.call(
            "reservations.acquire", paths=["shared.py"], wait=30, idempotency_key="k-1"
        )
        assert again == result
        assert (await b.call("reservations.list"))["count"] == 0
