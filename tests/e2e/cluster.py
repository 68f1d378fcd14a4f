"""Several ``beadhub serve`` processes behind a private nginx: the tested
stand-in for docker/compose.yml (no Docker engine runs here).

- The hubs are real subprocesses (:class:`tests.support.HubProcess`) that
  share a throwaway PostgreSQL database and a Redis key prefix of their own,
  so a cluster never sees another test run's instances or sessions.
- nginx runs ``docker/nginx.conf`` itself, rewritten only where the
  deployment differs: the listen address, the upstream servers, and the
  temp/log paths (all under the cluster's temp directory). It runs in the
  foreground with its own pid file and never touches the system nginx.
- Instances heartbeat every 0.5 s with a 2 s TTL, so a SIGKILLed instance
  is reaped within about 2.5 s (the defaults, 2 s and 6 s, give <= 8 s).

Every process started here is stopped when the context exits, also when
the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
import redis.exceptions

from tests.support import (
    REDIS_URL,
    ROOT,
    HubProcess,
    create_database,
    drop_database,
    free_port,
)

NGINX_CONF = ROOT / "docker" / "nginx.conf"
#: Fast instance liveness, so the SIGKILL tests take seconds.
FAST_LIVENESS = {"BEADHUB_INSTANCE_HEARTBEAT": "0.5", "BEADHUB_INSTANCE_TTL": "2"}


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def render_nginx_conf(listen_port: int, upstream_ports: list[int], workdir: Path) -> str:
    """docker/nginx.conf with this machine's ports and paths."""
    text = NGINX_CONF.read_text()
    servers = "".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n" for port in upstream_ports
    )
    text, count = re.subn(r"(?m)^\s*server hub\d+:8000[^\n]*\n", "", text)
    assert count >= 1, "docker/nginx.conf lost its upstream servers"
    text = text.replace("upstream beadhub {\n", "upstream beadhub {\n" + servers, 1)
    text = re.sub(r"(?m)^(\s*)listen 80;", rf"\1listen 127.0.0.1:{listen_port};", text)
    text = re.sub(
        r"(?m)^(\s*)access_log [^;]*;", rf"\1access_log {workdir}/nginx-access.log;", text
    )
    temp_paths = "".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {\n", "http {\n" + temp_paths, 1)


class Nginx:
    """A private nginx in the foreground, configured from docker/nginx.conf."""

    def __init__(self, upstream_ports: list[int], workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(render_nginx_conf(self.port, upstream_ports, workdir))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (scripts/test-deps.sh installs it)")
        directives = (
            f"daemon off; pid {self.workdir}/nginx.pid; error_log {self.workdir}/nginx-error.log;"
        )
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.workdir), "-c", str(self.conf), "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "nginx-stderr.log").open("ab"),
            start_new_session=True,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        parts = []
        for name in ("nginx-stderr.log", "nginx-error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, master exits
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Cluster:
    hubs: list[HubProcess]
    nginx: Nginx
    database_url: str
    redis_url: str
    prefix: str
    workdir: Path
    names: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        """The load balancer: what agents and bdh would talk to."""
        return f"http://127.0.0.1:{self.nginx.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx.port}"

    def operator_token(self, index: int = 0) -> str:
        """What ``beadhub serve`` wrote for the CLI on its host."""
        return (self.workdir / self.names[index] / "operator-token").read_text().strip()

    def instance_id(self, index: int) -> str:
        return self.hubs[index].env["BEADHUB_INSTANCE_ID"]

    async def instance_holding(self, session_id: str) -> int:
        """Which hub (index) holds a session, from the bus's own records."""
        client = aioredis.from_url(self.redis_url)
        try:
            for index in range(len(self.hubs)):
                key = f"{self.prefix}:inst:{self.instance_id(index)}:sessions"
                for triple in await client.smembers(key):
                    if triple.decode().endswith(" " + session_id):
                        return index
        finally:
            await client.aclose()
        raise LookupError(f"no instance holds session {session_id}")

    def kill(self, index: int) -> None:
        """SIGKILL one instance: no shutdown code runs, as in a crash."""
        self.hubs[index].kill()

    async def restart(self, index: int) -> None:
        hub = self.hubs[index]
        hub.kill()
        await asyncio.to_thread(hub.start)

    async def instance_ids_behind_balancer(self, requests: int = 6) -> set[str]:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=5) as client:
            ids = set()
            for _ in range(requests):
                response = await client.get("/health")
                ids.add(response.json()["instance_id"])
        return ids

    def logs(self) -> str:
        parts = [
            f"--- {name} ---\n{hub.log()}" for name, hub in zip(self.names, self.hubs, strict=True)
        ]
        parts.append(f"--- nginx ---\n{self.nginx.log()}")
        return "\n".join(parts)


async def forget_prefix(redis_url: str, prefix: str) -> None:
    """Delete the cluster's keys: a killed instance nobody outlived to reap
    would otherwise leave them in the shared Redis."""
    client = aioredis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    except (redis.exceptions.RedisError, OSError):
        pass  # a private Redis the test already stopped
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def running_cluster(
    size: int = 2,
    *,
    redis_url: str = REDIS_URL,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """``size`` hubs on one database and one Redis prefix, behind nginx.

    Without ``database_url`` a throwaway database is created on the shared
    PostgreSQL and dropped afterwards.
    """
    # nginx workers drop privileges when started as root; they must reach
    # their temp directories.
    workdir = Path(tempfile.mkdtemp(prefix="beadhub-cluster-"))
    os.chmod(workdir, 0o755)
    own_database = database_url is None
    dsn = database_url or await create_database()
    prefix = "beadhub-e2e-" + uuid.uuid4().hex[:8]
    names = [f"hub{n + 1}" for n in range(size)]
    hubs = [
        HubProcess(
            env={
                "DATABASE_URL": dsn,
                "REDIS_URL": redis_url,
                "BEADHUB_BUS_PREFIX": prefix,
                "BEADHUB_INSTANCE_ID": f"{name}-{uuid.uuid4().hex[:6]}",
                "BEADHUB_LOG_LEVEL": "info",
                # Where each hub writes its operator token (a human's credential).
                "BEADHUB_DATA_DIR": str(workdir / name),
                **FAST_LIVENESS,
                **(env or {}),
            },
            log_path=workdir / f"{name}.log",
        )
        for name in names
    ]
    nginx = Nginx([hub.port for hub in hubs], workdir)
    cluster = Cluster(hubs, nginx, dsn, redis_url, prefix, workdir, names)
    failed = True
    try:
        await asyncio.gather(*(asyncio.to_thread(hub.start) for hub in hubs))
        await asyncio.to_thread(nginx.start)
        yield cluster
        failed = False
    finally:
        nginx.stop()
        for hub in hubs:
            # SIGINT first: a clean shutdown also deregisters from Redis.
            await asyncio.to_thread(hub.stop, 10.0)
        if failed:
            # Shown by pytest with the failure report.
            print(cluster.logs())
        await forget_prefix(redis_url, prefix)
        if own_database:
            await drop_database(dsn)
        shutil.rmtree(workdir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own, on a free loopback port, without
    persistence: a restart loses everything, the hardest case for the hub.
    Never the shared server on 6379."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
                *("--logfile", str(self.workdir / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash, not a clean shutdown
            self.proc.wait(5)


class PrivatePostgres:
    """A PostgreSQL server of the test's own on a free loopback port, from
    the system's binaries (/usr/lib/postgresql/<v>/bin), so a test can stop
    and start it. As root the server runs as the ``postgres`` user.
    Never the shared server on 5432."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.pgdata = workdir / "pgdata"
        self.logfile = workdir / "postgres.log"
        self.bin = self.find_bin()
        self.user = "postgres" if os.geteuid() == 0 else None

    @staticmethod
    def find_bin() -> Path:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
            key=lambda p: int(p.parent.parent.name),
        )
        if not versions:
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql")
        return versions[-1].parent

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/beadhub"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            args,
            user=self.user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            cwd="/",
        )

    def init(self) -> PrivatePostgres:
        self.pgdata.mkdir(mode=0o700)
        if self.user is not None:
            shutil.chown(self.pgdata, self.user, self.user)
            shutil.chown(self.logfile.parent, self.user, self.user)
        self._run(
            str(self.bin / "initdb"),
            *("-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--no-sync"),
        )
        self.start()
        self._run(str(self.bin / "createdb"), *("-h", "127.0.0.1", "-p", str(self.port)), "beadhub")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.pgdata} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.pgdata), "-l", str(self.logfile), "-o", options, "-w", "start"),
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects every client, like a database going away."""
        if (self.pgdata / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop")
