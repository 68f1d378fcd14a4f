"""Redis bus for many instances.

Keys (all under ``prefix``):

- ``{p}:ch:{channel}``              pub/sub channel
- ``{p}:sess:{project}:{agent}``    set of session ids of one agent
- ``{p}:online:{project}``          set of agent ids with at least one session
- ``{p}:inst:{id}:alive``           instance heartbeat, expires after ``instance_ttl``
- ``{p}:inst:{id}:sessions``        "project agent session" triples held by that instance
- ``{p}:instances``                 set of registered instance ids

Each instance refreshes its heartbeat; every instance also reaps: an
instance in ``instances`` whose heartbeat expired (SIGKILL, lost host) has
its sessions removed, and the agents left with none are reported offline
through the offline handler. SREM on ``instances`` elects one reaper.

Subscriptions survive Redis restarts: the reader reconnects with backoff and
resubscribes every channel it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.bus.base import Bus

logger = logging.getLogger("beadhub.bus")

_JOIN = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
if redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

_LEAVE = """
local removed = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[3])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        instance_id: str,
        heartbeat_seconds: float = 2.0,
        instance_ttl: float = 6.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.instance_id = instance_id
        self.heartbeat_seconds = heartbeat_seconds
        self.instance_ttl = instance_ttl
        self._redis: aioredis.Redis | None = None
        self._pubsub_conn: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._channels: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    # -- keys -------------------------------------------------------------

    def _ch(self, channel: str) -> str:
        return f"{self.prefix}:ch:{channel}"

    def _sess(self, project_id: str, agent_id: str) -> str:
        return f"{self.prefix}:sess:{project_id}:{agent_id}"

    def _online(self, project_id: str) -> str:
        return f"{self.prefix}:online:{project_id}"

    def _alive(self, instance_id: str) -> str:
        return f"{self.prefix}:inst:{instance_id}:alive"

    def _inst_sessions(self, instance_id: str) -> str:
        return f"{self.prefix}:inst:{instance_id}:sessions"

    @property
    def _instances(self) -> str:
        return f"{self.prefix}:instances"

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisBus.connect() was not awaited")
        return self._redis

    # -- lifecycle ----------------------------------------------------------

    async def connect(self) -> None:
        options = {"socket_connect_timeout": 2, "health_check_interval": 10}
        self._redis = aioredis.from_url(self.url, **options)
        self._pubsub_conn = aioredis.from_url(self.url, **options)
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        await self._register()
        self._pubsub = self._pubsub_conn.pubsub(ignore_subscribe_messages=True)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="bus-reader"),
            asyncio.create_task(self._heartbeat_loop(), name="bus-heartbeat"),
        ]

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(RedisError, OSError):
            await self._deregister()
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        for client in (self._pubsub_conn, self._redis):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        self._redis = self._pubsub_conn = self._pubsub = None

    async def _register(self) -> None:
        await self.redis.set(self._alive(self.instance_id), "1", px=int(self.instance_ttl * 1000))
        await self.redis.sadd(self._instances, self.instance_id)

    async def _deregister(self) -> None:
        """A clean shutdown reaps itself at once instead of waiting for the TTL."""
        await self.redis.delete(self._alive(self.instance_id))
        await self._reap(self.instance_id)

    # -- pub/sub --------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        await self.redis.publish(self._ch(channel), data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        assert self._pubsub is not None
        try:
            await self._pubsub.subscribe(self._ch(channel))
            self._subscribed.set()
        except (RedisError, OSError):
            # The reader resubscribes everything in _channels on reconnect.
            logger.warning("subscribe to %s deferred: redis unreachable", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        assert self._pubsub is not None
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(self._ch(channel))

    async def _read_loop(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        strip = len(self.prefix) + 4  # "{prefix}:ch:"
        backoff = 0.1
        while True:
            if not pubsub.subscribed:
                # get_message on a pubsub with no channel returns at once;
                # wait for the first subscribe instead of spinning.
                self._subscribed.clear()
                await self._subscribed.wait()
            try:
                message = await pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("bus reader lost redis (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                await self._resubscribe(pubsub)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            try:
                self._on_message(channel[strip:], message["data"])
            except Exception:
                logger.exception("bus message handler failed")

    async def _resubscribe(self, pubsub: aioredis.client.PubSub) -> None:
        channels = [self._ch(c) for c in self._channels]
        with contextlib.suppress(RedisError, OSError):
            await pubsub.reset()
            if channels:
                await pubsub.subscribe(*channels)
                logger.info("bus resubscribed %d channels", len(channels))

    # -- presence ---------------------------------------------------------------

    async def presence_join(self, project_id: str, agent_id: str, session_id: str) -> bool:
        triple = f"{project_id} {agent_id} {session_id}"
        keys = [
            self._sess(project_id, agent_id),
            self._online(project_id),
            self._inst_sessions(self.instance_id),
            self._instances,
        ]
        args = [session_id, agent_id, triple, self.instance_id]
        return bool(await self._join(keys=keys, args=args))

    async def presence_leave(self, project_id: str, agent_id: str, session_id: str) -> bool:
        return await self._leave_as(self.instance_id, project_id, agent_id, session_id)

    async def _leave_as(
        self, instance_id: str, project_id: str, agent_id: str, session_id: str
    ) -> bool:
        triple = f"{project_id} {agent_id} {session_id}"
        keys = [
            self._sess(project_id, agent_id),
            self._online(project_id),
            self._inst_sessions(instance_id),
        ]
        return bool(await self._leave(keys=keys, args=[session_id, agent_id, triple]))

    async def online_agents(self, project_id: str) -> set[str]:
        members = await self.redis.smembers(self._online(project_id))
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                return bool(await self.redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # -- instance liveness ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._register()
                await self._reap_dead()
            except (RedisError, OSError) as exc:
                logger.warning("bus heartbeat failed: %s", exc)
            except Exception:
                logger.exception("bus heartbeat crashed")

    async def _reap_dead(self) -> None:
        for raw in await self.redis.smembers(self._instances):
            instance_id = raw.decode() if isinstance(raw, bytes) else raw
            if instance_id == self.instance_id:
                continue
            if await self.redis.exists(self._alive(instance_id)):
                continue
            if await self.redis.srem(self._instances, instance_id):
                logger.warning("instance %s is gone; reaping its sessions", instance_id)
                await self._reap(instance_id)

    async def _reap(self, instance_id: str) -> None:
        await self.redis.srem(self._instances, instance_id)
        offline: dict[str, list[str]] = {}
        for raw in await self.redis.smembers(self._inst_sessions(instance_id)):
            triple = raw.decode() if isinstance(raw, bytes) else raw
            project_id, agent_id, session_id = triple.split(" ")
            if await self._leave_as(instance_id, project_id, agent_id, session_id):
                offline.setdefault(project_id, []).append(agent_id)
        await self.redis.delete(self._inst_sessions(instance_id))
        if self._on_offline is not None:
            for project_id, agents in offline.items():
                await self._on_offline(project_id, agents)
