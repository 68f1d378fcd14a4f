"""Start-up as an operator sees it: every bad setting and every start-up
failure is one line on stderr that names the setting or the cause and what
to do (exit 2 for bad settings), the port is checked before anything else
starts, ``beadhub --version``, and the version in ``/health``."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import hub
from tests.support import ADMIN_DSN, ROOT, dsn_for, free_port


def beadhub(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("beadhub"), lines[0]
    return lines[0]


def closed_port() -> int:
    return free_port()  # nothing listens there


BAD_SETTINGS = [
    ({"BEADHUB_PORT": "eighty"}, [], "BEADHUB_PORT='eighty' is not a whole number"),
    ({}, ["--port", "99999"], "BEADHUB_PORT / --port 99999 is not a port"),
    ({}, ["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
    ({"BEADHUB_LOG_LEVEL": "loud"}, [], "BEADHUB_LOG_LEVEL='loud' is not a log level"),
    ({"BEADHUB_POOL_MAX": "0"}, [], "BEADHUB_POOL_MIN=2 / BEADHUB_POOL_MAX=0"),
    ({"BEADHUB_WS_PING_INTERVAL": "soon"}, [], "BEADHUB_WS_PING_INTERVAL='soon' is not a number"),
    ({"DATABASE_URL": "mysql://db/x"}, [], "DATABASE_URL='mysql://db/x' is not a PostgreSQL URL"),
    ({"DATABASE_URL": "postgresql://h:port/x"}, [], "is not a PostgreSQL URL (Port could not"),
    ({"REDIS_URL": "http://cache"}, [], "REDIS_URL='http://cache' is not a Redis URL"),
    ({}, ["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not an address"),
]


@pytest.mark.parametrize(("env", "args", "expected"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_and_exit_2(env, args, expected):
    result = beadhub("serve", *args, env=env)
    assert result.returncode == 2
    line = one_line_error(result)
    assert expected in line
    assert ":" in line.split(expected, 1)[1]  # ... and then what to do


def test_a_password_in_a_bad_url_is_not_printed():
    url = f"postgresql://beadhub:s3cret@127.0.0.1:{closed_port()}/x"
    result = beadhub("serve", "--port", str(free_port()), env={"DATABASE_URL": url})
    assert result.returncode == 2
    line = one_line_error(result)
    assert "s3cret" not in line and "beadhub:***@127.0.0.1" in line
    assert "cannot reach PostgreSQL" in line and "start it or fix the host and port" in line


def test_unreachable_database_redis_and_a_missing_database_are_named():
    port = str(free_port())
    down = beadhub(
        "serve", "--port", port, env={"DATABASE_URL": f"postgresql://x@127.0.0.1:{closed_port()}/x"}
    )
    missing = beadhub("serve", "--port", port, env={"DATABASE_URL": dsn_for("no_such_db_here")})
    redis = beadhub(
        "serve",
        "--port",
        port,
        env={"DATABASE_URL": ADMIN_DSN, "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"},
    )
    assert (down.returncode, missing.returncode, redis.returncode) == (2, 2, 2)
    assert "DATABASE_URL (postgresql://x@127.0.0.1:" in one_line_error(down)
    assert 'database "no_such_db_here" does not exist: create the database' in one_line_error(
        missing
    )
    line = one_line_error(redis)
    assert "REDIS_URL (redis://127.0.0.1:" in line and "cannot reach Redis" in line


def test_a_taken_port_is_found_before_the_embedded_database_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = beadhub("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"port 127.0.0.1:{port} is already in use: stop the other process" in line
    assert not (tmp_path / "data").exists()  # nothing was started


def test_an_unwritable_data_dir_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = beadhub("serve", "--port", str(free_port()), "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"data dir {blocker / 'data'} cannot be created (Not a directory)" in line
    assert "choose one you can write (--data-dir / BEADHUB_DATA_DIR) or set DATABASE_URL" in line


def test_migrate_says_the_same_in_one_line():
    url = f"postgresql://x@127.0.0.1:{closed_port()}/x"
    result = beadhub("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 2
    assert "cannot reach PostgreSQL" in one_line_error(result)


def test_version_flag_prints_the_package_version(tmp_path):
    result = beadhub("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"beadhub {hub.__version__}\n"
    assert importlib.metadata.version("beadhub") == hub.__version__


async def test_health_names_the_version(hub_server):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        health = (await http.get("/health")).json()
    assert health["version"] == hub.__version__
    assert health["status"] == "ok"
