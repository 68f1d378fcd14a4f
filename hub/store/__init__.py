"""PostgreSQL through asyncpg: the pool, the migrations, the embedded server."""

from hub.store.pool import Store, database_unavailable

__all__ = ["Store", "database_unavailable"]
