"""The live dashboard, exercised the way a human uses it: a real Chromium
page against a real hub, with real agents (HubClient) on the other side.

Timing: every wait is bounded (Playwright's expect, HubClient.next_event);
nothing sleeps. "Live" means the page changes while the test only acts on
the agent side, so it cannot be a reload or a poll the test triggered.
"""

from __future__ import annotations

import re

import orjson
import pytest
from playwright.async_api import Page, expect

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.browser.conftest import PHONE, FrontDoor, agent_card, sign_in, sign_in_human
from tests.support import REDIS_URL, RunningHub, grant_coordinator, onboard, running_hub, unique

# The team view must follow presence within about a second; the bound is a
# little wider so a loaded CI machine does not turn into a flaky test.
LIVE = 2_000


async def session_storage(page: Page) -> dict[str, str]:
    return await page.evaluate("() => Object.fromEntries(Object.entries(sessionStorage))")


# -- sign-in ---------------------------------------------------------------------


async def test_link_sign_in_keeps_a_ticket_and_drops_the_key(new_page, join, hub_server, slug):
    alice = await join("alice", human_name="Juan")
    page = await new_page()

    await sign_in(page, hub_server.http_url, alice["api_key"])

    await expect(page.locator("#project-slug")).to_have_text(slug)
    # An agent's key opens that agent's own view, never a human's.
    await expect(page.locator("#human-name")).to_have_text("alice (agent view)")
    assert "key" not in page.url and alice["api_key"] not in page.url
    stored = await session_storage(page)
    assert alice["api_key"] not in repr(stored)
    assert any("bht_" in value for value in stored.values()), stored
    # The keyed address was replaced, not pushed: Back leaves the dashboard.
    await page.go_back()
    assert page.url == "about:blank"
    await page.go_forward()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    ticket = next(orjson.loads(v)["ticket"] for v in stored.values() if "bht_" in v)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await session_storage(page) == {}
    # Signing out revoked the ticket on the hub, not only in the tab.
    with pytest.raises(RpcError) as refused:
        await HubClient(hub_server.ws_url, ticket=ticket, reconnect=False).connect()
    assert refused.value.code == ErrorCode.UNAUTHORIZED


async def test_the_link_bdh_dashboard_prints_signs_in_and_drops_the_key(
    new_page, join, hub_server, slug
):
    alice = await join("alice", human_name="Juan")
    page = await new_page()
    # `bdh :dashboard` prints <hub>/#api_key=<key>.
    await page.goto(f"{hub_server.http_url}/#api_key={alice['api_key']}")

    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("#project-slug")).to_have_text(slug)
    assert "api_key" not in page.url and alice["api_key"] not in page.url
    assert alice["api_key"] not in repr(await session_storage(page))
    await page.go_back()
    assert page.url == "about:blank"


# Every toast the page shows, kept from the first script on (a toast hides after 4 s).
RECORD_TOASTS = """
new MutationObserver(() => {
  const el = document.getElementById("toast");
  if (el && !el.hidden) (window.__toasts ??= []).push(el.className + ": " + el.textContent);
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"""


async def test_the_agents_own_view_is_the_agents(new_page, join, connect, hub_server):
    alice = await join("alice", human_name="Juan")
    b = await connect(await join("bob"))
    page = await new_page()
    await page.add_init_script(RECORD_TOASTS)
    await page.goto(f"{hub_server.http_url}/#api_key={alice['api_key']}")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    # What only a human may see (who waits on whom, stale holdings, every
    # conversation, webhooks): the agent's view neither shows nor asks for it.
    await expect(page.locator("#webhooks-panel")).to_be_hidden()
    await expect(page.locator("#attention-panel")).to_be_hidden()
    await expect(page.locator('#messages-tabs [data-tab="chats"]')).to_be_hidden()
    # Mail to the agent is mail to "me": the inbox follows it live.
    badge = page.locator("#inbox-count")
    await expect(badge).to_have_text("0")
    await b.call("mail.send", to=["alice"], subject="api done", body="merged")
    await expect(badge).to_have_text("1", timeout=LIVE)
    await expect(page.locator("#inbox-list")).to_contain_text("bob: api done")
    # A chat to the agent lands in its inbox too, and asks for no human's list.
    await b.call("chat.send", to=["alice"], body="ping")
    await expect(badge).to_have_text("2", timeout=LIVE)
    toasts = await page.evaluate("() => window.__toasts ?? []")
    assert toasts == [], sorted(set(toasts))


