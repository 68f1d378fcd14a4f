"""The control room in real Chromium, against a real hub and real agents:
the message centre (threads, chat both ways, the inbox badge), escalations
expiring on screen, unsticking a gone agent's claim, search through a week
of history, and the page's honest state through an outage."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import expect

from tests.browser.conftest import PHONE, FrontDoor, sign_in_human
from tests.browser.test_dashboard import issues_jsonl
from tests.support import grant_coordinator, onboard, unique
from tests.test_search import seed_mail

LIVE = 3_000
TALL = {"width": 1366, "height": 1400}


async def test_a_human_reads_a_full_thread_with_its_delivery_states(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    first = await a.call("mail.send", to=["bob"], subject="schema v2", body="line one\nline two")
    await b.call("mail.send", to=["alice"], body="agreed, doing it", thread_id=first["thread_id"])
    await b.call("mail.ack", message_ids=[first["message_id"]])
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])

    await page.locator("#activity li.mail").last.locator("button").click()
    view = page.locator("#message-view")
    await expect(view.locator("#view-title")).to_have_text("Mail · schema v2")
    messages = view.locator("#view-messages li.msg")
    await expect(messages).to_have_count(2)
    await expect(messages.first).to_contain_text("line one")
    await expect(messages.first).to_contain_text("line two")
    await expect(messages.first.locator('.deliveries li[data-alias="bob"]')).to_contain_text("read")
    await expect(messages.nth(1).locator('.deliveries li[data-alias="alice"]')).to_contain_text(
        "unread"
    )


async def test_a_human_chats_with_an_agent_and_sees_the_answer(new_page, join, connect, hub_server):
    lead = await join("lead", human_name="Ana")
    bob = await connect(await join("bob"))
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])

    await page.locator("#messages-tabs [data-tab=compose]").click()
    await page.locator("#compose-to label", has_text="bob").locator("input").check()
    await page.locator("#compose-body").fill("are you blocked on the migration?")
    await page.locator("#compose-form button[type=submit]").click()
    event = await bob.next_event("chat.message", timeout=5)
    assert event["data"]["from_alias"] == "human:Ana"
    assert event["data"]["body"] == "are you blocked on the migration?"

    await bob.call("chat.send", session_id=event["data"]["session_id"], body="yes, on a lock")
    view = page.locator("#view-messages")
    await expect(view.locator("li.msg").last).to_contain_text("yes, on a lock", timeout=LIVE)
    await page.locator("#view-reply-body").fill("take it, I revoked it")
    await page.locator("#view-reply button[type=submit]").click()
    reply = await bob.next_event(
        "chat.message", timeout=5, where=lambda e: "revoked" in e["data"]["body"]
    )
    assert reply["data"]["from_alias"] == "human:Ana"


async def test_signing_in_again_in_the_same_tab_sends_each_message_once(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    bob = await connect(await join("bob"))
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], "Ana")
    await page.locator("#signout").click()
    # The operator's token, typed into the same tab: pick the project.
    await page.locator("#api-key").fill(hub_server.hub.operator_token)
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator(f'#signin-projects button[data-slug="{lead["project_slug"]}"]').click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    await page.locator("#messages-tabs [data-tab=compose]").click()
    await page.locator("#compose-form input[name=kind][value=mail]").check()
    await page.locator("#compose-to label", has_text="bob").locator("input").check()
    await page.locator("#compose-body").fill("only once")
    await page.locator("#compose-form button[type=submit]").click()
    await bob.next_event("mail", timeout=5)
    await expect(page.locator("#view-title")).to_contain_text("Mail")
    inbox = await bob.call("mail.inbox")
    assert [m["body"] for m in inbox["messages"]] == ["only once"]


async def test_an_agent_mails_the_human_and_the_badge_counts_it(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    b = await connect(await join("bob"))
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])
    badge = page.locator("#inbox-count")
    await expect(badge).to_have_text("0")

    await b.call("mail.send", to=["human:Ana"], subject="need a decision", body="which db?")
    await expect(badge).to_have_text("1", timeout=LIVE)
    await b.call("chat.send", to=["human:Ana"], body="also: ping")
    await expect(badge).to_have_text("2", timeout=LIVE)
    await page.locator("#inbox-list li.inbox-mail button").click()
    await expect(page.locator("#view-messages")).to_contain_text("which db?")
    await expect(badge).to_have_text("1", timeout=LIVE)  # reading it acked it


async def test_an_escalation_expires_on_screen(new_page, join, connect, hub_server):
    lead = await join("lead", human_name="Ana")
    b = await connect(await join("bob"))
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])
    await b.call(
        "escalations.create",
        subject="Ship it?",
        situation="**CI** is green.\n\n- one\n- two\n\n<script>alert(1)</script>",
        expires_in_seconds=6,
    )
    row = page.locator("#escalations li.escalation")
    await expect(row).to_have_class(re.compile(r"\bpending\b"))
    await row.get_by_role("button", name="Answer").click()
    situation = page.locator("#escalation-situation")
    await expect(situation.locator("strong")).to_have_text("CI")
    await expect(situation.locator("li")).to_have_count(2)
    await expect(situation).to_contain_text("<script>alert(1)</script>")
    assert await situation.locator("script").count() == 0
    await page.get_by_label("Your response").fill("yes")

    await expect(row).to_have_class(re.compile(r"\bexpired\b"), timeout=15_000)
    await expect(page.locator("#escalation-count")).to_have_text("0")
    await expect(page.locator("#escalation-answer")).to_contain_text("expired")


async def test_a_stale_claim_released_from_the_page_reaches_the_agents(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    bob, carol = await join("bob"), await join("carol")
    b, c = await connect(bob), await connect(carol)
    await b.call("beads.sync", mode="full", issues_jsonl=issues_jsonl(("bd-9", "Fix the login", 1)))
    await b.call("claims.claim", bead_id="bd-9")
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])
    await expect(page.locator("#stale-empty")).to_be_visible()

    await b.close()  # bob is gone; his claim is stale
    stale = page.locator('#stale-claims li[data-bead="bd-9"]')
    await expect(stale).to_contain_text("stale", timeout=LIVE)
    await stale.get_by_role("button", name="Release").click()
    await stale.get_by_role("button", name="Confirm").click()  # destructive: asks once more
    event = await c.next_event("claim.released", timeout=5)
    assert (event["data"]["bead_id"], event["data"]["reason"]) == ("bd-9", "revoked")
    await expect(stale).to_have_count(0, timeout=LIVE)


async def test_waiting_on_shows_an_agent_joining_and_leaving_a_queue_live(
    new_page, join, connect, hub_server
):
    """Nothing but the queue's events (``claim.queued``,
    ``reservation.queued``/``.dequeued``, the grant) reaches the page
    between these steps, and the "Waiting on" view follows each."""
    lead = await join("lead", human_name="Ana")
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    await b.call("beads.sync", mode="full", issues_jsonl=issues_jsonl(("bd-7", "Fix the cache", 1)))
    await b.call("claims.claim", bead_id="bd-7")
    await b.call("reservations.acquire", paths=["src/cache.py"], ttl_seconds=900)
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])
    await expect(page.locator("#waiting-empty")).to_be_visible()

    claiming = asyncio.create_task(a.call("claims.claim", bead_id="bd-7", wait=60))
    queued = page.locator("#waiting li[data-kind=queue]")
    await expect(queued).to_have_count(1, timeout=LIVE)
    await expect(queued).to_contain_text("alice is #1 in line for issue bd-7")
    await expect(page.locator("#waiting-empty")).to_be_hidden()

    # A wait long enough for the steps below, short enough to end in the test.
    reserving = asyncio.create_task(a.call("reservations.acquire", paths=["src/cache.py"], wait=8))
    await expect(queued).to_have_count(2, timeout=LIVE)
    file_line = queued.filter(has_text="alice is #1 in line for file src/cache.py")
    await expect(file_line).to_have_count(1)

    await b.call("claims.release", bead_id="bd-7")  # the grant takes alice out of line
    assert (await asyncio.wait_for(claiming, 10))["status"] == "granted"
    await expect(queued).to_have_count(1, timeout=LIVE)
    await expect(queued).to_contain_text("src/cache.py")

    # Alice's wait ends: she leaves the line (reservation.dequeued).
    assert (await asyncio.wait_for(reserving, 30))["status"] == "timeout"
    await expect(queued).to_have_count(0, timeout=LIVE)
    await expect(page.locator("#waiting-empty")).to_be_visible()


async def test_search_finds_a_mail_in_a_week_and_pages_through_ten_thousand(
    new_page, join, connect, hub_server, database_url
):
    lead = await join("lead", human_name="Ana")
    alice, bob = await join("alice"), await join("bob")
    await seed_mail(database_url, alice, bob, 10_000, "nightly")
    a = await connect(alice)
    await a.call("mail.send", to=["bob"], subject="The flamingo incident", body="postmortem")
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])

    await page.locator("#search-text").fill("flamingo")
    await page.locator("#search-text").press("Enter")
    results = page.locator("#search-results li")
    await expect(results).to_have_count(1)
    await results.first.locator("button").click()
    await expect(page.locator("#view-title")).to_have_text("Mail · The flamingo incident")

    await page.locator("#search-text").fill("nightly")
    await page.locator("#search-text").press("Enter")
    await expect(page.locator("#search-status")).to_have_text("Results 1\u2013250")
    for n in range(2, 41):
        await page.locator("#search-next").click()
        await expect(page.locator("#search-status")).to_have_attribute("data-page", str(n))
    status = page.locator("#search-status")
    await expect(status).to_have_text("Results 9751\u201310000 (the last page)")
    await expect(page.locator("#search-next")).to_be_disabled()
    # The oldest of the seeded week is on the last page.
    await expect(results.last).to_contain_text("run number 9999")


async def test_the_page_shows_the_outage_and_recovers(
    new_page, join, connect, hub_server, front_door: FrontDoor
):
    lead = await join("lead", human_name="Ana")
    bob = await join("bob")
    page = await new_page()
    await sign_in_human(
        page,
        hub_server,
        lead["project_slug"],
        lead["human_name"] or lead["alias"],
        url=front_door.http_url,
    )
    b = await connect(bob)
    await expect(page.locator('#team li.agent[data-alias="bob"]')).to_have_attribute(
        "data-online", "true", timeout=LIVE
    )
    outage = page.locator("#outage")
    await expect(outage).to_be_hidden()

    with front_door.closed():
        await expect(outage).to_be_visible(timeout=LIVE)
        await expect(outage).to_contain_text("Lost the connection to the hub")
        await expect(page.locator("body")).to_have_attribute("data-stale", "true")
        await b.call("mail.send", to=["human:Ana"], body="sent while you were away")
        await b.close()
        await asyncio.sleep(0)  # nothing to wait for: the page cannot hear it
    await expect(outage).to_be_hidden(timeout=10_000)
    await expect(page.locator("body")).not_to_have_attribute("data-stale", "true")
    # Caught up by cursor: what happened meanwhile is on the page.
    await expect(page.locator('#team li.agent[data-alias="bob"]')).to_have_attribute(
        "data-online", "false", timeout=LIVE
    )
    await expect(page.locator("#inbox-count")).to_have_text("1", timeout=LIVE)


async def test_screenshots_of_the_control_room(new_page, connect, hub_server, screenshot_dir):
    """The message centre with a conversation open, what needs attention,
    the charts, and search; light on a desktop, dark on a phone."""
    slug = unique("acme-widgets")
    team = {}
    for alias, human, role in [
        ("alice", "Juan", "coordinator"),
        ("bob", "Maria", "backend"),
        ("carol", "Maria", "frontend"),
        ("dave", "Juan", "reviewer"),
    ]:
        team[alias] = await onboard(hub_server.http_url, slug, alias, human_name=human, role=role)
    a, b, c, d = [await connect(team[n]) for n in ("alice", "bob", "carol", "dave")]
    await a.call(
        "beads.sync",
        mode="full",
        issues_jsonl=issues_jsonl(
            ("wid-12", "Login redirect loses the return URL", 1),
            ("wid-15", "Settings page is unusable on phones", 1),
            ("wid-18", "Rate-limit the public search endpoint", 2),
        ),
    )
    await b.call("claims.claim", bead_id="wid-12")
    await d.call("claims.claim", bead_id="wid-18")
    await d.call("reservations.acquire", paths=["src/search/limits.py"], ttl_seconds=900)
    await a.call("mail.send", to=["bob", "carol"], subject="Release freeze Friday",
                 body="Land what you have by Thursday 17:00.")  # fmt: skip
    await b.call("mail.send", to=["human:Juan"], subject="Cookie change needs a yes",
                 body="SameSite=Lax fixes the redirect; see my escalation.")  # fmt: skip
    await b.call(
        "escalations.create",
        subject="Can I change the session cookie's SameSite to Lax?",
        situation="The redirect bug comes from **SameSite=Strict**.\n\n"
        "- Lax fixes it\n- embedded logins change\n\nGo ahead?",
        bead_id="wid-12",
    )
    opened = await c.call("chat.send", to=["human:Juan"], body="Is 390px the narrowest we support?")
    waiting = asyncio.create_task(
        c.call("chat.send", session_id=opened["session_id"], body="I'll wait for you.", wait=120)
    )
    await d.close()  # dave leaves with a claim and a lock: stale

    for name, options in [
        ("dashboard-control-room.png", {"color_scheme": "light", "viewport": TALL}),
        ("dashboard-control-room-phone-dark.png", {"color_scheme": "dark", "viewport": PHONE}),
    ]:  # fmt: skip
        page = await new_page(**options)
        await sign_in_human(
            page,
            hub_server,
            team["alice"]["project_slug"],
            team["alice"]["human_name"] or team["alice"]["alias"],
        )
        # 1 mail and 2 chat messages; the first page read the chat.
        await expect(page.locator("#inbox-count")).to_have_text("1" if "phone" in name else "3")
        await expect(page.locator("#waiting li")).to_have_count(2)
        await expect(page.locator("#stale-claims li")).to_have_count(1)
        await page.locator("#waiting li[data-kind=chat] button").click()
        await expect(page.locator("#view-meta")).to_contain_text("waits on")
        await page.evaluate("() => window.scrollTo(0, 0)")
        await page.screenshot(path=screenshot_dir / name, full_page="phone" not in name)
        if "phone" not in name:
            await page.locator("#search-text").fill("cookie")
            await page.locator("#search-text").press("Enter")
            await expect(page.locator("#search-results li")).to_have_count(2)
            await page.screenshot(path=screenshot_dir / "dashboard-search.png")
    waiting.cancel()


async def test_the_shape_of_the_work_timeline_charts_and_safe_markdown(
    new_page, join, connect, hub_server
):
    lead = await join("lead", human_name="Ana")
    lena = await grant_coordinator(hub_server, await join("lena", role="coordinator"))
    coordinator = await connect(lena)
    bob = await connect(await join("bob"))
    for focus in ("reading", "writing", "testing"):
        await bob.call("presence.update", focus=focus)
    await bob.call("mail.send", to=["lena"], body="done")
    await coordinator.call(
        "policy.create",
        invariants=[
            {
                "id": "safe",
                "title": "Markdown",
                "body_md": "Use **bold**, `code` and [docs](https://example.org/x).\n\n"
                "- [bad](javascript:alert(1))\n- <img src=x onerror=alert(1)>",
            }
        ],
        roles={"backend": {"title": "Backend", "playbook_md": "# Own the API"}},
    )
    page = await new_page()
    await sign_in_human(page, hub_server, lead["project_slug"], lead["human_name"] or lead["alias"])

    # Charts from stats.get: this hour's message is counted.
    await expect(page.locator("#charts figure.messages")).to_have_attribute("data-total", "1")
    # Markdown rendered with whitelisted elements only.
    invariant = page.locator('#invariants li[data-invariant="safe"]')
    await invariant.locator("summary").click()
    body = invariant.locator(".md")
    await expect(body.locator("strong")).to_have_text("bold")
    await expect(body.locator("code")).to_have_text("code")
    await expect(body.locator("a")).to_have_attribute("href", "https://example.org/x")
    await expect(body).to_contain_text("<img src=x onerror=alert(1)>")
    assert await body.locator("img, script").count() == 0
    assert await body.locator("a[href^=javascript]").count() == 0
    # The timeline: dated rows, the presence updates in a row folded into one.
    await page.locator('#team li.agent[data-alias="bob"] .agent-open').click()
    folded = page.locator('#timeline li[data-type="presence"]').first
    await expect(folded).to_contain_text("online — testing")
    await expect(folded).to_have_attribute("data-repeats", re.compile(r"^[3-9]$"))
    await expect(folded).to_contain_text("presence updates")
