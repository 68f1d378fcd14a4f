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
through the offline handler. The reap is one Lua script (check the
heartbeat, SREM from ``instances``, remove the sessions), so exactly one
instance reaps and an instance that comes back is never half-reaped.

Redis restarts and outages:

- The reader reconnects with backoff and resubscribes every channel it
  holds, on a fresh connection. Messages published meanwhile are gone from
  the bus, so it then reports a *gap* on each channel, covering the time
  since the connection was lost: listeners read what they missed from the
  store (see hub/bus/relay.py).
- An instance that dies between a commit and its publish leaves an event
  nobody announced. So when an instance vanishes from ``instances``, the
  others report a gap covering its last TTL.
- Each instance keeps its own sessions in memory. When its registration in
  ``instances`` turns out to be missing (Redis lost its data, or another
  instance reaped it while it stalled), it writes them all back.
- A session that closes while Redis is unreachable is removed later, by
  the heartbeat, and reported offline then if it was the agent's last.
- An instance whose heartbeat failed waits one TTL after Redis returns
  before reaping others, so instances that also lost Redis can re-register.
- A previous incarnation's sessions under the same instance id (a crashed
  instance restarted with a fixed ``BEADHUB_INSTANCE_ID``) are reaped at
  start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from hub import metrics
from hub.bus.base import Bus, SessionLimit
from hub.bus.relay import gap_signal

logger = logging.getLogger("beadhub.bus")

#: Added to every gap's length: publishes may fail a little before the
#: reader notices, and an instance may die a little after its heartbeat.
GAP_MARGIN_SECONDS = 1.0

#: Returns 1 for the agent's first session, plus 2 when this instance was
#: missing from ``instances`` (reaped, or Redis lost its data); -1 (and
#: nothing changed) when the agent already holds ARGV[5] sessions (0: no cap).
_JOIN = """
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
   and redis.call('SCARD', KEYS[1]) >= cap then
  return -1
end
local result = 0
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
if redis.call('SADD', KEYS[4], ARGV[4]) == 1 then
  result = 2
end
if redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  result = result + 1
end
return result
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

#: The heartbeat. Returns 1 when this instance was not registered.
_REGISTER = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('SADD', KEYS[2], ARGV[2])
"""

#: Reaps one instance: KEYS alive, instances, its sessions; ARGV id, key
#: prefix, force. Without force only a registered instance whose heartbeat
#: expired is reaped (and only by one caller). Returns "project agent" for
#: every agent left without a session.
_REAP = """
if ARGV[3] ~= '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
  if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return {} end
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local offline = {}
for _, triple in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local project, agent, session = string.match(triple, '^(%S+) (%S+) (%S+)$')
  if project then
    local sess = ARGV[2] .. ':sess:' .. project .. ':' .. agent
    if redis.call('SREM', sess, session) == 1 and redis.call('SCARD', sess) == 0 then
      redis.call('SREM', ARGV[2] .. ':online:' .. project, agent)
      table.insert(offline, project .. ' ' .. agent)
    end
  end
end
redis.call('DEL', KEYS[3])
return offline
"""