async def test_form_sign_in_and_a_bad_key(new_page, join, hub_server, slug):
    alice = await join("alice")
    page = await new_page()
    new_page.allow("status of 401")  # the bad key's answer
    await page.goto(hub_server.http_url + "/")

    await page.get_by_label("Sign-in token").fill("bh_not_a_real_key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_contain_text("Sign-in failed")
    await expect(page.locator("#app")).to_be_hidden()

    await page.get_by_label("Sign-in token").fill(alice["api_key"])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#project-slug")).to_have_text(slug)
    await expect(page.get_by_label("Sign-in token")).to_have_value("")
    assert alice["api_key"] not in repr(await session_storage(page))

    # A reload keeps the session (the ticket), without the key.
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("#project-slug")).to_have_text(slug)


async def test_an_expired_or_unknown_ticket_asks_to_sign_in_again(new_page, hub_server):
    page = await new_page()
    await page.goto(hub_server.http_url + "/")
    await expect(page.locator("#signin-form")).to_be_visible()
    stale = {"ticket": "bht_old", "expires_at": "2020-01-01T00:00:00Z", "project_slug": "x"}
    await page.evaluate("s => sessionStorage.setItem('beadhub.session', JSON.stringify(s))", stale)
    await page.reload()
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await session_storage(page) == {}

    # A ticket the hub does not know (its database was reset, say): the hub
    # is ready but refuses the socket, so the page stops retrying.
    unknown = {**stale, "ticket": "bht_unknown", "expires_at": "2099-01-01T00:00:00Z"}
    await page.evaluate(
        "s => sessionStorage.setItem('beadhub.session', JSON.stringify(s))", unknown
    )
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#signin-error")).to_contain_text(
        "no longer accepts this session", timeout=15_000
    )
    assert await session_storage(page) == {}


# -- team view ----------------------------------------------------------------------


async def test_team_follows_agents_online_and_offline_live(new_page, join, connect, hub_server):
    alice = await join("alice")
    bob = await join("bob", human_name="Maria", role="backend")
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    card = agent_card(page, "bob")
    await expect(card).to_have_attribute("data-online", "false")
    await expect(card.locator(".agent-state")).to_have_text("offline")

    client = await connect(bob)
    await expect(card).to_have_attribute("data-online", "true", timeout=LIVE)
    await expect(card.locator(".agent-state")).to_have_text("online")
    await expect(card).to_contain_text("backend")
    await expect(card).to_contain_text("Maria")

    await client.call(
        "presence.update", repo="acme/widgets", branch="feat/login", focus="wiring the login form"
    )
    await expect(card).to_contain_text("Focus: wiring the login form", timeout=LIVE)
    await expect(card).to_contain_text("acme/widgets @ feat/login")
    await expect(card.locator(".last-seen")).to_have_text(re.compile("just now|s ago"))
    await expect(page.locator("#online-count")).to_have_text("1 of 2 online")

    await client.close()
    await expect(card).to_have_attribute("data-online", "false", timeout=LIVE)
    await expect(page.locator("#online-count")).to_have_text("0 of 2 online")


