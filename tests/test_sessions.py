"""Agent sessions over a real WebSocket: auth, JSON-RPC envelope, errors."""

from __future__ import annotations

import httpx
import orjson
import pytest

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError


async def test_whoami_answers_the_agent_behind_the_key(join, connect, slug):
    alice = await join("alice", human_name="Juan", role="frontend")
    client = await connect(alice)
    me = await client.call("session.whoami")
    assert me["alias"] == "alice"
    assert me["project_slug"] == slug
    assert me["agent_id"] == alice["agent_id"]
    assert me["human_name"] == "Juan"


async def test_a_bad_key_is_refused_with_401_and_a_json_body(hub_server):
    client = HubClient(hub_server.ws_url, "bh_not-a-key", reconnect=False)
    with pytest.raises(RpcError) as info:
        await client.connect()
    assert info.value.code == ErrorCode.UNAUTHORIZED
    assert "invalid api key" in info.value.message


async def test_a_missing_key_is_refused(hub_server):
    client = HubClient(hub_server.ws_url, None, reconnect=False)
    with pytest.raises(RpcError) as info:
        await client.connect()
    assert info.value.code == ErrorCode.UNAUTHORIZED


async def _reply(ws) -> dict:
    """The next response on a raw socket, skipping pushed events."""
    while True:
        message = orjson.loads(await ws.recv())
        if message.get("method") != "event":
            return message


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", ErrorCode.PARSE_ERROR),
        ("[1, 2]", ErrorCode.INVALID_REQUEST),
        ('{"jsonrpc": "1.0", "id": 1, "method": "session.whoami"}', ErrorCode.INVALID_REQUEST),
        ('{"jsonrpc": "2.0", "id": 1, "method": "no.such"}', ErrorCode.METHOD_NOT_FOUND),
        (
            '{"jsonrpc": "2.0", "id": 1, "method": "presence.update", "params": {"branch": 5}}',
            ErrorCode.INVALID_PARAMS,
        ),
        (
            '{"jsonrpc": "2.0", "id": 1, "method": "presence.update", "params": {"nope": 1}}',
            ErrorCode.INVALID_PARAMS,
        ),
        (
            '{"jsonrpc": "2.0", "id": 1, "method": "presence.list", "params": [1]}',
            ErrorCode.INVALID_PARAMS,
        ),
    ],
)
async def test_bad_frames_get_errors_and_the_socket_stays_usable(join, hub_server, frame, code):
    import websockets

    alice = await join("alice")
    async with websockets.connect(
        hub_server.ws_url + "/v1/ws",
        additional_headers={"Authorization": f"Bearer {alice['api_key']}"},
    ) as ws:
        await ws.send(frame)
        reply = await _reply(ws)
        assert reply["error"]["code"] == code
        assert reply["error"]["message"]
        await ws.send('{"jsonrpc": "2.0", "id": 2, "method": "session.whoami"}')
        reply = await _reply(ws)
        assert reply["result"]["alias"] == "alice"


async def test_bad_params_change_nothing(join, connect):
    alice = await join("alice")
    client = await connect(alice)
    with pytest.raises(RpcError) as info:
        await client.call("presence.update", branch="main", focus=["not", "a", "string"])
    assert info.value.code == ErrorCode.INVALID_PARAMS
    assert "focus" in info.value.message
    me = (await client.call("presence.list"))["agents"][0]
    assert me["branch"] == ""


async def test_an_oversize_request_is_refused_and_the_socket_stays_open(join, connect, hub_server):
    alice = await join("alice")
    client = await connect(alice)
    big = "x" * (hub_server.settings.max_request_bytes + 10)
    with pytest.raises(RpcError) as info:
        await client.call("presence.update", focus=big)
    assert info.value.code == ErrorCode.TOO_LARGE
    assert (await client.call("session.whoami"))["alias"] == "alice"


async def test_health_and_ready_answer_json(hub_server):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "bus": "ok",
        "instance_id": hub_server.settings.instance_id,
    }


async def test_unknown_paths_and_methods_answer_json(hub_server):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        missing = await http.get("/v1/no-such-thing")
        wrong_method = await http.delete("/health")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert wrong_method.status_code == 405 and wrong_method.json()["detail"]
