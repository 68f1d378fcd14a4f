"""The laptop shape: ``beadhub serve`` with no database URL runs its own
PostgreSQL in a data directory, and keeps its data across restarts."""

from __future__ import annotations

import os

from protocol.client import HubClient
from tests.support import HubProcess, onboard


async def test_embedded_hub_keeps_agents_across_restarts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    data_dir = tmp_path / "hubdata"
    hub = HubProcess(env=env, args=["--data-dir", str(data_dir)], log_path=tmp_path / "hub.log")
    hub.env = env
    hub.start()
    try:
        alice = await onboard(hub.http_url, "laptop", "alice")
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            assert (await client.call("session.whoami"))["alias"] == "alice"
    finally:
        assert hub.stop() == 0, hub.log()
    assert (data_dir / "pgdata" / "PG_VERSION").exists()

    hub.start()
    try:
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            me = await client.call("session.whoami")
            agents = (await client.call("presence.list"))["agents"]
        assert me["agent_id"] == alice["agent_id"]
        assert [a["alias"] for a in agents] == ["alice"]
    finally:
        assert hub.stop() == 0, hub.log()
