"""Resume without loss: a client that reconnects with its last cursor gets
what it missed from the store, then the live stream, each event once."""

from __future__ import annotations

import asyncio

from protocol.client import HubClient


async def test_reconnect_with_cursor_replays_what_was_missed(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    a = await HubClient(hub_server.ws_url, alice["api_key"], reconnect=False).connect()
    await b.call("presence.update", focus="warming up")
    await a.next_event("presence", where=lambda e: e["data"]["focus"] == "warming up")
    cursor = a.cursor
    await a.close()

    for n in range(5):
        await b.call("presence.update", focus=f"step {n}")

    # A fresh client may also be handed a few events from just before its
    # cursor (late-commit window); they carry the ids it saw them with.
    resumed = await connect(alice, cursor=cursor)
    seen = [
        (
            await resumed.next_event(
                "presence", where=lambda e: e["data"]["focus"].startswith("step")
            )
        )
        for _ in range(5)
    ]
    assert [e["data"]["focus"] for e in seen] == [f"step {n}" for n in range(5)]
    assert [int(e["cursor"]) for e in seen] == sorted(int(e["cursor"]) for e in seen)
    assert all(int(e["cursor"]) > cursor for e in seen)

    # Live events follow the replay on the same socket.
    await b.call("presence.update", focus="live")
    live = await resumed.next_event("presence", where=lambda e: e["data"]["focus"] == "live")
    assert live["data"]["focus"] == "live"


async def test_events_during_replay_are_neither_lost_nor_doubled(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    a = await HubClient(hub_server.ws_url, alice["api_key"], reconnect=False).connect()
    await a.call("session.whoami")
    start = a.cursor or 0
    await a.close()

    async def chatter() -> None:
        for n in range(40):
            await b.call("presence.update", focus=f"n{n}")

    writer = asyncio.create_task(chatter())
    await asyncio.sleep(0)  # let some updates land before the reconnect
    resumed = await connect(alice, cursor=start)
    await writer
    focuses = []
    while len(focuses) < 40:
        event = await resumed.next_event(
            "presence", where=lambda e: e["data"]["focus"].startswith("n")
        )
        focuses.append(event["data"]["focus"])
    assert focuses == [f"n{n}" for n in range(40)]


async def test_the_raw_stream_repeats_nothing_unrecognisable(join, hub_server):
    """Without the client's de-duplication, every event has an id and any
    repeat carries the same id."""
    import orjson
    import websockets

    alice, bob = await join("alice"), await join("bob")
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        for n in range(3):
            await b.call("presence.update", focus=f"x{n}")
        async with websockets.connect(
            hub_server.ws_url + "/v1/ws?cursor=0",
            additional_headers={"Authorization": f"Bearer {alice['api_key']}"},
        ) as ws:
            frames = []
            while len([f for f in frames if f["data"].get("focus", "").startswith("x")]) < 3:
                frames.append(orjson.loads(await ws.recv())["params"])
    ids = [f["id"] for f in frames]
    by_id = {f["id"]: f for f in frames}
    assert all(ids) and len(by_id) <= len(ids)
    assert [
        f["data"]["focus"] for f in by_id.values() if f["data"].get("focus", "").startswith("x")
    ] == [
        "x0",
        "x1",
        "x2",
    ]


async def test_events_since_reads_the_log(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    await b.call("presence.update", focus="one")
    await a.next_event("presence", where=lambda e: e["data"]["focus"] == "one")
    page = await a.call("events.since", cursor=0, limit=1000)
    types = [e["type"] for e in page["events"]]
    assert "agent.registered" in types and "presence" in types
    cursors = [int(e["cursor"]) for e in page["events"]]
    assert cursors == sorted(cursors)
