"""Timestamps on the wire (RFC 3339 in UTC with a ``Z``), and the bounds of
a call's ``wait``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from protocol.errors import invalid_params


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(value: str) -> datetime:
    """Parse RFC 3339 (``Z`` or an offset); naive times are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_wait(wait: Any, limit: float, *, zero: bool = False) -> float:
    """``wait`` (seconds) as a float, or INVALID_PARAMS unless it is a number
    above 0 (or 0 itself, with ``zero``) and at most ``limit``."""
    number = not isinstance(wait, bool) and isinstance(wait, int | float)
    if not number or not (wait >= 0 if zero else wait > 0) or wait > limit:
        raise invalid_params(f"wait must be between 0 and {limit:g} seconds", wait=wait)
    return float(wait)
