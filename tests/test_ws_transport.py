"""The WebSocket transport under load it cannot write at once: a client that
reads slowly still gets every frame, in order; one that falls too far
behind is closed with 1013 and resumes from its cursor. And the hub works
the same under a plain ASGI WebSocket server, without the shortcut that
``beadhub serve`` uses (hub.transport.ws_protocol)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.transport import ws as ws_transport
from hub.transport.ws_protocol import DirectWebSocketProtocol
from protocol.client import HubClient
from tests.support import RunningHub, onboard, running_hub

MAILS = 300
SENDERS = 4


@pytest.fixture(scope="module")
async def plain_server(database_url: str) -> AsyncIterator[RunningHub]:
    """The hub under uvicorn's own sans-I/O WebSocket protocol."""
    async with running_hub(
        server_options={"ws": "websockets-sansio"}, database_url=database_url, bus_url="memory://"
    ) as server:
        yield server


def _server_side(server: RunningHub, ws: ClientConnection) -> DirectWebSocketProtocol:
    """The hub's protocol object for this client's connection."""
    local = ws.transport.get_extra_info("sockname")[:2]
    for protocol in server.server.server_state.connections:
        if isinstance(protocol, DirectWebSocketProtocol) and protocol.client == local:
            return protocol
    raise AssertionError("no such connection on the hub")


def _throttle(server: RunningHub, ws: ClientConnection) -> DirectWebSocketProtocol:
    """Small socket buffers at both ends, so a client that stops reading
    holds the hub's writes back after a few frames instead of megabytes."""
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    protocol = _server_side(server, ws)
    sock = protocol.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    protocol.transport.set_write_buffer_limits(high=1024)
    return protocol


async def _send_mails(sender: HubClient, to: str, count: int) -> None:
    for i in range(count):
        await sender.call("mail.send", to=[to], subject=f"m{i}", body="x" * 200)


async def _mail_subjects(ws: ClientConnection, count: int) -> list[str]:
    """Subjects of the next ``count`` mail events, or of those read before
    the socket closed (the exception then carries what was read)."""
    subjects: list[str] = []
    try:
        while len(subjects) < count:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if message.get("method") == "event" and message["params"]["type"] == "mail":
                subjects.append(message["params"]["data"]["subject"])
    except ConnectionClosed as exc:
        exc.add_note(repr(subjects))
        raise
    return subjects


async def _pair(server: RunningHub, slug: str) -> tuple[dict[str, Any], HubClient]:
    reader = await onboard(server.http_url, slug, "reader")
    writer = await onboard(server.http_url, slug, "writer")
    return reader, await HubClient(server.ws_url, writer["api_key"], reconnect=False).connect()


def _headers(agent: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {agent['api_key']}"}


async def test_a_slow_reader_gets_every_frame_in_order(hub_server, slug):
    reader = await onboard(hub_server.http_url, slug, "reader")
    senders = []
    for k in range(SENDERS):
        agent = await onboard(hub_server.http_url, slug, f"writer{k}")
        senders.append(await HubClient(hub_server.ws_url, agent["api_key"]).connect())
    each = MAILS // SENDERS
    # max_queue=1: the client library stops reading from the socket as
    # soon as one frame waits for recv().
    async with connect(
        hub_server.ws_url + "/v1/ws", additional_headers=_headers(reader), max_queue=1
    ) as ws:
        protocol = _throttle(hub_server, ws)
        held_back = 0
        paused = asyncio.Event()
        pause_writing = protocol.pause_writing

        def count_pauses() -> None:
            # The transport calls this when its buffer passes the high mark.
            nonlocal held_back
            held_back += 1
            paused.set()
            pause_writing()

        protocol.pause_writing = count_pauses  # type: ignore[method-assign]
        subjects: list[str] = []

        async def send(k: int) -> None:
            for i in range(each):
                await senders[k].call(
                    "mail.send", to=["reader"], subject=f"{k}-{i}", body="x" * 200
                )

        async def read_in_bursts() -> None:
            # Read nothing until the hub has had to hold its writes back
            # (however fast or slow this machine is), then stop now and
            # then, so writes are held back and released again while new
            # frames keep coming.
            await asyncio.wait_for(paused.wait(), 60)
            while len(subjects) < each * SENDERS:
                subjects.extend(await _mail_subjects(ws, min(25, each * SENDERS - len(subjects))))
                await asyncio.sleep(0.05)

        await asyncio.gather(read_in_bursts(), *(send(k) for k in range(SENDERS)))
    for sender in senders:
        await sender.close()
    # Each sender's mails arrive in the order it sent them, none missing.
    for k in range(SENDERS):
        assert [s for s in subjects if s.startswith(f"{k}-")] == [f"{k}-{i}" for i in range(each)]
    assert len(subjects) == each * SENDERS
    # The hub did have to hold frames back (else this proved nothing).
    assert held_back > 0


async def test_a_reader_too_far_behind_is_closed_with_1013_and_resumes(
    hub_server, slug, monkeypatch
):
    monkeypatch.setattr(ws_transport, "MAX_QUEUED", 20)
    reader, sender = await _pair(hub_server, slug)
    ws = await connect(
        hub_server.ws_url + "/v1/ws", additional_headers=_headers(reader), max_queue=1
    )
    _throttle(hub_server, ws)
    await _send_mails(sender, "reader", MAILS)
    cursor = None
    subjects: list[str] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if message.get("method") == "event" and message["params"]["type"] == "mail":
                subjects.append(message["params"]["data"]["subject"])
                cursor = int(message["params"]["cursor"])
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    # What arrived before the close is the start of the stream, in order,
    # and far from all of it.
    assert subjects == [f"m{i}" for i in range(len(subjects))]
    assert 0 < len(subjects) < MAILS
    # Resuming from the last cursor seen delivers the rest (a replay may
    # repeat events from just before the cursor; HubClient, which keeps
    # their ids, would drop those).
    resumed = HubClient(hub_server.ws_url, reader["api_key"], cursor=cursor, reconnect=False)
    await resumed.connect()
    rest: list[str] = []
    while rest[-1:] != [f"m{MAILS - 1}"]:
        rest.append((await resumed.next_event("mail", timeout=5))["data"]["subject"])
    await resumed.close()
    await sender.close()
    new = [subject for subject in rest if subject not in set(subjects)]
    assert subjects + new == [f"m{i}" for i in range(MAILS)]


async def test_the_shortcut_is_in_use_under_beadhub_serve_config(hub_server, join, connect):
    client = await connect(await join("alice"))
    await client.call("session.ping")
    direct = [
        protocol
        for protocol in hub_server.server.server_state.connections
        if isinstance(protocol, DirectWebSocketProtocol) and protocol.on_message is not None
    ]
    assert direct


async def test_sessions_work_under_a_plain_asgi_websocket_server(plain_server, slug):
    reader, sender = await _pair(plain_server, slug)
    client = await HubClient(plain_server.ws_url, reader["api_key"], reconnect=False).connect()
    me = await client.call("session.whoami")
    assert me["alias"] == "reader"
    assert plain_server.server.server_state.connections
    assert not any(
        isinstance(protocol, DirectWebSocketProtocol)
        for protocol in plain_server.server.server_state.connections
    )
    await _send_mails(sender, "reader", 20)
    subjects = [(await client.next_event("mail", timeout=5))["data"]["subject"] for _ in range(20)]
    assert subjects == [f"m{i}" for i in range(20)]
    await client.close()
    await sender.close()


async def test_a_frame_never_overtakes_frames_still_waiting(hub_server, slug):
    # Deterministic form of the race the slow-reader test can only
    # sample: the transport resumes, and in the same loop turn a new frame
    # is sent before the writer task has written the ones that waited.
    reader = await onboard(hub_server.http_url, slug, "reader")
    async with connect(hub_server.ws_url + "/v1/ws", additional_headers=_headers(reader)) as ws:
        await ws.send('{"jsonrpc": "2.0", "id": 1, "method": "session.ping"}')
        while orjson.loads(await asyncio.wait_for(ws.recv(), 5)).get("id") != 1:
            pass  # events before the answer
        protocol = _server_side(hub_server, ws)
        assert protocol.on_message is not None
        session = protocol.on_message.__self__  # type: ignore[attr-defined]
        protocol.pause_writing()
        session.send('{"n": 1}')
        session.send('{"n": 2}')
        protocol.resume_writing()
        session.send('{"n": 3}')
        received: list[int] = []
        while len(received) < 3:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if "n" in frame:
                received.append(frame["n"])
    assert received == [1, 2, 3]