async def test_team_view_follows_agents_on_another_instance(
    new_page, redis_hub_server, database_url, bus_prefix
):
    """The page on one instance, the agent on another, Redis between."""
    slug = unique("multi")
    alice = await onboard(redis_hub_server.http_url, slug, "alice")
    bob = await onboard(redis_hub_server.http_url, slug, "bob")
    page = await new_page()
    await sign_in_human(page, redis_hub_server, alice["project_slug"])
    card = agent_card(page, "bob")
    await expect(card).to_have_attribute("data-online", "false")
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as other:
        client = await HubClient(other.ws_url, bob["api_key"]).connect()
        try:
            await expect(card).to_have_attribute("data-online", "true", timeout=LIVE)
            await client.call("presence.update", focus="on the other instance")
            await expect(card).to_contain_text("on the other instance", timeout=LIVE)
        finally:
            await client.close()
        await expect(card).to_have_attribute("data-online", "false", timeout=LIVE)


async def test_a_new_agent_appears_without_reload(new_page, join, connect, hub_server):
    alice = await join("alice")
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    await expect(agent_card(page, "alice")).to_be_visible()

    carol = await join("carol")
    await expect(agent_card(page, "carol")).to_be_visible(timeout=LIVE)
    await connect(carol)
    await expect(agent_card(page, "carol")).to_have_attribute("data-online", "true", timeout=LIVE)


async def test_agent_timeline_shows_its_recent_events(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    client = await connect(bob)
    await client.call("presence.update", focus="reading the spec")
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])

    await agent_card(page, "bob").locator(".agent-open").click()
    timeline = page.locator("#timeline")
    await expect(page.locator("#timeline-title")).to_have_text("Timeline · bob")
    # From before the page opened (read back from the hub) ...
    await expect(timeline).to_contain_text("online — reading the spec")
    # ... and live.
    await client.call("presence.update", focus="writing tests")
    await expect(timeline.locator("li").first).to_contain_text("writing tests", timeout=LIVE)
    await client.close()
    await expect(timeline.locator("li").first).to_contain_text("went offline", timeout=LIVE)


# -- work: ready issues and claims -------------------------------------------------------


def issues_jsonl(*issues: tuple[str, str, int]) -> str:
    return "".join(
        orjson.dumps(
            {
                "id": bead_id,
                "title": title,
                "status": "open",
                "priority": priority,
                "issue_type": "task",
                "created_at": "2026-11-01T00:00:00Z",
                "updated_at": "2026-11-01T00:00:00Z",
            }
        ).decode()
        + "\n"
        for bead_id, title, priority in issues
    )


async def test_ready_work_and_claims_follow_the_team(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    ready, claimed = page.locator("#ready"), page.locator("#claims")
    await expect(page.locator("#ready-empty")).to_be_visible()

    await b.call(
        "beads.sync",
        mode="full",
        issues_jsonl=issues_jsonl(("bd-1", "Fix the login redirect", 1), ("bd-2", "Docs", 3)),
    )
    await expect(ready.locator("li")).to_have_count(2, timeout=LIVE)
    await expect(ready.locator("li").first).to_contain_text("bd-1")
    await expect(ready.locator("li").first).to_contain_text("P1")

    await b.call("claims.claim", bead_id="bd-1")
    row = claimed.locator('li[data-bead="bd-1"]')
    await expect(row).to_contain_text("Fix the login redirect", timeout=LIVE)
    await expect(row.locator(".who")).to_have_text("bob")
    await expect(ready.locator("li")).to_have_count(1)
    await expect(agent_card(page, "bob").locator(".agent-claim")).to_contain_text("bd-1")

    await b.call("claims.release", bead_id="bd-1")
    await expect(claimed.locator("li")).to_have_count(0, timeout=LIVE)
    await expect(agent_card(page, "bob").locator(".agent-claim")).to_have_count(0)
    await expect(ready.locator("li")).to_have_count(2)


# -- file reservations -----------------------------------------------------------------------


async def test_reservation_appears_and_counts_down(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])

    await b.call(
        "reservations.acquire", paths=["src/auth/session.py"], ttl_seconds=120, reason="wid-12"
    )
    row = page.locator('#reservations li[data-path="src/auth/session.py"]')
    await expect(row).to_be_visible(timeout=LIVE)
    await expect(row.locator(".who")).to_have_text("bob")
    await expect(row.locator(".tag")).to_have_text("exclusive")
    await expect(agent_card(page, "bob").locator(".agent-files")).to_contain_text(
        "src/auth/session.py"
    )
    countdown = row.locator(".countdown")
    await expect(countdown).to_have_text(re.compile(r"^(2:00|1:[0-5]\d)$"))
    first = int(await countdown.get_attribute("data-seconds") or 0)
    assert 100 < first <= 120
    # The page ticks the seconds down by itself (rendering, not a request).
    await page.wait_for_function(
        "first => Number(document.querySelector('#reservations .countdown').dataset.seconds)"
        " < first",
        arg=first,
        timeout=3_000,
    )
    later = int(await countdown.get_attribute("data-seconds") or 0)
    assert later < first
    minutes, seconds = (await countdown.inner_text()).split(":")
    assert int(minutes) * 60 + int(seconds) == later

    await b.call("reservations.release", paths=["src/auth/session.py"])
    await expect(row).to_have_count(0, timeout=LIVE)
    await expect(page.locator("#reservations-empty")).to_be_visible()


