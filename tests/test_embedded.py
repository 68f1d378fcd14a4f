"""The laptop shape: ``beadhub serve`` with no database URL runs its own
PostgreSQL in a data directory, keeps its data across restarts, and can be
trusted: one hub per data directory, nothing left running however the hub
stops, any path, and as root an unprivileged account."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hub.store.embedded import ACCOUNT, EmbeddedPostgres
from protocol.client import HubClient
from tests.support import ROOT, HubProcess, free_port, onboard

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory under /tmp that any account may enter: as root the
    embedded PostgreSQL runs as an unprivileged account, which must be able
    to reach the data directory (pytest's own tmp_path is private, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="beadhub-embedded-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """One data directory initialised by a real first start, copied (owner
    and modes kept) into the tests that do not test the first start, since
    initdb takes seconds on a busy machine."""
    path = Path(tempfile.mkdtemp(prefix="beadhub-cluster-", dir="/tmp"))
    path.chmod(0o755)
    embedded = EmbeddedPostgres(path / "data")
    embedded.start()
    embedded.stop()
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def seeded(cluster: Path, data_dir: Path) -> Path:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(cluster), str(data_dir)], check=True)
    return data_dir


def embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


def embedded_hub(data_dir: Path, log: Path) -> HubProcess:
    hub = HubProcess(env=embedded_env(), args=["--data-dir", str(data_dir)], log_path=log)
    hub.env = embedded_env()
    return hub


def postgres_on(pgdata: Path) -> list[psutil.Process]:
    """Every live PostgreSQL process (server or backend) working in ``pgdata``."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if (
                process.info["name"] == "postgres"
                and process.status() != psutil.STATUS_ZOMBIE
                and Path(process.cwd()) == pgdata.resolve()
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``beadhub serve`` on ``data_dir``, expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(free_port()), "--data-dir",
         str(data_dir)],
        env=embedded_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def socket_dir_of(data_dir: Path) -> Path:
    socket_dir = Path((data_dir / "pgdata/postmaster.pid").read_text().splitlines()[4])
    assert socket_dir.is_dir()
    return socket_dir


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata/postmaster.pid").read_text().split("\n", 1)[0])


def assert_stopped_cleanly(data_dir: Path, socket_dir: Path | None = None) -> None:
    assert postgres_on(data_dir / "pgdata") == []
    if socket_dir is not None:
        assert not socket_dir.exists()  # a private socket directory goes with the server
    assert not (data_dir / "pgdata/postmaster.pid").exists()
    assert (data_dir / "hub.lock").read_text() == ""  # no stale pid left to mislead anyone


async def test_embedded_hub_keeps_agents_across_restarts(open_dir):
    data_dir = open_dir / "hubdata"
    hub = embedded_hub(data_dir, open_dir / "hub.log")
    hub.start()
    try:
        alice = await onboard(hub.http_url, "laptop", "alice")
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            assert (await client.call("session.whoami"))["alias"] == "alice"
    finally:
        assert hub.stop() == 0, hub.log()
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert_stopped_cleanly(data_dir)

    hub.start()
    try:
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            me = await client.call("session.whoami")
            agents = (await client.call("presence.list"))["agents"]
        assert me["agent_id"] == alice["agent_id"]
        assert [a["alias"] for a in agents] == ["alice"]
    finally:
        assert hub.stop() == 0, hub.log()
    assert_stopped_cleanly(data_dir)


async def test_sigkill_leaves_a_server_the_next_start_stops_and_every_signal_stops_cleanly(
    open_dir, cluster
):
    data_dir = seeded(cluster, open_dir / "hub data")  # a space: a private socket dir
    hub = embedded_hub(data_dir, open_dir / "hub.log")
    hub.start()
    alice = await onboard(hub.http_url, "hard-kill", "alice")
    leftover = server_pid(data_dir)
    leftover_socket_dir = socket_dir_of(data_dir)
    hub.kill()  # SIGKILL: nothing of the hub runs, its PostgreSQL does
    assert psutil.pid_exists(leftover) and postgres_on(data_dir / "pgdata")

    hub.start()  # finds the leftover through postmaster.pid and stops it
    try:
        assert not psutil.pid_exists(leftover) or psutil.Process(leftover).status() == "zombie"
        assert server_pid(data_dir) != leftover
        assert f"stopping PostgreSQL pid {leftover}" in hub.log()
        assert not leftover_socket_dir.exists() and socket_dir_of(data_dir) != leftover_socket_dir
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            assert (await client.call("session.whoami"))["agent_id"] == alice["agent_id"]
    finally:
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGHUP)  # a closed terminal
        assert hub.proc.wait(30) == 0, hub.log()
    assert_stopped_cleanly(data_dir)

    hub.start()
    socket_dir = socket_dir_of(data_dir)
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(30) == 0, hub.log()
    assert_stopped_cleanly(data_dir, socket_dir)


