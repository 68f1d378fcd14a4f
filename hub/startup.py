"""What ``beadhub serve`` checks before anything starts, and how start-up
fails: one line that names the setting or the cause and says what to do.

Bad settings exit 2 (:class:`hub.config.SettingError` and a
:class:`StartupError` with ``exit_code=2``); other start-up failures exit 1.
"""

from __future__ import annotations

import errno
import signal
import socket
import urllib.parse
from types import FrameType
from typing import Any

from hub.config import Settings, redact

#: Seconds a reachability check of DATABASE_URL / REDIS_URL may take.
CHECK_TIMEOUT = 5.0


class StartupError(Exception):
    """The hub cannot start; ``str(error)`` is the one line to print."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def bind_port(settings: Settings) -> socket.socket:
    """Bind the listening socket first, so a taken port is reported before
    the database starts; uvicorn serves on this very socket."""
    where = f"{settings.host}:{settings.port}"
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"BEADHUB_HOST / --host {settings.host!r} is not an address ({exc.strerror}):"
            " use an IP address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
            exit_code=2,
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fix = "stop the other process or choose another BEADHUB_PORT / --port"
            raise StartupError(f"port {where} is already in use: {fix}", exit_code=2) from None
        if exc.errno == errno.EACCES:
            fix = "choose a port above 1023 (BEADHUB_PORT / --port)"
            raise StartupError(f"port {where} needs privileges: {fix}", exit_code=2) from None
        raise StartupError(
            f"cannot listen on {where} ({exc.strerror}): check BEADHUB_HOST / --host and"
            " BEADHUB_PORT / --port",
            exit_code=2,
        ) from None
    sock.set_inheritable(True)
    return sock


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc.rpartition("@")[2] or parts.path or url


async def check_database(dsn: str) -> None:
    """Connect once to DATABASE_URL, to say precisely what is wrong with it."""
    import asyncpg

    shown = f"DATABASE_URL ({redact(dsn)})"
    try:
        conn = await asyncpg.connect(dsn, timeout=CHECK_TIMEOUT)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise StartupError(
            f"{shown}: PostgreSQL refused the login ({exc}): fix the user or password",
            exit_code=2,
        ) from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise StartupError(
            f"{shown}: {exc}: create the database (createdb) or fix its name", exit_code=2
        ) from None
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise StartupError(
            f"{shown}: cannot reach PostgreSQL at {_where(dsn)} ({reason}):"
            " start it or fix the host and port",
            exit_code=2,
        ) from None
    except Exception as exc:
        raise StartupError(f"{shown}: {one_line(exc)}: fix DATABASE_URL", exit_code=2) from None
    await conn.close()


async def check_bus(url: str) -> None:
    """Ping REDIS_URL once (the in-memory bus needs nothing)."""
    if url.startswith("memory://"):
        return
    from redis import exceptions
    from redis.asyncio import from_url

    shown = f"REDIS_URL ({redact(url)})"
    client: Any = from_url(url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    except exceptions.AuthenticationError as exc:
        raise StartupError(
            f"{shown}: Redis refused the login ({exc}): fix the password", exit_code=2
        ) from None
    except (exceptions.ConnectionError, exceptions.TimeoutError, OSError) as exc:
        raise StartupError(
            f"{shown}: cannot reach Redis at {_where(url)} ({one_line(exc)}):"
            " start it, fix the URL, or unset REDIS_URL for one instance",
            exit_code=2,
        ) from None
    except exceptions.RedisError as exc:
        raise StartupError(f"{shown}: {one_line(exc)}: fix REDIS_URL", exit_code=2) from None
    finally:
        await client.aclose()


def one_line(exc: BaseException) -> str:
    """An exception as one short line (type and first line of its message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP all mean "stop cleanly", during start-up as
    well as while serving: the first one is remembered (start-up finishes
    its step, then unwinds) and passed to the running server, if any.
    uvicorn installs its own SIGINT/SIGTERM handlers while it serves and
    restores these afterwards; SIGHUP (a closed terminal) it leaves to us."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self.server: Any = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = sig
        if self.server is not None and not self.server.should_exit:
            self.server.handle_exit(sig, frame)
