"""Team access in real Chromium, against a real hub: a signed-in human
rotates and revokes agents' keys, admits and refuses agents waiting to
join, hands out invitations, grants the coordinator role, deletes an agent
and reads the audit trail, all live; an agent's own view gets none of it;
and a page told to ``resync`` reads everything again."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.browser.conftest import PHONE, FrontDoor, sign_in, sign_in_human
from tests.shim import bdh_init_body
from tests.support import (
    RunningHub,
    create_database,
    drop_database,
    onboard,
    running_hub,
    unique,
)
from tests.support import sign_in_human as human_ticket
from tests.test_retention import backdate, eventually

LIVE = 3_000
TALL = {"width": 1366, "height": 1100}
#: Revocation reaches an open session within this (docs/security.md).
CLOSED_WITHIN = 2.0


def access_agent(page: Page, alias: str) -> Any:
    return page.locator(f'#access-agents li.access-agent[data-alias="{alias}"]')


def audit_actions(page: Page) -> Any:
    return page.locator("#audit li.audit-entry")


async def init(server: RunningHub, body: dict[str, Any], credential: str = "") -> httpx.Response:
    """bdh's ``POST /v1/init``, as an unknown agent sends it."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await http.post("/v1/init", json=body, headers=headers)


async def refused(awaitable: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await awaitable
    return info.value


async def test_a_human_rotates_and_revokes_keys_from_the_page(new_page, join, connect, hub_server):
    lead = await join("lead", human_name="Ana")
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    # The hub notes a key's use a moment later (hub/services/key_use.py).
    await eventually(
        lambda: hub_server.hub.store.fetchval(
            "SELECT last_used_at IS NOT NULL FROM api_keys WHERE agent_id = $1", bob["agent_id"]
        )
    )
    page = await new_page(permissions=["clipboard-read", "clipboard-write"])
    await sign_in_human(page, hub_server, lead["project_slug"], "Ana")

    row = access_agent(page, "alice")
    active = row.locator('li.key[data-active="true"]')
    await expect(active).to_have_count(1)
    await expect(active).to_have_attribute("data-prefix", alice["api_key"][:12])
    await expect(active).to_contain_text("never used")
    # bob's session used his key just now; alice's is only made.
    await expect(access_agent(page, "bob").locator("li.key")).to_contain_text("used just now")

    # Rotate (asks once more): the new key is shown once, with a copy button.
    await row.get_by_role("button", name="Rotate key").click()
    await row.get_by_role("button", name="Confirm").click()
    secret = page.locator("#access-secret")
    await expect(secret).to_be_visible()
    await expect(secret).to_contain_text("New key for alice")
    await expect(secret).to_contain_text("will not be shown again")
    new_key = await page.locator("#access-secret-value").input_value()
    assert new_key.startswith("aw_sk_") and new_key != alice["api_key"]
    await secret.get_by_role("button", name="Copy").click()
    await expect(secret.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("() => navigator.clipboard.readText()") == new_key
    # The old key is refused on the hub, the new one works.
    old = await refused(HubClient(hub_server.ws_url, alice["api_key"], reconnect=False).connect())
    assert old.code == ErrorCode.UNAUTHORIZED
    async with HubClient(hub_server.ws_url, new_key, reconnect=False) as fresh:
        assert (await fresh.call("session.whoami"))["alias"] == "alice"
        await expect(active).to_have_attribute("data-prefix", new_key[:12])
        await expect(row.locator(".revoked-keys summary")).to_have_text("1 revoked key")
        # Live: alice rotating her own key shows here without a click.
        own = await fresh.call("keys.rotate")
    await expect(active).to_have_attribute("data-prefix", own["api_key"][:12], timeout=LIVE)
    await expect(row.locator(".revoked-keys summary")).to_have_text("2 revoked keys")
    await secret.get_by_role("button", name="Done, hide it").click()
    await expect(secret).to_be_hidden()
    assert new_key not in await page.content()
    assert new_key not in repr(await page.evaluate("() => ({...sessionStorage})"))

    # Revoke bob's key: refused at once, his open session closes.
    bob_row = access_agent(page, "bob")
    await bob_row.get_by_role("button", name="Revoke").click()
    await bob_row.get_by_role("button", name="Confirm").click()
    await asyncio.wait_for(b.ended(), CLOSED_WITHIN)
    assert b.revoked
    await expect(bob_row.locator('li.key[data-active="true"]')).to_have_count(0)
    await expect(bob_row).to_contain_text("No working key.")
    await bob_row.locator(".revoked-keys summary").click()
    await expect(bob_row.locator(".revoked-keys li.key")).to_contain_text("by Ana (human)")

    # The trail, newest first, names what was done to whom.
    await expect(audit_actions(page).first).to_have_attribute("data-action", "keys.revoke")
    await expect(audit_actions(page).first).to_contain_text("bob's key")
    await expect(audit_actions(page).nth(1)).to_have_attribute("data-action", "keys.rotate")
    await expect(audit_actions(page).nth(1)).to_contain_text("alice")
    await expect(audit_actions(page).first).to_contain_text("Ana (human)")


async def test_a_waiting_agent_appears_live_and_is_admitted_or_refused(new_page, join, hub_server):
    lead = await join("lead", human_name="Ana")
    slug = lead["project_slug"]
    page = await new_page()
    await sign_in_human(page, hub_server, slug, "Ana")
    switch = page.get_by_role("switch", name="New agents wait for a human's approval")
    await expect(switch).to_be_enabled()
    await expect(switch).not_to_be_checked()  # the hub listens on loopback: open
    await switch.check()
    await expect(page.locator("#join-policy-note")).to_have_attribute("data-policy", "approval")

    body = bdh_init_body(slug, "newcomer", role="backend")
    waiting = await init(hub_server, body)
    assert waiting.status_code == 403 and "pending_validation" in waiting.text
    request = page.locator('#join-requests li[data-alias="newcomer"]')
    await expect(request).to_contain_text("laptop:/src/widgets-newcomer", timeout=LIVE)
    await expect(request).to_contain_text("for Juan")
    await expect(request).to_contain_text("from 127.0.0.1")
    await expect(page.locator("#access-note")).to_have_text("1 waiting to join")
    await request.get_by_role("button", name="Admit").click()
    await expect(request).to_have_count(0)
    joined = await init(hub_server, body)  # the same init, now admitted
    assert joined.status_code == 200 and joined.json()["alias"] == "newcomer", joined.text
    await expect(access_agent(page, "newcomer").locator("li.key")).to_have_count(1, timeout=LIVE)

    pushy = bdh_init_body(slug, "pushy")
    assert "pending_validation" in (await init(hub_server, pushy)).text
    request = page.locator('#join-requests li[data-alias="pushy"]')
    await request.get_by_role("button", name="Refuse").click()
    await request.get_by_role("button", name="Confirm").click()
    await expect(request).to_have_count(0)
    again = await init(hub_server, pushy)
    assert again.status_code == 403 and "join_refused" in again.text

    # Another human switching the policy back shows here at once.
    other = await human_ticket(hub_server, slug, "Maria")
    async with HubClient(hub_server.ws_url, ticket=other["ticket"], reconnect=False) as maria:
        await maria.call("join.policy.set", join_policy="open")
        await expect(switch).not_to_be_checked(timeout=LIVE)
    trail = audit_actions(page)
    await expect(trail.first).to_have_attribute("data-action", "join.policy.set")
    await expect(trail.first).to_contain_text("Maria (human)")
    await expect(trail.nth(1)).to_have_attribute("data-action", "auth.signin")
    await expect(trail.nth(2)).to_have_attribute("data-action", "join.refuse")
    await expect(trail.nth(2)).to_contain_text("pushy's join request")
    await expect(trail.nth(3)).to_have_attribute("data-action", "join.admit")
    await expect(trail.nth(3)).to_contain_text("newcomer's join request")
    await expect(trail.nth(4)).to_contain_text("join_policy: approval")
    await expect(trail.nth(4)).to_contain_text("Ana (human)")


async def test_an_invitation_made_in_the_page_admits_at_once(new_page, join, hub_server):
    lead = await join("lead", human_name="Ana")
    slug = lead["project_slug"]
    page = await new_page()
    await sign_in_human(page, hub_server, slug, "Ana")
    await page.get_by_role("switch", name="New agents wait for a human's approval").check()
    await expect(page.locator("#join-policy-note")).to_have_attribute("data-policy", "approval")

    # The hub checks the number; its refusal reads as a sentence, not JSON.
    await page.locator("#invite-uses").fill("5000")
    await page.get_by_role("button", name="Create invitation").click()
    toast = page.locator("#toast")
    await expect(toast).to_contain_text("Could not create an invitation")
    await expect(toast).to_contain_text("uses")
    await expect(toast).to_have_class("toast error")
    assert "{" not in await toast.text_content()

    await page.locator("#invite-uses").fill("1")
    await page.get_by_role("button", name="Create invitation").click()
    secret = page.locator("#access-secret")
    await expect(secret).to_contain_text("Invitation to")
    await expect(secret).to_contain_text("1 use")
    token = await page.locator("#access-secret-value").input_value()
    assert token.startswith("bhi_")
    joined = await init(hub_server, bdh_init_body(slug, "guest"), token)
    assert joined.status_code == 200, joined.text  # no join request: admitted at once
    await expect(access_agent(page, "guest")).to_be_visible(timeout=LIVE)
    await expect(page.locator("#join-requests li")).to_have_count(0)
    spent = await init(hub_server, bdh_init_body(slug, "guest2"), token)
    assert spent.status_code == 403
    # The trail keeps that it was made, never the token.
    await expect(audit_actions(page).first).to_have_attribute("data-action", "invitations.create")
    assert token not in await page.locator("#audit").text_content()


async def test_a_human_grants_the_coordinator_role_and_deletes_an_agent(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    carol = await join("carol", role="coordinator")  # declared: grants nothing
    c = await connect(carol)
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], "Ana")
    row = access_agent(page, "carol")
    await expect(row.locator(".tag.granted")).to_have_count(0)

    await row.get_by_role("button", name="Make coordinator").click()
    event = await c.next_event("agent.granted", timeout=5)
    assert (event["data"]["granted_role"], event["data"]["by"]) == ("coordinator", "human:Ana")
    await expect(row.locator(".tag.granted")).to_have_text("coordinator", timeout=LIVE)
    team_card = page.locator('#team li.agent[data-alias="carol"]')
    await expect(team_card.locator(".tag.granted")).to_have_text("coordinator (granted)")
    # The agent's timeline says who did it.
    await team_card.locator(".agent-open").click()
    await expect(page.locator('#timeline li[data-type="agent.granted"]')).to_contain_text(
        "made coordinator by Ana (human)", timeout=LIVE
    )
    await row.get_by_role("button", name="Take back coordinator").click()
    event = await c.next_event("agent.granted", timeout=5)
    assert event["data"]["granted_role"] is None
    await expect(row.locator(".tag.granted")).to_have_count(0, timeout=LIVE)

    await row.get_by_role("button", name="Delete agent").click()
    await row.get_by_role("button", name="Confirm").click()
    await asyncio.wait_for(c.ended(), CLOSED_WITHIN)
    await expect(row).to_have_count(0, timeout=LIVE)
    await expect(page.locator('#team li.agent[data-alias="carol"]')).to_have_count(0)
    actions = audit_actions(page)
    await expect(actions.first).to_have_attribute("data-action", "agents.delete")
    await expect(actions.nth(1)).to_have_attribute("data-action", "agents.grant")
    await expect(actions.nth(2)).to_contain_text("role: coordinator")


async def test_the_audit_trail_pages_through_all_of_it_and_follows_live(new_page, join, hub_server):
    lead = await join("lead", human_name="Ana")
    slug = lead["project_slug"]
    page = await new_page()
    await sign_in_human(page, hub_server, slug, "Ana")
    other = await human_ticket(hub_server, slug, "Maria")
    async with HubClient(hub_server.ws_url, ticket=other["ticket"], reconnect=False) as maria:
        for n in range(29):
            await maria.call("join.policy.set", join_policy="approval" if n % 2 else "open")
        await maria.call("invitations.create")
        # Her 30 changes, newest first, as they happen. Page 1 is current
        # once it shows the last one (an earlier re-read also shows 25).
        await expect(audit_actions(page).first).to_have_attribute(
            "data-action", "invitations.create", timeout=LIVE
        )
        await expect(audit_actions(page)).to_have_count(25)
        status = page.locator("#audit-status")
        await page.get_by_role("button", name="Older").click()
        await expect(status).to_have_attribute("data-page", "2")
        # The first 5 changes, the sign-ins and the link Ana signed in with.
        await expect(audit_actions(page)).to_have_count(8)
        await expect(status).to_have_text("Page 2 (the oldest)")
        await expect(page.get_by_role("button", name="Older")).to_be_disabled()
        await expect(audit_actions(page).last).to_have_attribute("data-action", "auth.link")
        await expect(audit_actions(page).last).to_contain_text("operator")
        await expect(audit_actions(page).first).to_have_attribute("data-action", "join.policy.set")
        # On an older page, new entries are counted, not pushed in.
        await maria.call("join.policy.set", join_policy=None)
        newer = page.get_by_role("button", name="Newer (1 new)")
        await expect(newer).to_be_visible(timeout=LIVE)
        await newer.click()
    await expect(status).to_have_attribute("data-page", "1")
    await expect(audit_actions(page).first).to_contain_text("join_policy: none")


async def test_an_agent_view_gets_no_access_controls_and_the_hub_refuses_them(
    new_page, join, hub_server
):
    # bob is on another host: alice's clean-up of her host's gone
    # workspaces (bdh's) does not reach him.
    alice, bob = await join("alice"), await join("bob", hostname="elsewhere")
    page = await new_page()
    await sign_in(page, hub_server.http_url, alice["api_key"])
    await expect(page.locator("#team li.agent")).to_have_count(2)
    await expect(page.locator("#access-panel")).to_be_hidden()
    await expect(page.locator("#audit-panel")).to_be_hidden()
    assert await page.locator("#access-agents li, #audit li").count() == 0

    # What such a tab holds: an agent ticket, with that agent's powers only.
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        ticket = (await http.post("/v1/auth/ticket", json={"api_key": alice["api_key"]})).json()
    async with HubClient(hub_server.ws_url, ticket=ticket["ticket"], reconnect=False) as tab:
        for method, params in [
            ("join.requests", {}),
            ("join.policy.set", {"join_policy": "open"}),
            ("invitations.create", {}),
            ("agents.grant", {"agent_id": bob["agent_id"], "role": "coordinator"}),
            ("audit.list", {}),
            ("keys.rotate", {"agent_id": bob["agent_id"]}),
        ]:
            error = await refused(tab.call(method, **params))
            assert error.code == ErrorCode.FORBIDDEN, method
        error = await refused(tab.call("agents.delete", agent_id=bob["agent_id"]))
        assert error.code == ErrorCode.FORBIDDEN
        mine = (await tab.call("keys.list"))["keys"]
        assert {k["alias"] for k in mine} == {"alice"}


@pytest.fixture
async def pruning_hub() -> Any:
    """A hub on a database of its own that prunes events older than a day
    (the pruner walks the log from its oldest event: tests/test_retention.py)."""
    dsn = await create_database()
    try:
        async with running_hub(
            database_url=dsn, event_retention_days=1, prune_interval_seconds=0.2
        ) as server:
            yield server, dsn
    finally:
        await drop_database(dsn)


async def test_a_resync_makes_the_page_read_everything_again(new_page, pruning_hub):
    server, dsn = pruning_hub
    slug = "resync-widgets"
    alice = await onboard(server.http_url, slug, "alice")
    lead = await onboard(server.http_url, slug, "lead", human_name="Ana")
    door = await FrontDoor(server).start()
    try:
        async with HubClient(server.ws_url, alice["api_key"], reconnect=False) as a:
            await a.call("mail.send", to=["lead"], subject="before", body="seen live")
            # While the hub is unreachable the page also asks /ready in vain.
            new_page.allow("Failed to load resource")
            page = await new_page()
            await sign_in_human(page, server, slug, "Ana", url=door.http_url)
            feed = page.locator("#activity li.message")
            await expect(feed).to_contain_text(["before"])
            with door.closed():
                await expect(page.locator("#outage")).to_be_visible(timeout=LIVE)
                await a.call("mail.send", to=["human:Ana"], subject="while away", body="-")
                await a.call("keys.rotate")
                last = await server.hub.store.fetchval(
                    "SELECT max(seq) FROM events WHERE project_id = $1", alice["project_id"]
                )
                # Longer than the hub keeps events: they are pruned.
                await backdate(dsn, alice["project_id"], ("events",))
                await eventually(
                    lambda: server.hub.store.fetchval(
                        "SELECT pruned_through >= $2 FROM event_horizons WHERE project_id = $1",
                        alice["project_id"],
                        last,
                    )
                )
        # Back: the hub cannot replay what the page missed and says resync.
        note = page.locator("#resync-note")
        await expect(note).to_be_visible(timeout=10_000)
        await expect(note).to_contain_text("keeps events (1 day)")
        await expect(page.locator("#outage")).to_be_hidden()
        # The feed built from events is dropped (its events are gone) ...
        await expect(feed).to_have_count(0)
        # ... and the lists are read from the store again.
        await expect(page.locator("#inbox-count")).to_have_text("1")
        revoked = access_agent(page, "alice").locator(".revoked-keys summary")
        await expect(revoked).to_have_text("1 revoked key")
        assert lead["alias"] == "lead"
    finally:
        await door.stop()


async def test_screenshots_of_team_access(new_page, join, connect, hub_server, screenshot_dir):
    """A waiting agent, a rotated key and the trail; light on a desktop,
    dark on a phone (without sideways scrolling)."""
    slug = unique("acme-widgets")
    lead = await join("lead", human_name="Ana", role="coordinator", project_slug=slug)
    for alias, role in [("alice", "backend"), ("bob", "frontend")]:
        await connect(await join(alias, role=role, human_name="Ana", project_slug=slug))
    signed_in = await human_ticket(hub_server, slug, "Ana")
    async with HubClient(hub_server.ws_url, ticket=signed_in["ticket"], reconnect=False) as ana:
        await ana.call("join.policy.set", join_policy="approval")
        await ana.call("agents.grant", agent_id=lead["agent_id"], role="coordinator")
        await ana.call("keys.rotate", agent_id=lead["agent_id"])
    body = bdh_init_body(slug, "carol-reviewer-with-a-long-name", role="reviewer")
    body["workspace_path"] = "/home/juan/src/widgets/worktrees/carol-reviewer-with-a-long-name"
    assert "pending_validation" in (await init(hub_server, body)).text

    for name, options in [
        ("dashboard-team-access.png", {"color_scheme": "light", "viewport": TALL}),
        ("dashboard-team-access-phone-dark.png", {"color_scheme": "dark", "viewport": PHONE}),
    ]:
        page = await new_page(**options)
        await sign_in_human(page, hub_server, slug, "Ana")
        await expect(page.locator("#join-requests li")).to_have_count(1)
        await expect(audit_actions(page).nth(3)).to_be_visible()
        panel = page.locator("#access-panel")
        if "phone" in name:
            overflow = await page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390px"
            box = await panel.bounding_box()
            assert box is not None and box["x"] + box["width"] <= PHONE["width"]
            await panel.scroll_into_view_if_needed()
            await panel.screenshot(path=screenshot_dir / name)
        else:
            await page.screenshot(path=screenshot_dir / name, full_page=True)