async def test_a_second_hub_on_the_same_data_dir_exits_1_naming_the_holder(open_dir, cluster):
    data_dir = seeded(cluster, open_dir / "shared")
    first = embedded_hub(data_dir, open_dir / "first.log").start()
    try:
        second = serve_once(data_dir)
        assert second.returncode == 1
        assert second.stdout == ""
        (line,) = second.stderr.splitlines()
        assert first.proc is not None
        assert f"in use by another hub (pid {first.proc.pid} on {socket.gethostname()}" in line
        assert "stop that hub first" in line
        holder = json.loads((data_dir / "hub.lock").read_text())
        assert holder["pid"] == first.proc.pid and holder["started"] in line
        # The first hub is untouched.
        await onboard(first.http_url, "still-mine", "alice")
    finally:
        assert first.stop() == 0, first.log()
    assert_stopped_cleanly(data_dir)


async def test_a_data_path_with_spaces_works(open_dir):
    data_dir = open_dir / "my projects" / "w, 'quoted' \"too\"" / ".beadhub"
    hub = embedded_hub(data_dir, open_dir / "hub.log").start()
    try:
        alice = await onboard(hub.http_url, "spaces", "alice")
        async with HubClient(hub.ws_url, alice["api_key"], reconnect=False) as client:
            assert (await client.call("session.whoami"))["alias"] == "alice"
        socket_dir = socket_dir_of(data_dir)
    finally:
        assert hub.stop() == 0, hub.log()
    assert_stopped_cleanly(data_dir, socket_dir)


@pytest.mark.skipif(not AS_ROOT, reason="what the hub does as root needs root")
async def test_as_root_postgres_runs_as_an_account_without_login_shell_and_no_parent_changes(
    open_dir, cluster
):
    parent = open_dir / "team"
    parent.mkdir(mode=0o711)  # others may enter, not list
    parent.chmod(0o711)
    data_dir = seeded(cluster, parent / "data")
    before = {path: stat.S_IMODE(path.stat().st_mode) for path in (parent, *parent.parents)}

    hub = embedded_hub(data_dir, open_dir / "hub.log").start()
    try:
        account = pwd.getpwnam(ACCOUNT)
        assert account.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
        server = psutil.Process(server_pid(data_dir))
        assert server.uids().real == account.pw_uid
        assert all(p.uids().real == account.pw_uid for p in postgres_on(data_dir / "pgdata"))
    finally:
        assert hub.stop() == 0, hub.log()
    after = {path: stat.S_IMODE(path.stat().st_mode) for path in (parent, *parent.parents)}
    assert after == before
    assert (data_dir / "pgdata").stat().st_uid == account.pw_uid
    assert stat.S_IMODE((data_dir / "pgdata").stat().st_mode) == 0o700


@pytest.mark.skipif(not AS_ROOT, reason="what the hub does as root needs root")
def test_as_root_a_parent_the_account_cannot_enter_is_named_and_left_alone(open_dir):
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    result = serve_once(private / "data")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"cannot enter {private} (mode 0700)" in line and f"chmod o+x {private}" in line
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not (private / "data" / "pgdata").exists()


def test_a_signal_during_the_first_start_stops_everything_it_started(open_dir):
    """Ctrl-C (or a closed terminal) while the first start creates the
    cluster: the hub finishes the step it is in, stops the server, exits 0."""
    data_dir = open_dir / "first"
    hub = embedded_hub(data_dir, open_dir / "hub.log")
    hub.proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(hub.port), *hub.args],
        env=hub.env,
        cwd=ROOT,
        stdout=hub.log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while "creating the embedded PostgreSQL cluster" not in hub.log():
        assert hub.proc.poll() is None and time.monotonic() < deadline, hub.log()
        time.sleep(0.05)
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(60) == 0, hub.log()
    assert "Traceback" not in hub.log()
    assert_stopped_cleanly(data_dir)
