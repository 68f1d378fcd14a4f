"""Seeded fuzzing of every JSON-RPC method (over a WebSocket) and every
HTTP route (the shim): no input gets an internal error, a refused call
writes nothing, and the hub logs no traceback. A few seconds each in
``make test``; ``make fuzz`` runs them for minutes (tests/fuzzing.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.frames import Opcode

from hub.transport.http import api
from protocol.errors import ErrorCode
from protocol.methods import CATALOGUE
from tests import fuzzing
from tests.rawws import RawSocket
from tests.support import onboard, unique

pytestmark = pytest.mark.timeout(int(fuzzing.SECONDS * 4) + 120)

#: Would end the fuzzer's own session or project, or wait by design.
SKIPPED_ROUTES = {("GET", "/v1/chat/sessions/{session_id}/stream"), ("GET", "/metrics")}


async def _team(hub_server: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    slug = unique("fuzz")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    known: dict[str, list[Any]] = {
        "to": [["bob"], ["alice", "bob"]],
        "alias": ["alice", "bob"],
        "holder_alias": ["bob"],
        "agent_id": [bob["agent_id"]],
        "workspace_id": [alice["agent_id"], bob["agent_id"]],
        "project_slug": [slug],
        "slug": [slug],
    }
    return alice, bob, known


async def _answer(ws: Any, request_id: int | None) -> dict[str, Any]:
    """The response to ``request_id`` (None: the next one), skipping events."""
    async with asyncio.timeout(15):
        while True:
            message = orjson.loads(await ws.recv())
            if "method" in message:
                continue
            if request_id is None or message.get("id") == request_id:
                return message  # type: ignore[no-any-return]


def _no_tracebacks(caplog: pytest.LogCaptureFixture, calls: int) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks[:5]]
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(noisy) <= calls, [r.getMessage() for r in noisy[:5]]


async def test_no_params_give_an_internal_error_and_refusals_write_nothing(
    hub_server, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    alice, _bob, known = await _team(hub_server)
    gen = fuzzing.Generator(fuzzing.SEED, known)
    schemas = {name: model.model_json_schema() for name, model in CATALOGUE.items()}
    # Rotating or revoking its own key ends the fuzzer's session (4001), as
    # it should: tests/test_identity.py covers those two.
    names = sorted(set(schemas) - {"keys.rotate", "keys.revoke"})
    pool = hub_server.hub.store.pool
    calls = refused = 0
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    async with (
        pool.acquire() as conn,
        websockets.connect(f"{hub_server.ws_url}/v1/ws", additional_headers=headers) as ws,
    ):
        tables = await fuzzing.project_tables(conn)
        deadline = time.monotonic() + fuzzing.SECONDS
        while time.monotonic() < deadline:
            name = gen.rnd.choice(names)
            params = gen.params(schemas[name])
            before = await fuzzing.fingerprint(conn, tables, alice["project_id"])
            calls += 1
            # The stdlib encoder: orjson refuses the integers being tested.
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": calls, "method": name, "params": params})
            )
            answer = await _answer(ws, calls)
            where = f"seed {fuzzing.SEED}: {name} {params!r:.300}"
            if "error" in answer:
                assert answer["error"]["code"] != ErrorCode.INTERNAL_ERROR, where
                refused += 1
                after = await fuzzing.fingerprint(conn, tables, alice["project_id"])
                assert after == before, f"refused {where} changed {answer['error']}"
        # The session is still healthy.
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "session.ping"}))
        assert (await _answer(ws, 0))["result"] == {"pong": True}
    assert calls > 20 and refused > 5, (calls, refused)
    _no_tracebacks(caplog, calls)


RAW_FRAMES: list[str | bytes] = [
    "",
    "{",
    "[]",
    "[1, 2]",
    "null",
    '"text"',
    '{"jsonrpc": "2.0"}',
    '{"jsonrpc": "2.0", "id": 1, "method": 7}',
    '{"jsonrpc": "2.0", "id": {"x": 1}, "method": "session.ping"}',
    '{"jsonrpc": "2.0", "id": 99999999999999999999999, "method": "session.ping"}',
    '{"jsonrpc": "2.0", "id": 1, "method": "session.ping", "params": [1]}',
    '{"jsonrpc": "2.0", "id": 1, "method": "mail.send", '
    '"params": {"to": ["b"], "body": "\\u0000"}}',
    '{"jsonrpc": "2.0", "id": 1, "method": "mail.inbox", "params": {"limit": 1e400}}',
    '{"jsonrpc": "2.0", "id": 1, "method": "x\\u0000", "params": {}}',
    '{"jsonrpc": "2.0", "id": "\\ud800", "method": "session.ping"}',
    b"\xff\xfe\xfd",
    b'{"jsonrpc": "2.0", "id": 1, "method": "session.ping", "params": {"a": "\xc3\x28"}}',
    b"\x00" * 10,
]


async def test_malformed_frames_get_errors_and_keep_the_socket(
    hub_server, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    alice, _bob, _known = await _team(hub_server)
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    async with websockets.connect(f"{hub_server.ws_url}/v1/ws", additional_headers=headers) as ws:
        for frame in RAW_FRAMES:
            await ws.send(frame)
            answer = await _answer(ws, None)
            assert "error" in answer, (frame, answer)
            assert answer["error"]["code"] != ErrorCode.INTERNAL_ERROR, (frame, answer)
        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 5, "method": "session.ping"}).decode())
        assert (await _answer(ws, 5))["result"] == {"pong": True}
    _no_tracebacks(caplog, len(RAW_FRAMES))


def _route_path(gen: fuzzing.Generator, path: str, known: dict[str, list[Any]]) -> str:
    def fill(part: str) -> str:
        if not part.startswith("{"):
            return part
        value = gen.rnd.choice(
            [*known.get("workspace_id", []), str(gen.nasty()), "x", "%00", "..", ""]
        )
        return urllib.parse.quote(str(value)[:1000], safe="%")

    return "/".join(fill(p) for p in path.split("/"))


async def test_no_http_input_gets_a_server_error_and_refusals_write_nothing(
    hub_server, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    alice, _bob, known = await _team(hub_server)
    gen = fuzzing.Generator(fuzzing.SEED + 1, known)
    ops = [op for op in api.operations if (op.method, op.path) not in SKIPPED_ROUTES]
    pool = hub_server.hub.store.pool
    calls = refused = 0
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    async with (
        pool.acquire() as conn,
        httpx.AsyncClient(base_url=hub_server.http_url, headers=headers, timeout=15) as http,
    ):
        tables = await fuzzing.project_tables(conn)
        deadline = time.monotonic() + fuzzing.SECONDS
        while time.monotonic() < deadline:
            op = gen.rnd.choice(ops)
            path = _route_path(gen, op.path, known)
            if path.rstrip("/").endswith(alice["project_id"]):
                continue
            query = None
            if op.query is not None:
                query = {
                    k: str(v)[:2000] for k, v in gen.params(op.query.model_json_schema()).items()
                }
            body = None
            if op.bodies:
                body = gen.params(gen.rnd.choice(op.bodies).model_json_schema())
            before = await fuzzing.fingerprint(conn, tables, alice["project_id"])
            calls += 1
            answer = await http.request(
                op.method,
                path,
                params=query,
                content=json.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
            where = f"seed {fuzzing.SEED}: {op.method} {path} {query} {body!r:.300}"
            assert answer.status_code < 500, f"{where} -> {answer.status_code} {answer.text}"
            if answer.status_code >= 400:
                refused += 1
                assert answer.headers["content-type"].startswith("application/json"), where
                after = await fuzzing.fingerprint(conn, tables, alice["project_id"])
                assert after == before, f"refused {where} changed something"
    assert calls > 20 and refused > 5, (calls, refused)
    _no_tracebacks(caplog, calls)


@pytest.mark.parametrize("when", ["first frame", "after requests"])
async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_one_line(
    hub_server, caplog: pytest.LogCaptureFixture, when: str
):
    caplog.set_level(logging.INFO)
    alice, _bob, _known = await _team(hub_server)
    raw = await RawSocket.connect(
        f"{hub_server.ws_url}/v1/ws", {"Authorization": f"Bearer {alice['api_key']}"}
    )
    try:
        if when == "after requests":
            await raw.send_frame(Opcode.TEXT, b'{"jsonrpc":"2.0","id":1,"method":"session.ping"}')
        caplog.clear()
        await raw.send_frame(Opcode.TEXT, b'{"jsonrpc":"2.0","id":2,"method":"\xc3\x28"}')
        frames, code = await raw.frames_until_close(10)
    finally:
        raw.close()
    assert code == 1007
    assert all(b'"id":2' not in f.data for f in frames)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "UTF-8" in lines[0].getMessage(), [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)
