"""The event catalogue (protocol.topics.EVENT_TYPES) is what the hub
emits and what docs/protocol.md lists: subscriptions refuse every other
name, so a type missing here could never be subscribed to."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.topics import EVENT_TYPES


def test_every_event_the_hub_emits_is_a_known_type_and_documented():
    root = Path(__file__).resolve().parent.parent
    emitted = set()
    for path in (root / "hub").rglob("*.py"):
        emitted |= set(re.findall(r'emit\(\s*"([a-z_.]+)"', path.read_text()))
    assert emitted, "no tx.emit calls found: the pattern is out of date"
    assert emitted <= EVENT_TYPES, emitted - EVENT_TYPES
    protocol_md = (root / "docs" / "protocol.md").read_text()
    events_section = protocol_md.split("## Events", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"(?m)^\| `([a-z_.]+)` \|", events_section))
    assert documented == EVENT_TYPES
