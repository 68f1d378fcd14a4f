"""Rate limits and session caps (docs/security.md, "Limits"): refusals are
RATE_LIMITED with Retry-After, counted per client address or per key, and
held across instances when the bus is Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from hub.config import SettingError, Settings
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import REDIS_URL, RunningHub, onboard, running_hub, unique


@contextlib.asynccontextmanager
async def limited_hub(database_url: str, **limits: Any) -> AsyncIterator[RunningHub]:
    async with running_hub(database_url=database_url, bus_url="memory://", **limits) as server:
        yield server


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == ErrorCode.RATE_LIMITED
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["data"]["retry_after"] == retry_after


async def init(server: RunningHub, slug: str, alias: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await http.post(
            "/v1/init",
            json={"project_slug": slug, "alias": alias, "repo_origin": "git@x:a/b.git"},
        )


async def test_onboarding_is_rate_limited_per_address_and_creates_nothing_past_it(
    database_url: str,
):
    async with limited_hub(database_url, rate_onboarding_per_minute=3) as server:
        slug = unique("proj")
        for n in range(3):
            assert (await init(server, slug, f"a{n}")).status_code == 200
        refused = await init(server, unique("proj"), "late")
        assert_rate_limited(refused)
        # Nothing was created by the refused call.
        async with server.hub.store.pool.acquire() as conn:
            agents = await conn.fetchval(
                "SELECT count(*) FROM agents a JOIN projects p ON p.id = a.project_id "
                "WHERE p.slug = $1",
                slug,
            )
        assert agents == 3


async def test_onboarding_limit_holds_across_instances_on_redis(database_url: str):
    prefix = unique("beadhub-limits")
    common = {
        "database_url": database_url,
        "bus_url": REDIS_URL,
        "bus_prefix": prefix,
        "rate_onboarding_per_minute": 4,
    }
    async with running_hub(**common) as one, running_hub(**common) as two:
        slug = unique("proj")
        assert (await init(one, slug, "a1")).status_code == 200
        assert (await init(two, slug, "a2")).status_code == 200
        assert (await init(one, slug, "a3")).status_code == 200
        assert (await init(two, slug, "a4")).status_code == 200
        assert_rate_limited(await init(one, slug, "a5"))
        assert_rate_limited(await init(two, slug, "a6"))


async def test_refused_keys_lock_the_address_out_even_with_a_good_key(database_url: str):
    async with limited_hub(database_url, rate_auth_failures_per_minute=3) as server:
        agent = await onboard(server.http_url, unique("proj"), "alice")
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            good = {"Authorization": f"Bearer {agent['api_key']}"}
            assert (await http.get("/v1/status", headers=good)).status_code == 200
            for _ in range(3):
                bad = await http.get("/v1/status", headers={"Authorization": "Bearer bh_nope"})
                assert bad.status_code == 401
            assert_rate_limited(await http.get("/v1/status", headers=good))
        # The socket handshake counts the same refusals.
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(
                f"{server.ws_url}/v1/ws", additional_headers=good, open_timeout=5
            ):
                pass
        assert caught.value.response.status_code == 429
        assert caught.value.response.headers["retry-after"]


async def test_each_key_has_its_own_allowance(database_url: str):
    async with limited_hub(database_url, rate_key_per_minute=5) as server:
        slug = unique("proj")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            as_alice = {"Authorization": f"Bearer {alice['api_key']}"}
            as_bob = {"Authorization": f"Bearer {bob['api_key']}"}
            for _ in range(5):
                assert (await http.get("/v1/status", headers=as_alice)).status_code == 200
            assert_rate_limited(await http.get("/v1/status", headers=as_alice))
            assert (await http.get("/v1/status", headers=as_bob)).status_code == 200


async def test_unauthenticated_routes_share_the_anonymous_allowance(database_url: str):
    async with (
        limited_hub(database_url, rate_anonymous_per_minute=2) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        for _ in range(2):
            answer = await http.post("/v1/auth/ticket", json={"api_key": "bh_nope"})
            assert answer.status_code == 401
        assert_rate_limited(await http.post("/v1/auth/ticket", json={"api_key": "bh_x"}))
        # Health checks are never limited.
        assert (await http.get("/health")).status_code == 200


async def _connect(server: RunningHub, agent: dict[str, Any]) -> HubClient:
    client = HubClient(server.ws_url, agent["api_key"], reconnect=False)
    await client.connect()
    return client


@pytest.mark.parametrize("bus", ["memory", "redis"])
async def test_an_agent_holds_at_most_its_cap_of_sessions(database_url: str, bus: str):
    options: dict[str, Any] = {"database_url": database_url, "max_sessions_per_agent": 2}
    if bus == "redis":
        options.update(bus_url=REDIS_URL, bus_prefix=unique("beadhub-cap"))
    async with running_hub(**options) as one, running_hub(**options) as two:
        slug = unique("proj")
        alice = await onboard(one.http_url, slug, "alice")
        bob = await onboard(one.http_url, slug, "bob")
        first = await _connect(one, alice)
        # On Redis the cap counts both instances' sessions.
        second = await _connect(two if bus == "redis" else one, alice)
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(
                f"{one.ws_url}/v1/ws",
                additional_headers={"Authorization": f"Bearer {alice['api_key']}"},
                open_timeout=5,
            ):
                pass
        response = caught.value.response
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert b'"code":-32029' in response.body.replace(b" ", b"")
        # Another agent is not affected, and a closed session frees a slot.
        other = await _connect(one, bob)
        await first.close()
        third = await _connect(one, alice)
        assert (await third.call("session.whoami"))["alias"] == "alice"
        for client in (second, other, third):
            await client.close()


async def test_sessions_opened_per_key_are_rate_limited(database_url: str):
    async with limited_hub(database_url, rate_sessions_per_minute=2) as server:
        alice = await onboard(server.http_url, unique("proj"), "alice")
        for _ in range(2):
            client = await _connect(server, alice)
            await client.close()
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(
                f"{server.ws_url}/v1/ws",
                additional_headers={"Authorization": f"Bearer {alice['api_key']}"},
                open_timeout=5,
            ):
                pass
        assert caught.value.response.status_code == 429


async def test_refused_keys_at_the_ticket_route_count_against_the_address(database_url: str):
    async with (
        limited_hub(database_url, rate_auth_failures_per_minute=2) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        agent = await onboard(server.http_url, unique("proj"), "alice")
        for _ in range(2):
            answer = await http.post("/v1/auth/ticket", json={"api_key": "bh_guess"})
            assert answer.status_code == 401
        # Even the right key is not looked at until the window ends.
        assert_rate_limited(await http.post("/v1/auth/ticket", json={"api_key": agent["api_key"]}))


# -- calls per key on one instance (limits.spend_call) ------------------------------------


async def _mails_of(server: RunningHub, slug: str) -> int:
    async with server.hub.store.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM mail_messages m JOIN projects p ON p.id = m.project_id "
                "WHERE p.slug = $1",
                slug,
            )
        )


async def test_a_burst_of_calls_past_the_keys_allowance_is_refused_and_does_nothing(
    database_url: str,
):
    burst = 5
    async with limited_hub(
        database_url, rate_calls_burst=burst, rate_calls_per_second=0.5
    ) as server:
        slug = unique("proj")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        # Two sessions of one key share its allowance.
        first, second = await _connect(server, alice), await _connect(server, alice)
        sends = [
            (first if n % 2 else second).call(
                "mail.send", to=["bob"], subject="hi", body=f"message {n}"
            )
            for n in range(burst + 3)
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, RpcError)]
        sent = [o for o in outcomes if isinstance(o, dict)]
        assert len(refused) + len(sent) == burst + 3, outcomes
        assert refused and len(sent) <= burst
        for error in refused:
            assert error.code == ErrorCode.RATE_LIMITED
            assert error.data["retry_after"] >= 1
        # Only the calls answered were carried out.
        assert await _mails_of(server, slug) == len(sent)
        # Another key is not affected.
        as_bob = await _connect(server, bob)
        assert (await as_bob.call("session.whoami"))["alias"] == "bob"
        # The sessions stayed open: after retry_after, alice calls again.
        await asyncio.sleep(max(e.data["retry_after"] for e in refused))
        await first.call("mail.send", to=["bob"], subject="again", body="later")
        assert await _mails_of(server, slug) == len(sent) + 1
        for client in (first, second, as_bob):
            await client.close()


def _mcp_list(api_key: str) -> dict[str, Any]:
    return {
        "url": "/mcp",
        "json": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, text/event-stream",
        },
    }


async def test_mcp_requests_spend_the_same_allowance(database_url: str):
    async with (
        limited_hub(database_url, rate_calls_burst=3, rate_calls_per_second=0.1) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        slug = unique("proj")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        # One WebSocket call and two /mcp requests empty alice's bucket.
        client = await _connect(server, alice)
        await client.call("session.whoami")
        for _ in range(2):
            assert (await http.post(**_mcp_list(alice["api_key"]))).status_code == 200
        assert_rate_limited(await http.post(**_mcp_list(alice["api_key"])))
        assert (await http.post(**_mcp_list(bob["api_key"]))).status_code == 200
        with pytest.raises(RpcError) as caught:
            await client.call("session.whoami")
        assert caught.value.code == ErrorCode.RATE_LIMITED
        await client.close()


async def test_refused_keys_at_mcp_count_against_the_address(database_url: str):
    async with (
        limited_hub(database_url, rate_auth_failures_per_minute=2) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        agent = await onboard(server.http_url, unique("proj"), "alice")
        for _ in range(2):
            assert (await http.post(**_mcp_list("aw_sk_guess"))).status_code == 401
        assert_rate_limited(await http.post(**_mcp_list(agent["api_key"])))


def test_call_allowance_settings_parse_and_refuse_nonsense(monkeypatch: pytest.MonkeyPatch):
    defaults = Settings.from_env()
    assert (defaults.rate_calls_burst, defaults.rate_calls_per_second) == (5000, 500.0)
    monkeypatch.setenv("BEADHUB_RATE_CALLS_BURST", "40")
    monkeypatch.setenv("BEADHUB_RATE_CALLS_PER_SECOND", "2.5")
    settings = Settings.from_env()
    assert (settings.rate_calls_burst, settings.rate_calls_per_second) == (40, 2.5)
    for name, value in (
        ("BEADHUB_RATE_CALLS_BURST", "0"),
        ("BEADHUB_RATE_CALLS_PER_SECOND", "0"),
        ("BEADHUB_RATE_CALLS_PER_SECOND", "lots"),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(SettingError, match=name):
                Settings.from_env()
