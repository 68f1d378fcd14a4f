"""The README's scripted demo, run for real against a hub."""

from __future__ import annotations

from hub.demo import run


async def test_the_demo_story_plays_out(hub_server):
    lines: list[str] = []
    result = await run(hub_server.http_url, say=lines.append)
    assert result["online"] == ["alice-frontend", "bob-backend", "carol-coordinator"]
    assert set(result["ready"]) == {"bd-10", "bd-12", "bd-13"}
    assert result["chat"]["status"] == "replied"
    assert result["chat"]["reply"]["body"] == "Yes, I'll take bd-12."
    assert result["alice_claim"] == "bd-12 is being worked on by bob-backend (Maria)"
    assert result["reservations"] == [
        ("src/api/**", "bob-backend"),
        ("src/web/list.js", "alice-frontend"),
    ]
    assert result["escalation_response"] == "Cursor pagination, like the mail inbox."
    assert any("refused" in line for line in lines)
