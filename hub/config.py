"""Settings from environment variables, overridable by CLI flags.

Every setting has one environment variable (``BEADHUB_*``, or the
conventional ``DATABASE_URL`` / ``REDIS_URL``) and a default that suits the
laptop shape: embedded PostgreSQL in ``./.beadhub`` and the in-memory bus.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: The log levels of hub.logs (uvicorn's, but for "trace").
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


class SettingError(ValueError):
    """A setting the hub cannot start with; the message is one line that
    names the setting and says what to do (``beadhub`` exits 2)."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a whole number: set a number") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a number: set a number of seconds") from None


def _url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in schemes:
        return f"the scheme must be one of {', '.join(s + '://' for s in schemes)}"
    return None


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def _env_list(name: str) -> tuple[str, ...]:
    value = os.environ.get(name, "")
    return tuple(item.strip() for item in value.split(",") if item.strip())


#: Host names that reach only this machine.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Settings:
    #: PostgreSQL DSN; empty means "start the embedded server in data_dir".
    database_url: str = ""
    #: ``memory://`` (one process) or ``redis://host:port/db``.
    bus_url: str = "memory://"
    #: Prefix of every Redis key and channel, so several hubs (or test runs)
    #: can share one Redis without seeing each other.
    bus_prefix: str = "beadhub"
    data_dir: Path = Path(".beadhub")
    host: str = "127.0.0.1"
    port: int = 8000
    #: Identifies this process in cross-instance presence.
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    pool_min: int = 2
    pool_max: int = 8
    #: Largest WebSocket frame the hub reads; bigger frames close the socket
    #: (1009). Requests over ``max_request_bytes`` but under this get a
    #: JSON-RPC error and the socket stays open.
    ws_max_frame_bytes: int = 4 * 1024 * 1024
    #: Largest WebSocket request and HTTP body; a bigger HTTP body is
    #: refused (413) before it is read.
    max_request_bytes: int = 256 * 1024
    #: Largest request head (request line and headers) the hub reads:
    #: bigger ones are refused (431) while they arrive.
    max_header_bytes: int = 16 * 1024
    #: Bytes of frames a session may have waiting for a slow reader; past
    #: it the session is closed (1013) and the client resumes from its
    #: cursor.
    ws_max_queued_bytes: int = 8 * 1024 * 1024
    #: WebSocket sessions one agent may hold at once, on all instances.
    max_sessions_per_agent: int = 8
    #: Rate limits, calls per minute (hub.services.limits.RULES).
    rate_onboarding_per_minute: int = 30
    rate_anonymous_per_minute: int = 120
    rate_auth_failures_per_minute: int = 30
    rate_key_per_minute: int = 3000
    rate_sessions_per_minute: int = 60
    #: Calls (WebSocket requests, /mcp requests) one key may make on one
    #: instance: a bucket of ``rate_calls_burst`` refilled at
    #: ``rate_calls_per_second`` (hub.services.limits.CallBuckets).
    rate_calls_burst: int = 5000
    rate_calls_per_second: float = 500.0
    #: Host header values the hub answers (port ignored); ``*`` is any.
    #: Empty: the loopback names, plus ``host`` when it is a name or a
    #: specific address.
    allowed_hosts: tuple[str, ...] = ()
    ws_ping_interval: float = 10.0
    ws_ping_timeout: float = 10.0
    #: How long an HTTP-only agent stays online after a heartbeat.
    presence_ttl_seconds: int = 300
    #: How often an instance refreshes its registration, and how long it
    #: lives without one; a SIGKILLed instance's agents go offline within
    #: ttl + interval.
    instance_heartbeat_seconds: float = 2.0
    instance_ttl_seconds: float = 6.0
    reservation_default_ttl: int = 300
    reservation_max_ttl: int = 3600
    mail_max_body_bytes: int = 64 * 1024
    chat_max_wait_seconds: int = 600
    #: Leases (hub.services.leases): how long an agent may be gone (no
    #: session, no live heartbeat) before its claims / its reservations are
    #: released with reason ``holder_gone``; how often every instance looks
    #: for what a dead instance's timers left.
    claim_holder_grace_seconds: float = 900.0
    reservation_holder_grace_seconds: float = 60.0
    lease_sweep_seconds: float = 30.0
    #: Longest ``wait`` of a queued acquire or claim (hub.services.queues).
    queue_max_wait_seconds: int = 600
    log_level: str = "info"
    #: ``text`` or ``json`` (one object per line); see hub.logs.
    log_format: str = "text"
    #: Serve ``GET /metrics`` (counts and latencies only, no secrets; see
    #: docs/operations.md for why it needs no key).
    metrics_enabled: bool = True
    #: Events older than this are pruned; a resume from before it is told
    #: to resync (docs/protocol.md). 0 keeps every event.
    event_retention_days: float = 30.0
    #: Mail and chat older than this are deleted; 0 (the default) keeps them.
    message_retention_days: float = 0.0
    #: How often an instance looks for rows past retention.
    prune_interval_seconds: float = 600.0

    def hosts(self) -> frozenset[str]:
        """The Host names answered (lower case, no port, no brackets)."""
        if self.allowed_hosts:
            return frozenset(h.lower().strip("[]") for h in self.allowed_hosts)
        names = set(LOOPBACK_HOSTS)
        if self.host not in ("", "0.0.0.0", "::"):
            names.add(self.host.lower().strip("[]"))
        return frozenset(names)

    #: Default join policy of projects that set none: ``open`` or
    #: ``approval``; empty: open while the hub listens on loopback only,
    #: approval otherwise (hub.services.admission).
    join_policy: str = ""
    #: Mint an operator token at start-up, write it to data_dir and print
    #: the sign-in link (``beadhub serve``; test servers do not).
    announce_operator: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        settings = cls(
            database_url=os.environ.get("DATABASE_URL", ""),
            bus_url=os.environ.get("REDIS_URL") or os.environ.get("BEADHUB_BUS_URL", "memory://"),
            bus_prefix=os.environ.get("BEADHUB_BUS_PREFIX", "beadhub"),
            data_dir=Path(os.environ.get("BEADHUB_DATA_DIR", ".beadhub")),
            host=os.environ.get("BEADHUB_HOST", "127.0.0.1"),
            port=_env_int("BEADHUB_PORT", 8000),
            instance_id=os.environ.get("BEADHUB_INSTANCE_ID") or uuid.uuid4().hex[:12],
            pool_min=_env_int("BEADHUB_POOL_MIN", 2),
            pool_max=_env_int("BEADHUB_POOL_MAX", 8),
            ws_ping_interval=_env_float("BEADHUB_WS_PING_INTERVAL", 10.0),
            ws_ping_timeout=_env_float("BEADHUB_WS_PING_TIMEOUT", 10.0),
            presence_ttl_seconds=_env_int("BEADHUB_PRESENCE_TTL", 300),
            instance_heartbeat_seconds=_env_float("BEADHUB_INSTANCE_HEARTBEAT", 2.0),
            instance_ttl_seconds=_env_float("BEADHUB_INSTANCE_TTL", 6.0),
            reservation_default_ttl=_env_int("BEADHUB_RESERVATION_TTL", 300),
            reservation_max_ttl=_env_int("BEADHUB_RESERVATION_MAX_TTL", 3600),
            claim_holder_grace_seconds=_env_float("BEADHUB_CLAIM_HOLDER_GRACE", 900.0),
            reservation_holder_grace_seconds=_env_float("BEADHUB_RESERVATION_HOLDER_GRACE", 60.0),
            lease_sweep_seconds=_env_float("BEADHUB_LEASE_SWEEP", 30.0),
            queue_max_wait_seconds=_env_int("BEADHUB_QUEUE_MAX_WAIT", 600),
            log_level=os.environ.get("BEADHUB_LOG_LEVEL", "info"),
            log_format=os.environ.get("BEADHUB_LOG_FORMAT", "text"),
            metrics_enabled=_env_bool("BEADHUB_METRICS", True),
            event_retention_days=_env_float("BEADHUB_EVENT_RETENTION_DAYS", 30.0),
            message_retention_days=_env_float("BEADHUB_MESSAGE_RETENTION_DAYS", 0.0),
            prune_interval_seconds=_env_float("BEADHUB_PRUNE_INTERVAL", 600.0),
            max_request_bytes=_env_int("BEADHUB_MAX_REQUEST_BYTES", 256 * 1024),
            max_header_bytes=_env_int("BEADHUB_MAX_HEADER_BYTES", 16 * 1024),
            ws_max_frame_bytes=_env_int("BEADHUB_WS_MAX_FRAME_BYTES", 4 * 1024 * 1024),
            ws_max_queued_bytes=_env_int("BEADHUB_WS_MAX_QUEUED_BYTES", 8 * 1024 * 1024),
            max_sessions_per_agent=_env_int("BEADHUB_MAX_SESSIONS_PER_AGENT", 8),
            rate_onboarding_per_minute=_env_int("BEADHUB_RATE_ONBOARDING", 30),
            rate_anonymous_per_minute=_env_int("BEADHUB_RATE_ANONYMOUS", 120),
            rate_auth_failures_per_minute=_env_int("BEADHUB_RATE_AUTH_FAILURES", 30),
            rate_key_per_minute=_env_int("BEADHUB_RATE_KEY", 3000),
            rate_sessions_per_minute=_env_int("BEADHUB_RATE_SESSIONS", 60),
            rate_calls_burst=_env_int("BEADHUB_RATE_CALLS_BURST", 5000),
            rate_calls_per_second=_env_float("BEADHUB_RATE_CALLS_PER_SECOND", 500.0),
            allowed_hosts=_env_list("BEADHUB_ALLOWED_HOSTS"),
            join_policy=os.environ.get("BEADHUB_JOIN_POLICY", ""),
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(settings, **overrides)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`SettingError` for the first setting that cannot work."""
        problem = self.database_url and _url_problem(self.database_url, ("postgresql", "postgres"))
        if problem:
            raise SettingError(
                f"DATABASE_URL={redact(self.database_url)!r} is not a PostgreSQL URL ({problem}):"
                " use postgresql://user:password@host:5432/dbname, or unset it for the embedded"
                " database"
            )
        problem = _url_problem(self.bus_url, ("memory", "redis", "rediss", "unix"))
        if problem:
            raise SettingError(
                f"REDIS_URL={redact(self.bus_url)!r} is not a Redis URL ({problem}):"
                " use redis://host:6379/0, or unset it for one instance"
            )
        if not 0 <= self.port <= 65535:
            raise SettingError(
                f"BEADHUB_PORT / --port {self.port} is not a port: choose one in 1-65535"
            )
        if not self.host:
            raise SettingError("BEADHUB_HOST / --host is empty: set an address, e.g. 127.0.0.1")
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingError(
                f"BEADHUB_LOG_LEVEL={self.log_level!r} is not a log level:"
                f" use one of {', '.join(LOG_LEVELS)}"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingError(
                f"BEADHUB_LOG_FORMAT / --log-format {self.log_format!r} is not a log format:"
                f" use one of {', '.join(LOG_FORMATS)}"
            )
        if not 1 <= self.pool_min <= self.pool_max:
            raise SettingError(
                f"BEADHUB_POOL_MIN={self.pool_min} / BEADHUB_POOL_MAX={self.pool_max}:"
                " need 1 <= BEADHUB_POOL_MIN <= BEADHUB_POOL_MAX"
            )
        if self.instance_ttl_seconds <= self.instance_heartbeat_seconds > 0:
            raise SettingError(
                f"BEADHUB_INSTANCE_TTL={self.instance_ttl_seconds} must be longer than"
                f" BEADHUB_INSTANCE_HEARTBEAT={self.instance_heartbeat_seconds}: raise the TTL"
            )
        positive = {
            "BEADHUB_INSTANCE_HEARTBEAT": self.instance_heartbeat_seconds,
            "BEADHUB_PRESENCE_TTL": self.presence_ttl_seconds,
            "BEADHUB_RESERVATION_TTL": self.reservation_default_ttl,
            "BEADHUB_WS_PING_INTERVAL": self.ws_ping_interval,
            "BEADHUB_WS_PING_TIMEOUT": self.ws_ping_timeout,
            "BEADHUB_RATE_CALLS_PER_SECOND": self.rate_calls_per_second,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingError(f"{name}={value} must be more than 0: set a positive number")
        if self.rate_calls_burst < 1:
            raise SettingError(
                f"BEADHUB_RATE_CALLS_BURST={self.rate_calls_burst} must be at least 1:"
                " set the number of calls a key may make at once"
            )
        if self.reservation_max_ttl < self.reservation_default_ttl:
            raise SettingError(
                f"BEADHUB_RESERVATION_MAX_TTL={self.reservation_max_ttl} is below"
                f" BEADHUB_RESERVATION_TTL={self.reservation_default_ttl}: raise the maximum"
            )