Triple = tuple[str, str, str]


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
        #: The reader must resubscribe on a fresh connection.
        self._lost = False
        #: When the reader lost Redis (monotonic); set until the gap is
        #: reported, once messages flow again.
        self._lost_at: float | None = None
        #: Instances seen registered at the last heartbeat.
        self._known_instances: set[str] = set()
        #: (project, agent, session) of every session this instance holds.
        self._local: set[Triple] = set()
        #: Sessions that closed while Redis was unreachable.
        self._pending_leaves: set[Triple] = set()
        #: No reaping of others before this time (monotonic), see module doc.
        self._reap_after = 0.0

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
        # Commands retry a little (a stale socket after a Redis restart) but
        # fail fast while Redis is down: a publish is only a doorbell.
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2)
        self._redis = aioredis.from_url(self.url, retry=retry, socket_timeout=5, **options)
        # No silent reconnects on the subscriber: the reader must see every
        # lost connection to report the gap (redis-py would resubscribe
        # quietly and the messages in between would be lost unnoticed).
        self._pubsub_conn = aioredis.from_url(self.url, retry=Retry(NoBackoff(), 0), **options)
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        self._register_script = self._redis.register_script(_REGISTER)
        self._reap_script = self._redis.register_script(_REAP)
        await self._reap(self.instance_id, force=True)
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
        keys = [self._alive(self.instance_id), self._instances]
        args: list[str | int] = [int(self.instance_ttl * 1000), self.instance_id]
        if await self._register_script(keys=keys, args=args):
            await self._rejoin()

    async def _rejoin(self) -> None:
        """Write back this instance's sessions after Redis lost them."""
        if self._local:
            logger.warning("bus: re-registering %d sessions", len(self._local))
        for project_id, agent_id, session_id in list(self._local):
            await self._join_as(project_id, agent_id, session_id)

    async def _deregister(self) -> None:
        """A clean shutdown reaps itself at once instead of waiting for the TTL."""
        await self.redis.delete(self._alive(self.instance_id))
        await self._reap(self.instance_id, force=True)

    # -- pub/sub --------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        await self.redis.publish(self._ch(channel), data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        assert self._pubsub is not None
        try:
            await self._pubsub.subscribe(self._ch(channel))
        except (RedisError, OSError):
            # The reader resubscribes everything in _channels on a new
            # connection once Redis answers again.
            logger.warning("subscribe to %s deferred: redis unreachable", channel)
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            self._lost = True
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        assert self._pubsub is not None
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(self._ch(channel))

    async def _read_loop(self) -> None:
        strip = len(self.prefix) + 4  # "{prefix}:ch:"
        backoff = 0.1
        while True:
            try:
                if self._lost:
                    await self._resubscribe()
                    self._lost = False
                    backoff = 0.1
                assert self._pubsub is not None
                if not self._pubsub.subscribed:
                    # get_message on a pubsub with no channel returns at
                    # once; wait for a subscribe instead of spinning.
                    self._subscribed.clear()
                    await self._subscribed.wait()
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                if not self._lost:
                    logger.warning("bus reader lost redis (%s); resubscribing", exc)
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                self._lost = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if self._lost_at is not None:
                # The connection works again and the (re)subscriptions went
                # out before this read: what listeners read from the store
                # now, plus what arrives live from here on, is complete.
                lost_for = time.monotonic() - self._lost_at
                self._lost_at = None
                self._report_gap(lost_for + GAP_MARGIN_SECONDS)
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            try:
                self._on_message(channel[strip:], message["data"])
            except Exception:
                logger.exception("bus message handler failed")

    async def _resubscribe(self) -> None:
        """Every channel on a new connection; raises while Redis is down."""
        old, self._pubsub = self._pubsub, self.pubsub_client.pubsub(ignore_subscribe_messages=True)
        if old is not None:
            with contextlib.suppress(RedisError, OSError):
                await old.aclose()
        channels = [self._ch(c) for c in self._channels]
        if channels:
            await self._pubsub.subscribe(*channels)
            logger.info("bus resubscribed %d channels", len(channels))

    def _report_gap(self, seconds: float) -> None:
        """Messages of the last ``seconds`` may be missing on every channel."""
        metrics.BUS_GAPS.inc()
        signal = gap_signal(seconds)
        for channel in list(self._channels):
            try:
                self._on_message(channel, signal)
            except Exception:
                logger.exception("bus gap handler failed")

    @property
    def pubsub_client(self) -> aioredis.Redis:
        if self._pubsub_conn is None:
            raise RuntimeError("RedisBus.connect() was not awaited")
        return self._pubsub_conn

    # -- presence ---------------------------------------------------------------

    async def presence_join(
        self, project_id: str, agent_id: str, session_id: str, max_sessions: int = 0
    ) -> bool:
        triple = (project_id, agent_id, session_id)
        self._local.add(triple)
        try:
            result = await self._join_as(project_id, agent_id, session_id, max_sessions)
        except BaseException:
            self._local.discard(triple)
            raise
        if result < 0:
            self._local.discard(triple)
            raise SessionLimit(max_sessions)
        if result & 2:
            # This instance had been dropped from the registry: its other
            # sessions are gone from Redis too.
            await self._rejoin()
        return bool(result & 1)

    async def _join_as(
        self, project_id: str, agent_id: str, session_id: str, max_sessions: int = 0
    ) -> int:
        triple = f"{project_id} {agent_id} {session_id}"
        keys = [
            self._sess(project_id, agent_id),
            self._online(project_id),
            self._inst_sessions(self.instance_id),
            self._instances,
        ]
        args: list[str | int] = [session_id, agent_id, triple, self.instance_id, max_sessions]
        return int(await self._join(keys=keys, args=args))

    async def presence_leave(self, project_id: str, agent_id: str, session_id: str) -> bool:
        triple = (project_id, agent_id, session_id)
        self._local.discard(triple)
        try:
            return await self._leave_as(self.instance_id, project_id, agent_id, session_id)
        except (RedisError, OSError):
            # Left in Redis, the session would keep the agent online for as
            # long as this instance lives; the heartbeat retries it.
            self._pending_leaves.add(triple)
            raise

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

    async def instance_alive(self, instance_id: str) -> bool:
        """Its heartbeat key: gone one TTL after the instance stopped."""
        if instance_id == self.instance_id:
            return True
        return bool(await self.redis.exists(self._alive(instance_id)))

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._register()
                await self._retry_leaves()
                if failing:
                    self._reap_after = time.monotonic() + self.instance_ttl
                    failing = False
                if time.monotonic() >= self._reap_after:
                    await self._reap_dead()
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning("bus heartbeat failed: %s", exc)
                failing = True
            except Exception:
                logger.exception("bus heartbeat crashed")

    async def _retry_leaves(self) -> None:
        for triple in list(self._pending_leaves):
            project_id, agent_id, session_id = triple
            last = await self._leave_as(self.instance_id, project_id, agent_id, session_id)
            self._pending_leaves.discard(triple)
            if last:
                await self._report_offline({project_id: [agent_id]})

    async def _reap_dead(self) -> None:
        members = {
            raw.decode() if isinstance(raw, bytes) else raw
            for raw in await self.redis.smembers(self._instances)
        }
        vanished = self._known_instances - members - {self.instance_id}
        self._known_instances = members
        if vanished:
            # Reaped here or elsewhere (or shut down): what it committed in
            # its last moments may never have been published. It was alive
            # at most a TTL plus two heartbeats ago.
            self._report_gap(self.instance_ttl + 2 * self.heartbeat_seconds + GAP_MARGIN_SECONDS)
        for instance_id in members - {self.instance_id}:
            await self._reap(instance_id)

    async def _reap(self, instance_id: str, *, force: bool = False) -> None:
        keys = [self._alive(instance_id), self._instances, self._inst_sessions(instance_id)]
        args = [instance_id, self.prefix, "1" if force else "0"]
        offline: dict[str, list[str]] = {}
        for raw in await self._reap_script(keys=keys, args=args):
            project_id, _, agent_id = (raw.decode() if isinstance(raw, bytes) else raw).partition(
                " "
            )
            offline.setdefault(project_id, []).append(agent_id)
        if offline and instance_id != self.instance_id:
            logger.warning("instance %s is gone; its agents are offline", instance_id)
        await self._report_offline(offline)

    async def _report_offline(self, offline: dict[str, list[str]]) -> None:
        if self._on_offline is None:
            return
        for project_id, agents in offline.items():
            try:
                await self._on_offline(project_id, agents)
            except Exception:
                # Redis is already right; only the announcement is lost.
                logger.exception("could not announce %d agents offline", len(agents))