async def test_an_expired_reservation_leaves_the_page(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    await b.call("reservations.acquire", paths=["docs/**"], ttl_seconds=2)
    row = page.locator('#reservations li[data-path="docs/**"]')
    await expect(row).to_be_visible(timeout=LIVE)
    await expect(row).to_have_count(0, timeout=10_000)


async def test_revoke_a_stale_reservation_from_the_page(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    await b.call("reservations.acquire", paths=["migrations/0042.sql"], ttl_seconds=600)
    await b.call("reservations.acquire", paths=["README.md"], ttl_seconds=600)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    row = page.locator('#reservations li[data-path="migrations/0042.sql"]')
    await expect(row).to_be_visible()

    revoke = row.get_by_role("button", name="Revoke")
    await revoke.click()
    await expect(row.get_by_role("button", name="Confirm")).to_be_visible()
    await row.get_by_role("button", name="Confirm").click()

    revoked = await b.next_event("reservation.revoked", timeout=5)
    assert revoked["data"]["path"] == "migrations/0042.sql"
    await expect(row).to_have_count(0, timeout=LIVE)
    held = await b.call("reservations.list")
    assert [r["path"] for r in held["reservations"]] == ["README.md"]
    await expect(page.locator('#reservations li[data-path="README.md"]')).to_be_visible()


# -- policy -----------------------------------------------------------------------------------


async def test_policy_shows_live_and_a_human_rolls_it_back(new_page, join, connect, hub_server):
    alice = await join("alice")
    lena = await join("lena", role="coordinator")
    lead = await connect(await grant_coordinator(hub_server, lena))
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    version = page.locator("#policy-version")
    await expect(version).to_have_value("1")
    await expect(page.locator("#invariants li").first).to_be_visible()
    await expect(page.locator('#playbooks li[data-role="coordinator"]')).to_be_visible()

    await lead.call(
        "policy.create",
        invariants=[{"id": "tests-first", "title": "Write the test first", "body_md": "Always."}],
        roles={"backend": {"title": "Backend", "playbook_md": "Own the API."}},
    )
    await expect(version).to_have_value("2", timeout=LIVE)
    await expect(page.locator("#invariants li")).to_have_count(1)
    invariant = page.locator('#invariants li[data-invariant="tests-first"]')
    await invariant.locator("summary").click()
    await expect(invariant).to_contain_text("Always.")

    await version.select_option("1")
    await page.get_by_role("button", name="Activate").click()
    updated = await lead.next_event(
        "policy.updated", timeout=5, where=lambda e: e["data"]["reason"] == "activated"
    )
    assert updated["data"]["version"] == 1
    await expect(version.locator("option:checked")).to_have_text("v1 (active)", timeout=LIVE)
    assert (await lead.call("policy.get"))["version"] == 1


# -- mail and chat ----------------------------------------------------------------------


async def test_human_posts_mail_to_one_agent_and_to_everyone(new_page, join, connect, hub_server):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    b, c = await connect(bob), await connect(carol)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    await expect(page.locator("#mail-to option[value=bob]")).to_be_attached()

    await page.locator("#mail-to").select_option("bob")
    await page.locator("#mail-subject").fill("Please rebase")
    await page.locator("#mail-body").fill("main moved; rebase before you push.")
    await page.get_by_role("button", name="Send mail").click()

    mail = await b.next_event("mail", timeout=5)
    assert mail["data"]["subject"] == "Please rebase"
    assert mail["data"]["body"] == "main moved; rebase before you push."
    assert mail["data"]["from_alias"].startswith("human:")
    await expect(page.locator("#mail-status")).to_have_text("sent to bob")
    await expect(page.locator("#mail-body")).to_have_value("")
    # The human sees it in the feed too.
    await expect(page.locator("#activity")).to_contain_text("Please rebase")

    await page.locator("#mail-to").select_option("*")
    await page.locator("#mail-body").fill("Stand-up in five minutes.")
    await page.get_by_role("button", name="Send mail").click()
    for client in (b, c):
        everyone = await client.next_event(
            "mail", timeout=5, where=lambda e: e["data"]["body"] == "Stand-up in five minutes."
        )
        assert everyone["data"]["to_all"] is True


async def test_feed_shows_agents_mail_and_chat(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a, _ = await connect(alice), await connect(bob)
    await a.call("mail.send", to=["bob"], subject="Schema question", body="Is `id` a uuid?")
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])

    feed = page.locator("#activity")
    await expect(feed).to_contain_text("Schema question")  # from before the page opened
    first = feed.locator("li").first
    await expect(first.locator(".from")).to_have_text("alice")
    await expect(first.locator(".to")).to_have_text(" → bob")

    await a.call("chat.send", to=["bob"], body="Are you on the login bug?\nasking because…")
    await expect(first).to_contain_text("Are you on the login bug?", timeout=LIVE)
    await expect(first).not_to_contain_text("asking because")  # first line only
    await expect(first.locator(".tag")).to_have_text("chat")


# -- escalations ----------------------------------------------------------------------------


async def test_answer_an_escalation_from_the_page(new_page, join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    b = await connect(bob)
    page = await new_page()
    await sign_in_human(page, hub_server, alice["project_slug"])
    badge = page.locator("#escalation-count")
    await expect(badge).to_have_text("0")

    await b.call(
        "escalations.create",
        subject="Drop the legacy table?",
        situation="The migration would delete `orders_old` (2 GB).\nShould I keep a backup?",
    )
    await expect(badge).to_have_text("1", timeout=LIVE)

    await page.locator("#escalations-button").click()
    dialog = page.locator("#escalation-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#escalation-subject")).to_have_text("Drop the legacy table?")
    await expect(dialog.locator("#escalation-situation")).to_contain_text("Should I keep a backup?")
    await expect(dialog.locator("#escalation-meta")).to_contain_text("from bob")
    await dialog.get_by_label("Your response").fill("Keep a dump in S3 first, then drop it.")
    await dialog.get_by_role("button", name="Send response").click()

    answered = await b.next_event("escalation.answered", timeout=5)
    assert answered["data"]["response"] == "Keep a dump in S3 first, then drop it."
    await expect(dialog).to_be_hidden()
    await expect(badge).to_have_text("0", timeout=LIVE)
    row = page.locator("#escalations li.escalation").first
    await expect(row.locator(".tag")).to_have_text("answered")


# -- small screens and dark mode --------------------------------------------------------------


async def test_phone_width_shows_the_team_without_sideways_scrolling(
    new_page, join, connect, hub_server
):
    alice = await join("alice")
    bob = await join("bob", role="frontend", human_name="Maria")
    client = await connect(bob)
    await client.call(
        "presence.update",
        repo="acme/a-rather-long-repository-name",
        branch="feature/an-equally-long-branch-name-for-wrapping",
        focus="making the settings page responsive on small screens",
    )
    page = await new_page(viewport=PHONE)
    await sign_in_human(page, hub_server, alice["project_slug"])

    card = agent_card(page, "bob")
    await expect(card).to_be_visible()
    await expect(card).to_have_attribute("data-online", "true")
    box = await card.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    overflow = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390px"
    await expect(page.locator("#escalations-button")).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()


async def test_dark_mode_follows_the_system(new_page, join, hub_server):
    alice = await join("alice")
    colours = {}
    for scheme in ("light", "dark"):
        page = await new_page(color_scheme=scheme)
        await sign_in_human(page, hub_server, alice["project_slug"])
        colours[scheme] = await page.evaluate(
            """() => {
                const lum = (el, prop) => {
                    const [r, g, b] = getComputedStyle(el)[prop].match(/\\d+/g).map(Number);
                    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
                };
                const card = document.querySelector('#team-panel');
                return {bg: lum(document.body, 'backgroundColor'),
                        card: lum(card, 'backgroundColor'), text: lum(card, 'color')};
            }"""
        )
    light, dark = colours["light"], colours["dark"]
    assert light["bg"] > 200 and light["text"] < 80, light
    assert dark["bg"] < 40 and dark["text"] > 180, dark
    # Readable: strong contrast between text and its card in both.
    assert abs(light["card"] - light["text"]) > 150 and abs(dark["card"] - dark["text"]) > 150


# -- resilience -----------------------------------------------------------------------------------


async def test_survives_a_restart_and_a_switch_to_another_instance(
    new_page, join, connect, hub_server: RunningHub, front_door: FrontDoor, database_url: str
):
    alice, bob = await join("alice"), await join("bob")
    page = await new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await sign_in_human(page, hub_server, alice["project_slug"], url=front_door.http_url)
    b = await connect(bob)
    await b.call("presence.update", focus="before the restart")
    card = agent_card(page, "bob")
    await expect(card).to_contain_text("before the restart", timeout=LIVE)
    assert len(sockets) == 1 and "cursor=" not in sockets[0]

    # The hub goes away (every connection cut, new ones refused) ...
    with front_door.closed():
        await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        await b.call("presence.update", focus="while the page was away")
    # ... and comes back: the page resumes from its cursor.
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=10_000
    )
    await expect(card).to_contain_text("while the page was away", timeout=LIVE)
    assert re.search(r"[?&]cursor=\d+", sockets[-1]), sockets

    # A switch to another instance on the same database: the ticket works
    # there too, and the page follows changes made through that instance.
    async with running_hub(database_url=database_url, bus_url="memory://") as other:
        front_door.switch(other)
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=10_000
        )
        b2 = await connect(bob, server=other)
        await b2.call("presence.update", focus="served by the other instance")
        await expect(card).to_contain_text("served by the other instance", timeout=LIVE)
        await b2.close()
        await expect(card).to_have_attribute("data-online", "false", timeout=LIVE)
        front_door.switch(hub_server)
    assert len(sockets) >= 3


