"""Versioned SQL migrations.

Files named ``NNNN_name.sql`` in this folder are applied in order, each in
its own transaction, and recorded in ``schema_migrations``. A session-level
advisory lock makes concurrent start-ups (several instances at once) safe:
the first applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

#: Arbitrary constant: the advisory lock key that serialises migrations.
MIGRATION_LOCK_KEY = 0x42EAD_4B
_MIGRATION_NAME = re.compile(r"[0-9]{4}_.+\.sql")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[Traversable]:
    """The package's ``NNNN_name.sql`` files in name order (package data, so
    a wheel finds them wherever it is installed)."""
    files = resources.files(__name__).iterdir()
    return sorted((f for f in files if _MIGRATION_NAME.fullmatch(f.name)), key=lambda f: f.name)


def version_of(migration: Traversable) -> str:
    return migration.name.removesuffix(".sql")


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    conn = await asyncpg.connect(dsn, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for path in migration_files():
                version = version_of(path)
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied
