"""``beadhub serve | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from pathlib import Path
from typing import Any

import uvicorn

from hub.config import Settings
from hub.logs import FORMATS, configure, log_config

#: Allocations between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 20_000


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        database_url=args.database_url,
        bus_url=args.redis_url,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        instance_id=getattr(args, "instance_id", None),
        log_format=getattr(args, "log_format", None),
    )


def _raise_fd_limit() -> None:
    """Every agent session holds a socket: allow as many open files as the
    hard limit permits (the usual soft limit of 1024 caps a hub at ~1000
    sessions)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _tune_gc() -> None:
    """Collect cyclic garbage less often. The hub allocates many short-lived
    objects per request (frames, dicts, futures) and makes few cycles; with
    the default threshold (700) the collector ran about every few requests
    and took 5-6% of the hub's CPU under load. Objects alive at start-up
    (modules, the app) are frozen out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


#: uvicorn's WebSocket protocol with the agent sessions' shortcut past ASGI.
WS_PROTOCOL = "hub.transport.ws_protocol:DirectWebSocketProtocol"
#: uvicorn's httptools protocol with a bound on request heads.
HTTP_PROTOCOL = "hub.transport.http_protocol:BoundedHttpToolsProtocol"


def uvicorn_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """How ``beadhub serve`` runs ``app`` (the tests use the same)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "ws": WS_PROTOCOL,
        "http": HTTP_PROTOCOL,
        # The request head bound (431 past it); h11 applies it itself.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "ws_max_size": settings.ws_max_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_timeout,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    # One format for uvicorn's lines and the hub's (hub.logs).
    options.setdefault("log_config", log_config(str(options["log_level"]), settings.log_format))
    return uvicorn.Config(app, **options)


def serve(settings: Settings) -> None:
    from hub.app import create_app

    _raise_fd_limit()
    _tune_gc()

    config = uvicorn_config(settings, create_app(settings))
    # uvicorn re-raises the Ctrl-C it already handled by shutting down
    # cleanly; that is a normal exit.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()


def migrate(settings: Settings) -> None:
    from hub.store.embedded import EmbeddedPostgres
    from hub.store.migrations import migrate as apply

    embedded = None
    dsn = settings.database_url
    if not dsn:
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = embedded.start()
    try:
        applied = asyncio.run(apply(dsn))
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    finally:
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="beadhub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play the coordination story against a running hub")
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="the hub's base URL")
    for name in ("serve", "migrate"):
        cmd = sub.add_parser(name)
        cmd.add_argument(
            "--database-url",
            help="PostgreSQL DSN (env DATABASE_URL); default: embedded PostgreSQL in --data-dir",
        )
        cmd.add_argument("--redis-url", help="bus URL (env REDIS_URL); default memory://")
        cmd.add_argument(
            "--data-dir", help="embedded data directory (env BEADHUB_DATA_DIR, default ./.beadhub)"
        )
        cmd.add_argument(
            "--log-format",
            choices=FORMATS,
            help="text or json lines (env BEADHUB_LOG_FORMAT, default text)",
        )
        if name == "serve":
            cmd.add_argument("--host", help="bind address (env BEADHUB_HOST, default 127.0.0.1)")
            cmd.add_argument("--port", type=int, help="port (env BEADHUB_PORT, default 8000)")
            cmd.add_argument("--instance-id", help="this instance's id (env BEADHUB_INSTANCE_ID)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from hub.demo import run

        asyncio.run(run(args.url))
        return
    settings = _settings(args)
    configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        serve(settings)
    else:
        migrate(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
