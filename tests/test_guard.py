"""What the hub refuses before any route runs, and the headers on every
answer (hub/transport/guard.py, docs/security.md)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from protocol.errors import ErrorCode
from tests.support import RunningHub, onboard, running_hub, unique


async def raw_request(server: RunningHub, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer."""
    reader, writer = await asyncio.open_connection(server.settings.host, server.settings.port)
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


async def test_an_unknown_host_is_refused_everywhere(hub_server):
    agent = await onboard(hub_server.http_url, unique("proj"), "alice")
    auth = {"Authorization": f"Bearer {agent['api_key']}"}
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        for path in ("/", "/v1/status", "/health"):
            answer = await http.get(path, headers={**auth, "Host": "evil.example"})
            assert answer.status_code == 421, path
            assert answer.json()["code"] == ErrorCode.FORBIDDEN
        rebound = await http.post(
            "/v1/init", json={"project_slug": "x"}, headers={"Host": "attacker.test:8000"}
        )
        assert rebound.status_code == 421
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            answer = await http.get("/health", headers={"Host": host})
            assert answer.status_code == 200, host
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            f"{hub_server.ws_url}/v1/ws",
            additional_headers={**auth, "Host": "evil.example"},
            open_timeout=5,
        ):
            pass
    assert refused.value.response.status_code == 421


async def test_allowed_hosts_is_a_setting(database_url):
    async with (
        running_hub(database_url=database_url, allowed_hosts=("hub.internal",)) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        assert (await http.get("/health", headers={"Host": "hub.internal"})).status_code == 200
        assert (await http.get("/health")).status_code == 421


async def test_a_post_that_is_not_json_is_refused_and_changes_nothing(hub_server):
    slug = unique("proj")
    body = f'{{"project_slug": "{slug}", "alias": "alice", "repo_origin": "git@x:a/b.git"}}'
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            answer = await http.post("/v1/init", content=body, headers=headers)
            assert answer.status_code == 415, content_type
            assert answer.json()["code"] == ErrorCode.INVALID_REQUEST
        async with hub_server.hub.store.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM projects WHERE slug = $1", slug) == 0
        # bdh's own headers pass.
        answer = await http.post(
            "/v1/init", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert answer.status_code == 200


async def test_every_answer_carries_the_security_headers(hub_server):
    agent = await onboard(hub_server.http_url, unique("proj"), "alice")
    auth = {"Authorization": f"Bearer {agent['api_key']}"}
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        answers = {
            "page": await http.get("/"),
            "api": await http.get("/v1/status", headers=auth),
            "error": await http.get("/v1/status"),
            "missing": await http.get("/v1/nothing-here"),
            "ticket": await http.post("/v1/auth/ticket", json={"api_key": agent["api_key"]}),
        }
    for name, answer in answers.items():
        headers = answer.headers
        assert headers["content-security-policy"] == "frame-ancestors 'none'", name
        assert headers["x-frame-options"] == "DENY", name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] == "no-referrer", name
    for name in ("api", "error", "missing", "ticket"):
        assert answers[name].headers["cache-control"] == "no-store", name
    assert answers["ticket"].status_code == 200
    assert "no-store" not in answers["page"].headers.get("cache-control", "")


async def test_a_body_over_the_bound_is_refused_before_it_is_read(hub_server):
    limit = hub_server.settings.max_request_bytes
    # Content-Length says it all: the answer comes without a byte of body.
    head = (
        b"POST /v1/init HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 536870912\r\n\r\n"
    )
    status, body = await raw_request(hub_server, head)
    assert status == 413 and b"-32013" in body
    # A chunked body is cut off once it passes the bound.
    head = (
        b"POST /v1/init HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 65536
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (limit // len(chunk) + 2)
    status, body = await raw_request(hub_server, head, chunks)
    assert status == 413 and b"-32013" in body


async def test_a_head_over_the_bound_is_refused_with_431(hub_server):
    big = b"X-Big: " + b"a" * (hub_server.settings.max_header_bytes + 1) + b"\r\n"
    status, body = await raw_request(
        hub_server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + big + b"\r\n"
    )
    assert status == 431 and b"-32013" in body
    # Many small headers count together.
    many = b"".join(b"X-H%d: %s\r\n" % (n, b"b" * 100) for n in range(400))
    status, _ = await raw_request(
        hub_server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n"
    )
    assert status == 431
    # A keep-alive connection's second request is bounded as the first.
    ok = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    status, _ = await raw_request(hub_server, ok)
    assert status == 200
