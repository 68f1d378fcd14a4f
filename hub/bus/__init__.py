"""Pub/sub and presence, one small interface with two backends.

Chosen by URL, in the spirit of encode/broadcaster: ``memory://`` for one
process, ``redis://host:port/db`` for several instances sharing a Redis.
The bus is a doorbell, not the record: everything published was committed
to PostgreSQL first, and clients that miss a message resume from the store.
"""

from hub.bus.base import Bus, MessageHandler, OfflineHandler, SessionLimit


def create_bus(
    url: str,
    *,
    prefix: str,
    instance_id: str,
    heartbeat_seconds: float = 2.0,
    instance_ttl: float = 6.0,
) -> Bus:
    if url.startswith("memory://"):
        from hub.bus.memory import MemoryBus

        return MemoryBus(instance_id=instance_id)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from hub.bus.redis import RedisBus

        return RedisBus(
            url,
            prefix=prefix,
            instance_id=instance_id,
            heartbeat_seconds=heartbeat_seconds,
            instance_ttl=instance_ttl,
        )
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or redis://")


__all__ = ["Bus", "MessageHandler", "OfflineHandler", "SessionLimit", "create_bus"]
