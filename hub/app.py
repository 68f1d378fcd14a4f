"""Builds the Starlette app: routes and the lifespan that wires the parts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles

from hub import metrics
from hub.bus import create_bus
from hub.bus.relay import Relay
from hub.config import Settings
from hub.services import (
    delivery,
    escalations,
    key_use,
    leases,
    presence,
    reservations,
    retention,
    revocation,
    signin,
    webhooks,
)
from hub.services.context import Hub
from hub.services.limits import create_limiter
from hub.store import Store
from hub.store.embedded import EmbeddedPostgres
from hub.transport import http, ws
from hub.transport import methods as _methods  # noqa: F401  (registers handlers)
from hub.transport.guard import Guard
from hub.transport.mcp import endpoint as mcp
from hub.transport.routing import Router

logger = logging.getLogger("beadhub")


def dashboard_dir() -> Path | None:
    """The dashboard's files: the package ``hub.static`` (static/ of the
    repository, mapped into the package by setup.py), on disk in a wheel and
    in an editable install alike."""
    try:
        root = resources.files("hub.static")
    except ModuleNotFoundError:
        return None
    with resources.as_file(root) as path:
        # Both kinds of install keep the files on disk, so ``path`` outlives
        # the context (nothing was extracted into a temporary directory).
        return path if (path / "index.html").is_file() else None


class DashboardFiles(StaticFiles):
    """The dashboard's static files, without the Python that makes them a
    package."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path.startswith("__") or "/__" in path or path.endswith(".py"):
            return "", None
        return super().lookup_path(path)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    mcp_endpoint = mcp.Endpoint()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        embedded: EmbeddedPostgres | None = None
        dsn = settings.database_url
        if not dsn:
            embedded = EmbeddedPostgres(settings.data_dir)
            dsn = await asyncio.to_thread(embedded.start)
        store = Store(dsn, min_size=settings.pool_min, max_size=settings.pool_max)
        bus = create_bus(
            settings.bus_url,
            prefix=settings.bus_prefix,
            instance_id=settings.instance_id,
            heartbeat_seconds=settings.instance_heartbeat_seconds,
            instance_ttl=settings.instance_ttl_seconds,
        )
        relay = Relay(bus)
        limiter = create_limiter(settings.bus_url, prefix=settings.bus_prefix)
        hub = Hub(settings=settings, store=store, bus=bus, relay=relay, limiter=limiter)

        async def on_offline(project_id: str, agent_ids: list[str]) -> None:
            await presence.instance_lost(hub, project_id, agent_ids)

        bus.set_handlers(relay.on_bus_message, on_offline)
        await store.open()
        await bus.connect()
        app.state.hub = hub
        metrics.watch(hub)
        reservations.start(hub)
        escalations.start(hub)
        retention.start(hub)
        leases.start(hub)
        await revocation.start(hub)
        hub.operator_token = await signin.create_operator_token(hub)
        if settings.announce_operator:
            signin.announce_operator(settings, hub.operator_token)
        logger.info(
            "beadhub instance %s ready (bus %s)",
            settings.instance_id,
            settings.bus_url.split("@")[-1],
        )
        try:
            async with mcp_endpoint.running(hub):
                yield
        finally:
            await revocation.stop(hub)
            metrics.unwatch(hub)
            await leases.stop(hub)
            await retention.stop(hub)
            await reservations.stop(hub)
            await escalations.stop(hub)
            await webhooks.stop(hub)
            await delivery.stop(hub)
            await key_use.flush(hub)
            key_use.forget(hub)
            await bus.disconnect()
            await limiter.close()
            await store.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    routes = [
        *http.routes,
        WebSocketRoute("/v1/ws", ws.agent_socket),
        mcp_endpoint.route,
    ]
    static_dir = dashboard_dir()
    if static_dir is not None:
        routes.append(Mount("/", DashboardFiles(directory=static_dir, html=True), name="static"))
    app = Starlette(
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(Guard, settings=settings)],
    )
    # Starlette's router with an exact-path table (hub.transport.routing);
    # set before the first request, when Starlette builds its middleware
    # stack around app.router.
    app.router = Router(routes, lifespan=lifespan)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON like every other error."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
