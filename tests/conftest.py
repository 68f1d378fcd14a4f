"""Fixtures: a throwaway database on the real PostgreSQL, a key prefix on
the real Redis, and real hub servers (memory bus and Redis bus) on free
loopback ports, shared by the whole run. Tests isolate themselves by
creating their own project (a unique slug), as tenants would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from protocol.client import HubClient
from tests.support import (
    REDIS_URL,
    RunningHub,
    create_database,
    drop_database,
    onboard,
    running_hub,
    unique,
)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    dsn = await create_database()
    yield dsn
    await drop_database(dsn)


@pytest.fixture(scope="session")
def bus_prefix() -> str:
    return "beadhub-test-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
async def hub_server(database_url: str) -> AsyncIterator[RunningHub]:
    async with running_hub(database_url=database_url, bus_url="memory://") as server:
        yield server


@pytest.fixture(scope="session")
async def redis_hub_server(database_url: str, bus_prefix: str) -> AsyncIterator[RunningHub]:
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def any_server(request: pytest.FixtureRequest) -> RunningHub:
    """Runs a test once per bus backend."""
    name = "hub_server" if request.param == "memory" else "redis_hub_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def slug() -> str:
    return unique("proj")


Onboard = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def join(hub_server: RunningHub, slug: str) -> Onboard:
    """``await join("alice")`` onboards an agent into this test's project."""

    async def _join(alias: str | None = None, **kw: Any) -> dict[str, Any]:
        return await onboard(hub_server.http_url, kw.pop("project_slug", slug), alias, **kw)

    return _join


@pytest.fixture
async def connect(hub_server: RunningHub) -> AsyncIterator[Callable[..., Awaitable[HubClient]]]:
    """``await connect(agent)`` opens a WebSocket session; closed after the test."""
    clients: list[HubClient] = []

    async def _connect(
        agent: dict[str, Any], server: RunningHub | None = None, **kw: Any
    ) -> HubClient:
        client = HubClient((server or hub_server).ws_url, agent["api_key"], **kw)
        await client.connect()
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()


@pytest.fixture
async def agent(hub_server: RunningHub, slug: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await agent("alice")`` onboards like bdh does and returns its HTTP
    client (tests/shim.py); closed after the test."""
    from tests.shim import Shim, bdh_agent

    made: list[Shim] = []

    async def _agent(alias: str, project: str | None = None, **extra: Any) -> Shim:
        shim = await bdh_agent(hub_server.http_url, project or slug, alias, **extra)
        made.append(shim)
        return shim

    yield _agent
    for shim in made:
        await shim.close()
