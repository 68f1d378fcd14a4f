"""Which events a session receives: its subscription.

A subscription is a list of event types or type families. ``"mail"``
matches ``mail`` and ``mail.read``; ``"reservation"`` every
``reservation.*``; ``"reservation.granted"`` only that type; ``"*"`` all.
No subscription (``None``) means every event the agent may see, which is
the default. Addressing still applies: a subscription never shows an agent
mail or chat sent to others.

Why: a team's project-wide events (every reservation granted and released,
every presence change) reach every session of the project. A busy team's
agents that act only on what is sent to them can subscribe to
``["mail", "chat", "escalation"]`` and skip that traffic; the dashboard
keeps the whole feed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

TOPIC_RE = re.compile(r"^(\*|[a-z_]+(\.[a-z_]+)*)$")
MAX_TOPICS = 32

#: Every event type the hub sends (docs/protocol.md, "Events"). A
#: subscription naming anything else is refused: a misspelt type would
#: otherwise silently receive nothing. tests/test_subscriptions.py checks
#: that every type the hub's code emits is listed here.
EVENT_TYPES = frozenset(
    {
        "presence",
        "resync",
        "agent.registered",
        "agent.granted",
        "join.requested",
        "join.decided",
        "join.policy.updated",
        "key.rotated",
        "key.revoked",
        "audit.recorded",
        "repo.registered",
        "workspace.registered",
        "workspace.deleted",
        "escalation.created",
        "escalation.answered",
        "escalation.expired",
        "policy.updated",
        "mail",
        "mail.read",
        "chat.message",
        "chat.read",
        "beads.synced",
        "claim.acquired",
        "claim.released",
        "claim.queued",
        "claim.dequeued",
        "reservation.granted",
        "reservation.renewed",
        "reservation.released",
        "reservation.revoked",
        "reservation.expired",
        "reservation.queued",
        "reservation.dequeued",
        "guard.override",
    }
)


def known(topic: str) -> bool:
    """A type, or a family (a prefix ending at a dot) of at least one."""
    return topic == "*" or any(t == topic or t.startswith(topic + ".") for t in EVENT_TYPES)


Matcher = Callable[[str], bool]


def check(topics: Sequence[str]) -> list[str]:
    """The topics, deduplicated; ValueError naming the first bad one."""
    if isinstance(topics, str) or len(topics) > MAX_TOPICS:
        raise ValueError(f"give a list of at most {MAX_TOPICS} event types")
    for topic in topics:
        if not isinstance(topic, str) or not TOPIC_RE.match(topic) or not known(topic):
            raise ValueError(f"{topic!r} is not an event type (like 'mail' or 'chat.message')")
    return list(dict.fromkeys(topics))


def matcher(topics: Sequence[str] | None) -> Matcher | None:
    """A test for event types, or None when every type passes. Equal
    subscriptions get the same test (the hub groups its listeners by it)."""
    if topics is None or "*" in topics:
        return None
    return _matcher(frozenset(topics))


@lru_cache(maxsize=1024)
def _matcher(topics: frozenset[str]) -> Matcher:
    families = tuple(f"{t}." for t in sorted(topics))

    @lru_cache(maxsize=256)
    def wants(type_: str) -> bool:
        return type_ in topics or type_.startswith(families)

    return wants


def parse_query(value: str) -> list[str]:
    """``?events=mail,chat`` as a checked list (empty: nothing at all)."""
    return check([t.strip() for t in value.split(",") if t.strip()])