# -- screenshots -------------------------------------------------------------------------------


async def test_screenshots_of_a_busy_team(new_page, connect, hub_server, screenshot_dir):
    """Renders a realistic team in light, dark and phone layouts."""
    out = screenshot_dir
    slug = unique("acme-widgets")
    team = {}
    for alias, human, role in [
        ("alice", "Juan", "coordinator"),
        ("bob", "Maria", "backend"),
        ("carol", "Maria", "frontend"),
        ("dave", "Juan", "reviewer"),
    ]:
        team[alias] = await onboard(hub_server.http_url, slug, alias, human_name=human, role=role)
    a, b, c = [await connect(team[n]) for n in ("alice", "bob", "carol")]
    await a.call(
        "beads.sync",
        mode="full",
        issues_jsonl=issues_jsonl(
            ("wid-12", "Login redirect loses the return URL", 1),
            ("wid-15", "Settings page is unusable on phones", 1),
            ("wid-18", "Rate-limit the public search endpoint", 2),
            ("wid-21", "Document the export format", 3),
            ("wid-22", "Flaky test: test_invoice_rounding", 2),
        ),
    )
    await b.call("presence.update", repo="acme/widgets", branch="fix/login-redirect",
                 focus="reproducing the redirect bug")  # fmt: skip
    await b.call("claims.claim", bead_id="wid-12")
    await c.call("presence.update", repo="acme/widgets", branch="feat/responsive-settings",
                 focus="settings grid at 390px")  # fmt: skip
    await c.call("claims.claim", bead_id="wid-15")
    await a.call("presence.update", repo="acme/widgets", branch="main", focus="triage")
    await a.call("mail.send", to=["bob"], subject="wid-12 is yours",
                 body="Customer escalation; keep the fix small.")  # fmt: skip
    await b.call("chat.send", to=["carol"], body="Are you touching auth/session.py?")
    await c.call("chat.send", to=["bob"], body="No, only templates/settings/*")
    await a.call("mail.send", to_all=True, subject="Release freeze Friday 17:00",
                 body="Land what you have by Thursday.")  # fmt: skip
    await b.call("reservations.acquire", paths=["src/auth/session.py", "src/auth/cookies.py"],
                 ttl_seconds=300, reason="login redirect", bead_id="wid-12")  # fmt: skip
    await c.call("reservations.acquire", paths=["templates/settings/"], ttl_seconds=1500)
    await a.call("reservations.acquire", paths=["CHANGELOG.md"], ttl_seconds=45, exclusive=False)
    await b.call(
        "escalations.create",
        subject="Can I change the session cookie's SameSite to Lax?",
        situation="The redirect bug comes from SameSite=Strict on the session cookie.\n"
        "Lax fixes it but changes behaviour for every embedded login. Go ahead?",
        bead_id="wid-12",
    )

    shots = [
        ("dashboard-light.png", {"color_scheme": "light"}),
        ("dashboard-dark.png", {"color_scheme": "dark"}),
        ("dashboard-phone.png", {"color_scheme": "light", "viewport": PHONE}),
    ]
    for name, options in shots:
        page = await new_page(**options)
        requested: list[str] = []
        page.on("request", lambda request, seen=requested: seen.append(request.url))
        await sign_in_human(page, hub_server, team["dave"]["project_slug"])
        await expect(page.locator("#escalation-count")).to_have_text("1")
        await expect(page.locator("#activity li")).to_have_count(4)
        await expect(page.locator("#claims li")).to_have_count(2)
        await expect(page.locator("#reservations li")).to_have_count(4)
        if "dark" in name:  # one picture with an agent's timeline open
            await agent_card(page, "bob").locator(".agent-open").click()
            await expect(page.locator("#timeline li").first).to_be_visible()
        await page.evaluate("() => window.scrollTo(0, 0)")
        await page.screenshot(path=out / name)
        assert (out / name).stat().st_size > 20_000
        # Everything the page loaded came from the hub itself.
        hub_origins = (hub_server.http_url + "/", hub_server.ws_url + "/")
        assert requested and all(url.startswith(hub_origins) for url in requested), requested
        if name == "dashboard-light.png":
            await page.get_by_role("button", name="Answer").click()
            await page.get_by_label("Your response").fill("Yes, Lax is fine; note it in the PR.")
            await page.screenshot(path=out / "dashboard-escalation.png")
