"""Portable project archives: ``beadhub export`` and ``beadhub import``.

An archive is JSON Lines (gzip when its name ends in ``.gz``):

1. a header: ``{"format": "beadhub-archive", "version": 1, "migrations":
   [...], "projects": [{"id", "slug"}], "tables": [...], "sequences":
   {"events.seq": [min, max], ...}, "created_at", "hub_version"}``;
2. one line per row, ``{"table": name, "row": {column: value}}``, tables
   in foreign-key order (a row's parents come before it), each row as
   PostgreSQL's ``to_jsonb`` renders it;
3. a trailer, ``{"end": true, "rows": {table: count}}``: an archive without
   it is truncated and is refused.

"Every table of the project" is every table with a ``project_id`` column
(and ``projects``); a table the archive could not place (no
``project_id``) stops the export, so a new table cannot be silently left
out. Generated columns are recomputed by the target.

Import writes everything in one transaction: a failure leaves the target
as it was. Ids are preserved. Serial cursors (``events.seq``,
``chat_messages.seq``) are kept when the target's own rows are all below
the archive's, which is the case for a fresh hub; otherwise they are
shifted up by one offset per sequence, together with the columns that
hold such values (:data:`SEQUENCE_COLUMNS`), and the project's event
horizon is moved past the imported events so clients resuming with an old
cursor are told to resync (docs/protocol.md). A project that already
exists in the target (same id or slug) is refused unless ``replace``.

The archive holds key hashes and webhook secrets: it is written with mode
0600 and must be kept like a database dump.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import orjson

import hub
from hub.store.migrations import migrate

FORMAT = "beadhub-archive"
VERSION = 1
#: Tables an archive never holds: the target has its own.
SKIPPED = frozenset({"schema_migrations"})
#: Columns holding values of a serial sequence, by the column the
#: sequence feeds: shifted together on import.
SEQUENCE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "events.seq": [("events", "seq"), ("event_horizons", "pruned_through")],
    "chat_messages.seq": [("chat_messages", "seq"), ("chat_participants", "last_read_seq")],
    "audit_log.id": [("audit_log", "id")],
}
_INSERT_BATCH = 500


class ArchiveError(Exception):
    """The archive cannot be written or read into this database; the
    message says why and what to do."""


@dataclass(slots=True)
class Table:
    name: str
    #: Columns written on import (generated ones excluded).
    columns: list[str]
    generated: list[str]
    parents: set[str] = field(default_factory=set)


async def _tables(conn: asyncpg.Connection) -> list[Table]:
    """The project tables of the public schema, parents first."""
    rows = await conn.fetch(
        """
        SELECT c.relname AS name,
               array_agg(a.attname ORDER BY a.attnum)
                 FILTER (WHERE a.attgenerated = '') AS columns,
               coalesce(array_agg(a.attname) FILTER (WHERE a.attgenerated <> ''), '{}')
                 AS generated
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        GROUP BY c.relname
        """
    )
    tables = {
        r["name"]: Table(r["name"], list(r["columns"]), list(r["generated"]))
        for r in rows
        if r["name"] not in SKIPPED
    }
    unplaced = [
        t.name for t in tables.values() if t.name != "projects" and "project_id" not in t.columns
    ]
    if unplaced:
        raise ArchiveError(
            f"table(s) {', '.join(sorted(unplaced))} have no project_id: an archive cannot "
            "tell which project their rows belong to (hub.store.archive)"
        )
    for r in await conn.fetch(
        "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent "
        "FROM pg_constraint WHERE contype = 'f'"
    ):
        child, parent = r["child"].split(".")[-1], r["parent"].split(".")[-1]
        if child in tables and parent in tables and child != parent:
            tables[child].parents.add(parent)
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(ordered) < len(tables):
        ready = sorted(
            name for name, t in tables.items() if name not in placed and t.parents <= placed
        )
        if not ready:
            raise ArchiveError("the tables' foreign keys form a cycle")
        for name in ready:
            ordered.append(tables[name])
            placed.add(name)
    return ordered


async def _applied(conn: asyncpg.Connection) -> list[str]:
    return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]


def _open(path: Path, mode: str) -> IO[bytes]:
    if mode == "wb":
        # Readable by its owner only, whether new or overwritten.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        path.chmod(0o600)
    if path.suffix == ".gz":
        return gzip.open(path, mode)  # type: ignore[return-value]
    return path.open(mode)


# -- export ---------------------------------------------------------------------


async def export(dsn: str, path: Path, slugs: Iterable[str] = ()) -> dict[str, int]:
    """Write the projects named by ``slugs`` (all when empty) to ``path``;
    return the rows written per table."""
    wanted = sorted(set(slugs))
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        # One snapshot: the archive is what the database held at one instant.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            projects = await conn.fetch(
                "SELECT id::text AS id, slug FROM projects "
                "WHERE cardinality($1::text[]) = 0 OR slug = ANY($1::text[]) ORDER BY slug",
                wanted,
            )
            missing = set(wanted) - {p["slug"] for p in projects}
            if missing:
                raise ArchiveError(f"no project named {', '.join(sorted(missing))} in this hub")
            ids = [p["id"] for p in projects]
            tables = await _tables(conn)
            header = {
                "format": FORMAT,
                "version": VERSION,
                "hub_version": hub.__version__,
                "created_at": datetime.now(UTC).isoformat(),
                "migrations": await _applied(conn),
                "projects": [dict(p) for p in projects],
                "tables": [t.name for t in tables],
                "sequences": await _sequence_ranges(conn, ids),
            }
            counts: dict[str, int] = {}
            with _open(path, "wb") as out:
                out.write(orjson.dumps(header) + b"\n")
                for table in tables:
                    counts[table.name] = 0
                    async for line in _rows(conn, table, ids):
                        out.write(line)
                        counts[table.name] += 1
                out.write(orjson.dumps({"end": True, "rows": counts}) + b"\n")
    finally:
        await conn.close()
    return counts


async def _sequence_ranges(conn: asyncpg.Connection, ids: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for name in SEQUENCE_COLUMNS:
        table, column = name.split(".")
        low, high = await conn.fetchrow(
            f"SELECT min({column}), max({column}) FROM {table} WHERE project_id = ANY($1::uuid[])",
            ids,
        )
        if low is not None:
            ranges[name] = [int(low), int(high)]
    return ranges


async def _rows(conn: asyncpg.Connection, table: Table, ids: list[str]) -> AsyncIterator[bytes]:
    key = "id" if table.name == "projects" else "project_id"
    drop = "".join(f" - '{c}'" for c in table.generated)
    query = (
        f"SELECT (to_jsonb(t){drop})::text FROM {table.name} t "
        f"WHERE {key} = ANY($1::uuid[]) ORDER BY ctid"
    )
    name = orjson.dumps(table.name)
    async for record in conn.cursor(query, ids, prefetch=1000):
        yield b'{"table":' + name + b',"row":' + record[0].encode() + b"}\n"


# -- import -------------------------------------------------------------------------


async def import_archive(dsn: str, path: Path, *, replace: bool = False) -> dict[str, int]:
    """Restore the archive at ``path`` into the database at ``dsn``
    (migrated first); return the rows written per table."""
    await migrate(dsn)
    with _open(path, "rb") as source:
        lines = iter(source)
        header = _header(next(lines, b""), path)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            tables = {t.name: t for t in await _tables(conn)}
            _check_schema(header, await _applied(conn), tables)
            async with conn.transaction():
                await _make_room(conn, header["projects"], tables, replace)
                offsets = await _offsets(conn, header.get("sequences", {}))
                counts = await _insert_all(conn, lines, tables, offsets, path)
                await _after_insert(conn, header["projects"], offsets)
        finally:
            await conn.close()
    return counts


def _header(line: bytes, path: Path) -> dict[str, Any]:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError(f"{path} is not a beadhub archive")
    if header.get("version") != VERSION:
        raise ArchiveError(
            f"{path} is archive format version {header.get('version')}; this hub reads "
            f"version {VERSION}: import it with the hub version that wrote it "
            f"({header.get('hub_version')}) or newer"
        )
    return header


def _check_schema(header: dict[str, Any], applied: list[str], tables: dict[str, Table]) -> None:
    newer = sorted(set(header["migrations"]) - set(applied))
    if newer:
        raise ArchiveError(
            f"the archive comes from a newer hub (migrations {', '.join(newer)}): "
            "upgrade this hub first"
        )
    unknown = sorted(set(header["tables"]) - set(tables))
    if unknown:
        raise ArchiveError(f"the archive has tables this hub does not: {', '.join(unknown)}")


async def _make_room(
    conn: asyncpg.Connection,
    projects: list[dict[str, str]],
    tables: dict[str, Table],
    replace: bool,
) -> None:
    ids = [p["id"] for p in projects]
    slugs = [p["slug"] for p in projects]
    existing = await conn.fetch(
        "SELECT id::text AS id, slug FROM projects WHERE id = ANY($1::uuid[]) OR slug = ANY($2)",
        ids,
        slugs,
    )
    if not existing:
        return
    if not replace:
        names = ", ".join(sorted(r["slug"] for r in existing))
        raise ArchiveError(
            f"project(s) {names} already exist in this hub: nothing was imported "
            "(--replace deletes them first)"
        )
    doomed = [r["id"] for r in existing]
    # Children first; tables without foreign keys (migrations 0007, 0008)
    # would not cascade.
    for table in reversed(list(tables.values())):
        key = "id" if table.name == "projects" else "project_id"
        await conn.execute(f"DELETE FROM {table.name} WHERE {key} = ANY($1::uuid[])", doomed)


async def _offsets(conn: asyncpg.Connection, ranges: dict[str, list[int]]) -> dict[str, int]:
    """How far each sequence's archived values move: 0 when the target's
    values are all below them."""
    offsets = {}
    for name, (low, _high) in ranges.items():
        table, column = name.split(".")
        top = await conn.fetchval(f"SELECT max({column}) FROM {table}")
        offsets[name] = 0 if top is None or top < low else int(top) - low + 1
    return offsets


def _shifts(offsets: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """table -> [(column, offset)] for the offsets that are not 0."""
    shifts: dict[str, list[tuple[str, int]]] = {}
    for name, offset in offsets.items():
        if offset:
            for table, column in SEQUENCE_COLUMNS[name]:
                shifts.setdefault(table, []).append((column, offset))
    return shifts


async def _insert_all(
    conn: asyncpg.Connection,
    lines: Iterable[bytes],
    tables: dict[str, Table],
    offsets: dict[str, int],
    path: Path,
) -> dict[str, int]:
    shifts = _shifts(offsets)
    counts: dict[str, int] = {}
    batch: list[dict[str, Any]] = []
    current: str | None = None
    for raw in lines:
        item = orjson.loads(raw)
        if item.get("end"):
            await _insert(conn, tables, current, batch)
            written = {t: n for t, n in (item.get("rows") or {}).items() if n}
            if written != counts:
                raise ArchiveError(f"{path}: the rows read do not match the archive's trailer")
            return counts
        name = item["table"]
        if name != current:
            await _insert(conn, tables, current, batch)
            current, batch = name, []
        row = item["row"]
        for column, offset in shifts.get(name, ()):
            if row.get(column):
                row[column] += offset
        batch.append(row)
        counts[name] = counts.get(name, 0) + 1
        if len(batch) >= _INSERT_BATCH:
            await _insert(conn, tables, current, batch)
            batch = []
    raise ArchiveError(f"{path} is truncated (no trailer): nothing was imported")


async def _insert(
    conn: asyncpg.Connection, tables: dict[str, Table], name: str | None, rows: list[dict[str, Any]]
) -> None:
    if not rows or name is None:
        return
    # The archive's columns only: a column this hub added since keeps its
    # default.
    columns = ", ".join(f'"{c}"' for c in tables[name].columns if c in rows[0])
    await conn.execute(
        f"INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE "
        f"SELECT {columns} FROM jsonb_populate_recordset(NULL::{name}, $1::jsonb)",
        orjson.dumps(rows).decode(),
    )


async def _after_insert(
    conn: asyncpg.Connection, projects: list[dict[str, str]], offsets: dict[str, int]
) -> None:
    """Sequences past every imported value; moved cursors announced."""
    for name in SEQUENCE_COLUMNS:
        table, column = name.split(".")
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"greatest((SELECT max({column}) FROM {table}), 1))"
        )
    if offsets.get("events.seq"):
        # Cursors a client holds from the old hub mean nothing here.
        await conn.execute(
            """
            INSERT INTO event_horizons (project_id, pruned_through)
            SELECT p.id, coalesce((SELECT max(seq) FROM events e WHERE e.project_id = p.id), 0)
            FROM projects p WHERE p.id = ANY($1::uuid[])
            ON CONFLICT (project_id) DO UPDATE SET pruned_through = excluded.pruned_through
            """,
            [p["id"] for p in projects],
        )
