"""``beadhub serve | migrate | demo | mcp | hook``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import uvicorn

from hub import __version__, operations
from hub.config import SettingError, Settings
from hub.logs import FORMATS, configure, log_config
from hub.startup import StartupError, StopSignals, bind_port, check_bus, check_database, one_line
from hub.store.embedded import EmbeddedPostgres
from hub.transport.mcp import commands as mcp_commands

logger = logging.getLogger("beadhub")

#: Allocations between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 20_000


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        announce_operator=args.command == "serve",
        database_url=args.database_url,
        bus_url=getattr(args, "redis_url", None),
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
    """Bind the port, check the bus and database (or start the embedded
    one), start the hub's parts, then serve. SIGINT, SIGTERM and SIGHUP stop
    it cleanly at any point; a failure raises :class:`StartupError`."""
    listener = bind_port(settings)
    _raise_fd_limit()
    with StopSignals() as stop, contextlib.ExitStack() as cleanup:
        cleanup.callback(listener.close)
        asyncio.run(check_bus(settings.bus_url))
        if settings.database_url:
            asyncio.run(check_database(settings.database_url))
        else:
            embedded = EmbeddedPostgres(settings.data_dir)
            cleanup.callback(embedded.stop)
            settings = replace(settings, database_url=embedded.start())
        if stop.received is None:
            _tune_gc()
            asyncio.run(_serve(settings, listener, stop))


async def _serve(settings: Settings, listener: socket.socket, stop: StopSignals) -> None:
    from hub.app import create_app

    app = create_app(settings)
    async with contextlib.AsyncExitStack() as parts:
        # The app's lifespan runs here rather than inside uvicorn, so that a
        # failure to start is one line (uvicorn would log a traceback).
        try:
            await parts.enter_async_context(app.router.lifespan_context(app))
        except Exception as exc:
            logger.debug("start-up failed", exc_info=True)
            raise StartupError(
                f"start-up failed ({one_line(exc)}): BEADHUB_LOG_LEVEL=debug shows the details"
            ) from None
        if stop.received is not None:
            return
        server = uvicorn.Server(uvicorn_config(settings, app, lifespan="off"))
        stop.server = server
        await server.serve(sockets=[listener])


def migrate(settings: Settings) -> None:
    from hub.store.migrations import migrate as apply

    with contextlib.ExitStack() as cleanup:
        dsn = settings.database_url
        if dsn:
            asyncio.run(check_database(dsn))
        else:
            embedded = EmbeddedPostgres(settings.data_dir)
            cleanup.callback(embedded.stop)
            dsn = embedded.start()
        try:
            applied = asyncio.run(apply(dsn))
        except Exception as exc:
            raise StartupError(f"migration failed ({one_line(exc)})") from None
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other start-up error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}: see {self.prog} --help\n")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="beadhub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"beadhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play the coordination story against a running hub")
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="the hub's base URL")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="print a dashboard link, play at human speed, keep the agents online until Ctrl-C",
    )
    demo.add_argument(
        "--pace", type=float, help="seconds between steps (default 2 with --keep, else 0)"
    )
    demo.add_argument(
        "--data-dir", default=".beadhub", help="the hub's data directory (operator token)"
    )
    from hub import admin

    admin.add_commands(sub)
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
    guard = sub.add_parser("guard", help="refuse edits and commits of files another agent holds")
    guard.add_argument("action", choices=("install", "pre-commit", "pretooluse"))
    guard.add_argument("--url", help="the hub's base URL (install; env BEADHUB_URL)")
    guard.add_argument("--api-key", help="this agent's api key (install; env BEADHUB_API_KEY)")
    guard.add_argument(
        "--no-claude", action="store_true", help="leave out the Claude Code PreToolUse hook"
    )
    guard.add_argument(
        "--codex", action="store_true", help="also the Codex PreToolUse hook (.codex/hooks.json)"
    )
    mcp_commands.add_parsers(sub)
    operations.add_commands(sub)
    args = parser.parse_args(argv)
    if args.command in ("mcp", "hook"):
        sys.exit(mcp_commands.run(args))
    if args.command == "guard":
        from hub import guard as guards

        sys.exit(guards.main(args))
    if args.command == "demo":
        _demo(args)
        return
    if args.command in admin.COMMANDS:
        admin.run(args)
        return
    try:
        settings = _settings(args)
        configure(settings.log_level, settings.log_format)
        if args.command in operations.COMMANDS:
            sys.exit(operations.run(args, settings))
        if args.command == "serve":
            serve(settings)
        else:
            migrate(settings)
    except SettingError as exc:
        _fail(str(exc), 2)
    except StartupError as exc:
        _fail(str(exc), exc.exit_code)


def _demo(args: argparse.Namespace) -> None:
    from urllib.error import URLError

    from hub.demo import run
    from hub.services.signin import read_token_file

    token = read_token_file(Path(args.data_dir), required=False)
    pace = args.pace if args.pace is not None else (2.0 if args.keep else 0.0)
    try:
        asyncio.run(run(args.url, pace=pace, keep=args.keep, operator_token=token))
    except KeyboardInterrupt:
        print("demo stopped; the agents went offline", flush=True)
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        fix = "start it (make run) or pass --url"
        _fail(f"cannot reach the hub at {args.url} ({reason}): {fix}", 1)


def _fail(message: str, code: int) -> NoReturn:
    print(f"beadhub: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
