"""Helpers shared by the tests and the benchmarks: free ports, throwaway
databases, in-process and subprocess hub servers, onboarding."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

from hub.app import create_app
from hub.cli import uvicorn_config
from hub.config import Settings
from hub.services.context import Actor

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("BEADHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BEADHUB_TEST_REDIS", "redis://127.0.0.1:6379/0")


#: The tests' hubs: one test process onboards hundreds of agents (and
#: provokes hundreds of 401s) from 127.0.0.1 within a minute, far past the
#: per-address defaults meant for a real hub. Tests of the limits set their
#: own small values (tests/test_limits.py).
TEST_RATES: dict[str, int] = {
    "rate_onboarding_per_minute": 1_000_000,
    "rate_anonymous_per_minute": 1_000_000,
    "rate_auth_failures_per_minute": 1_000_000,
    "rate_key_per_minute": 1_000_000,
    "rate_sessions_per_minute": 1_000_000,
    "rate_calls_burst": 1_000_000,
    "rate_calls_per_second": 1_000_000.0,
}
TEST_RATES_ENV: dict[str, str] = {
    "BEADHUB_RATE_ONBOARDING": "1000000",
    "BEADHUB_RATE_ANONYMOUS": "1000000",
    "BEADHUB_RATE_AUTH_FAILURES": "1000000",
    "BEADHUB_RATE_KEY": "1000000",
    "BEADHUB_RATE_SESSIONS": "1000000",
    "BEADHUB_RATE_CALLS_BURST": "1000000",
    "BEADHUB_RATE_CALLS_PER_SECOND": "1000000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def dsn_for(database: str, admin_dsn: str = ADMIN_DSN) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


async def create_database(admin_dsn: str = ADMIN_DSN) -> str:
    name = "beadhub_t_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_for(name, admin_dsn)


async def drop_database(dsn: str, admin_dsn: str = ADMIN_DSN) -> None:
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class RunningHub:
    settings: Settings
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.port}"

    @property
    def hub(self) -> Any:
        return self.server.config.app.state.hub  # type: ignore[union-attr]


#: The hubs running_hub started, by base URL (tests find one's operator token).
RUNNING: dict[str, RunningHub] = {}


@contextlib.asynccontextmanager
async def running_hub(
    server_options: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[RunningHub]:
    """A real uvicorn server in this event loop, on a free loopback port,
    configured as ``beadhub serve`` configures it (``server_options``:
    uvicorn options to change)."""
    settings = Settings(host="127.0.0.1", port=free_port(), **{**TEST_RATES, **overrides})
    app = create_app(settings)
    config = uvicorn_config(
        settings,
        app,
        log_level=os.environ.get("BEADHUB_TEST_LOG", "warning"),
        timeout_graceful_shutdown=None,
        **(server_options or {}),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("hub server exited during start-up")
        await asyncio.sleep(0.01)
    running = RunningHub(settings, server, task)
    RUNNING[running.http_url] = running
    try:
        yield running
    finally:
        RUNNING.pop(running.http_url, None)
        server.should_exit = True
        await task


async def onboard(
    base_url: str,
    project_slug: str,
    alias: str | None = None,
    *,
    human_name: str = "",
    role: str = "",
    repo_origin: str = "git@github.com:acme/widgets.git",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_slug": project_slug,
        "repo_origin": repo_origin,
        "human_name": human_name,
        "role": role,
        "hostname": "test-host",
        "workspace_path": f"/work/{alias or uuid.uuid4().hex[:6]}",
        **extra,
    }
    if alias is not None:
        body["alias"] = alias
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post("/v1/init", json=body)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


async def human_ticket(base_url: str, agent: dict[str, Any]) -> str:
    """A dashboard ticket of the human of ``agent`` (its human name, or its
    alias), signed in with the operator credential of the hub at
    ``base_url`` (one that :func:`running_hub` started)."""
    name = agent.get("human_name") or agent["alias"]
    signed_in = await sign_in_human(RUNNING[base_url], agent["project_slug"], name)
    return str(signed_in["ticket"])


async def sign_in_human(server: Any, project_slug: str, human_name: str = "juan") -> dict[str, Any]:
    """A human's ticket for a project, as the operator gets one: the
    server's operator token (what ``beadhub serve`` prints) traded at
    ``POST /v1/auth/signin``. ``server`` is a RunningHub."""
    return await sign_in_at(server.http_url, server.hub.operator_token, project_slug, human_name)


async def sign_in_at(
    base_url: str, operator_token: str, project_slug: str, human_name: str = "juan"
) -> dict[str, Any]:
    """:func:`sign_in_human` for any hub whose operator token is known (a
    ``beadhub serve`` process keeps it in its data directory)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/v1/auth/signin",
            json={"token": operator_token, "project_slug": project_slug, "human_name": human_name},
        )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


async def grant_coordinator(server: Any, agent: dict[str, Any]) -> dict[str, Any]:
    """A human grants the agent the coordinator role (a self-declared role
    grants nothing). Returns the agent, for chaining."""
    signed_in = await sign_in_human(server, agent["project_slug"])
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        response = await client.post(
            f"/v1/agents/{agent['agent_id']}/grant",
            json={"role": "coordinator"},
            headers={"Authorization": f"Bearer {signed_in['ticket']}"},
        )
    response.raise_for_status()
    return agent


def human_actor(project: dict[str, Any], human_name: str = "juan") -> Actor:
    """The service-layer caller for a signed-in human of an agent's project."""
    return Actor(
        project_id=project["project_id"],
        project_slug=project["project_slug"],
        agent_id=None,
        alias=f"human:{human_name}",
        human_name=human_name,
        role="human",
        credential="ticket:test",
    )


def actor_of(agent: dict[str, Any]) -> Actor:
    """The service-layer caller for an agent ``onboard`` returned."""
    return Actor(
        project_id=agent["project_id"],
        project_slug=agent["project_slug"],
        agent_id=agent["agent_id"],
        alias=agent["alias"],
        human_name=agent["human_name"],
    )


class HubProcess:
    """``beadhub serve`` as a real subprocess (for restarts, SIGKILL, several
    instances). Output goes to a log file the test can print on failure."""

    def __init__(
        self,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **TEST_RATES_ENV, **(env or {})}
        self.args = args or []
        self.log_path = log_path or Path(f"/tmp/beadhub-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> HubProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> HubProcess:
        """Wait until the hub answers ``/ready`` (raise if it exits first)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http_url + "/ready", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"hub did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
