// The team lead's control room, beside app.js's live views: the message
// centre, search, what needs attention (who waits on whom, stale claims and
// reservations), charts, webhooks, and an honest connection state.

import { TeamAccess } from "./access.js";
import { barChart, duration } from "./charts.js";
import { MessageCentre, coalesce, when } from "./messages.js";
import { SearchPanel } from "./search.js";

const $ = (id) => document.getElementById(id);

// Queue joins and leaves (claim.queued, reservation.dequeued, ...) redraw
// "Waiting on" too: an agent starting to wait in line shows at once.
const ATTENTION_EVENTS = /^(presence|claim\.|reservation\.|chat\.|escalation\.|holder_gone)/;
const STATS_EVENTS = /^(mail$|chat\.message|claim\.|escalation\.)/;

export class ControlRoom {
  constructor(ctx) {
    this.ctx = ctx; // { call, h, ago, toast, agents(), me(), agentView(), openEscalation(id), confirmThen }
    this.messages = new MessageCentre(ctx);
    // Keys, admission and the audit trail: a signed-in human's only.
    this.access = ctx.agentView() ? null : new TeamAccess(ctx);
    this.search = new SearchPanel(ctx, (hit) => this.openHit(hit));
    this.timers = new Map();
    this.wasLive = false;
    this.lostAt = null;
    // Assigned, not added: each sign-in in the tab makes a new room.
    $("webhook-form").onsubmit = (e) => this.addWebhook(e);
  }

  stop() {
    this.access?.stop();
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.onState("live");
  }

  later(name, fn, delay = 80) {
    coalesce(this.timers, name, delay, fn, (error) => this.ctx.toast(error.message, true));
  }

  onOpen() {
    // Who waits on whom, what a gone agent holds and webhooks are a human's:
    // an agent's own view (bdh :dashboard) would only be refused them, so it
    // neither shows nor asks for them.
    const human = !this.ctx.agentView();
    $("attention-panel").hidden = !human;
    $("webhooks-panel").hidden = !human;
    this.messages.onOpen();
    if (human) this.later("attention", () => this.loadAttention(), 0);
    this.later("stats", () => this.loadStats(), 0);
    if (human) this.later("webhooks", () => this.loadWebhooks(), 0);
    this.access?.onOpen();
  }

  // The hub could not replay what this page missed (pruned): read it all.
  onResync() {
    this.staleKey = null;
    this.onOpen();
  }

  onAgents() {
    this.access?.onAgents();
  }

  onEvent(event) {
    this.messages.onEvent(event);
    this.access?.onEvent(event);
    if (ATTENTION_EVENTS.test(event.type) && !this.ctx.agentView()) {
      this.later("attention", () => this.loadAttention());
    }
    if (STATS_EVENTS.test(event.type)) this.later("stats", () => this.loadStats(), 1000);
  }

  // -- honest state: say at once that the hub is gone, grey what may be stale ----

  onState(state) {
    const live = state === "live";
    if (live) {
      if (this.lostAt) this.ctx.toast("Reconnected: caught up with what happened meanwhile");
      this.wasLive = true;
      this.lostAt = null;
      delete document.body.dataset.stale;
      $("outage").hidden = true;
      return;
    }
    if (!this.wasLive) return;
    if (!this.lostAt) this.lostAt = new Date();
    document.body.dataset.stale = "true";
    const outage = $("outage");
    outage.hidden = false;
    outage.textContent =
      `Lost the connection to the hub at ${this.lostAt.toLocaleTimeString()}. ` +
      "Greyed data may be out of date; the page reconnects by itself and catches up.";
  }

  openHit(hit) {
    if (hit.type === "mail") this.messages.openThread(hit.ref);
    else if (hit.type === "chat") this.messages.openChat(hit.ref);
    else if (hit.type === "escalation") this.ctx.openEscalation(hit.id);
    else this.ctx.toast(`${hit.id}: ${hit.title} (${hit.ref})`);
  }

  // -- needs attention: who waits on whom, what a gone agent holds ------------------

  async loadAttention() {
    const [waiting, stale] = await Promise.all([
      this.ctx.call("team.waiting"),
      this.ctx.call("team.stale"),
    ]);
    const { h, ago } = this.ctx;
    $("waiting").replaceChildren(
      ...waiting.waiting.map((w) =>
        h(
          "li",
          { class: `row waiting ${w.kind}`, dataset: { alias: w.alias, kind: w.kind } },
          h("span", { class: `tag kind-${w.kind}` },
            { chat: "reply", escalation: "answer", queue: "in line" }[w.kind] ?? w.kind),
          h("span", { class: "grow" }, h("strong", {}, w.alias),
            w.kind === "queue"
              ? ` is #${w.position} in line for ${w.queue === "claim" ? "issue" : "file"} ${w.waiting_on.join(", ")}`
              : ` waits on ${w.waiting_on.join(", ")}`,
            w.subject ? `: ${w.subject}` : ""),
          h("span", { class: "muted small", title: w.since, dataset: { ago: w.since } }, ago(w.since)),
          w.kind === "chat"
            ? h("button", { type: "button", class: "ghost small",
                            onclick: () => this.messages.openChat(w.session_id) }, "Open")
            : w.kind === "escalation"
              ? h("button", { type: "button", class: "ghost small",
                              onclick: () => this.ctx.openEscalation(w.escalation_id) }, "Open")
              : null,
        ),
      ),
    );
    $("waiting-empty").hidden = waiting.count > 0;
    const agents = [...this.ctx.agents().values()].filter((a) => a.online);
    // Redrawn only when it changed, so a button armed for confirmation
    // stays armed while unrelated events arrive.
    const key = JSON.stringify([stale, agents.map((a) => a.alias)]);
    if (key === this.staleKey) return;
    this.staleKey = key;
    $("stale-claims").replaceChildren(...stale.claims.map((c) => this.staleClaim(c, agents)));
    $("stale-reservations").replaceChildren(
      ...stale.reservations.map((r) => {
        const revoke = h("button", { type: "button", class: "ghost small danger" }, "Revoke");
        revoke.addEventListener("click", () =>
          this.ctx.confirmThen(revoke, () => this.act("reservations.revoke", { paths: [r.path] },
                                                       `Revoked ${r.path}`)));
        return h(
          "li",
          { class: "row stale-reservation", dataset: { path: r.path } },
          h("span", { class: "mono path grow" }, r.path),
          h("span", { class: "who" }, r.holder_alias),
          h("span", { class: "tag stale" }, `stale · seen ${ago(r.last_seen)}`),
          revoke,
        );
      }),
    );
    const none = !stale.claims.length && !stale.reservations.length;
    $("stale-empty").hidden = !none;
  }

  staleClaim(c, online) {
    const { h, ago } = this.ctx;
    const release = h("button", { type: "button", class: "ghost small danger" }, "Release");
    release.addEventListener("click", () =>
      this.ctx.confirmThen(release, () =>
        this.act("claims.release", { bead_id: c.bead_id }, `Released ${c.bead_id}`)));
    const target = h("select", { "aria-label": `Reassign ${c.bead_id} to` },
      h("option", { value: "" }, "Reassign to…"),
      ...online.map((a) => h("option", { value: a.alias }, a.alias)));
    target.addEventListener("change", () => {
      if (target.value) {
        this.act("claims.reassign", { bead_id: c.bead_id, to: target.value },
                 `${c.bead_id} is now ${target.value}'s`);
      }
    });
    return h(
      "li",
      { class: "row stale-claim", dataset: { bead: c.bead_id } },
      h("span", { class: "mono bead" }, c.bead_id),
      h("span", { class: "grow" }, c.title),
      h("span", { class: "who" }, c.alias),
      h("span", { class: "tag stale" }, `stale · seen ${ago(c.last_seen)}`),
      online.length ? target : null,
      release,
    );
  }

  async act(method, params, done) {
    try {
      await this.ctx.call(method, params);
      this.ctx.toast(done);
    } catch (error) {
      this.ctx.toast(error.message, true);
    }
    this.later("attention", () => this.loadAttention(), 0);
  }

  // -- the shape of the work -------------------------------------------------------

  async loadStats() {
    const stats = await this.ctx.call("stats.get", { hours: 24 });
    const s = stats.series;
    $("charts").replaceChildren(
      barChart("Messages", s, "messages", "messages"),
      barChart("Claims opened", s, "claims_opened", "claims-opened"),
      barChart("Claims closed", s, "claims_closed", "claims-closed"),
      barChart("Escalations", s, "escalations", "escalations"),
    );
    const a = stats.answers;
    $("answer-time").textContent = a.answered
      ? `Time to answer an escalation: median ${duration(a.median_seconds)}, longest ${duration(a.max_seconds)} (${a.answered} answered, last 24 h)`
      : "No escalation answered in the last 24 h.";
  }

  // -- webhooks ------------------------------------------------------------------------

  async loadWebhooks() {
    const { webhooks } = await this.ctx.call("webhooks.list");
    const { h } = this.ctx;
    $("webhooks").replaceChildren(
      ...webhooks.map((w) => {
        const remove = h("button", { type: "button", class: "ghost small danger" }, "Remove");
        remove.addEventListener("click", () =>
          this.ctx.confirmThen(remove, async () => {
            await this.act("webhooks.delete", { webhook_id: w.webhook_id }, "Webhook removed");
            this.later("webhooks", () => this.loadWebhooks(), 0);
          }));
        const last = w.last_delivery;
        return h(
          "li",
          { class: "row webhook", dataset: { webhookId: w.webhook_id } },
          h("span", { class: "mono grow" }, w.url),
          h("span", { class: "muted small" }, w.events.join(", ")),
          last
            ? h("span", { class: `tag hook-${last.status}` },
                `${last.status} (${last.attempts}×) ${when(last.at)}`)
            : h("span", { class: "muted small" }, "not used yet"),
          remove,
        );
      }),
    );
    $("webhooks-empty").hidden = webhooks.length > 0;
  }

  async addWebhook(event) {
    event.preventDefault();
    const url = $("webhook-url").value.trim();
    if (!url) return;
    const events = [...$("webhook-form").querySelectorAll("input[name=event]:checked")].map(
      (i) => i.value,
    );
    try {
      const hook = await this.ctx.call("webhooks.create", { url, ...(events.length ? { events } : {}) });
      $("webhook-url").value = "";
      $("webhook-secret").hidden = false;
      $("webhook-secret").textContent =
        `Signing secret (shown once; the receiver checks X-BeadHub-Signature with it): ${hook.secret}`;
    } catch (error) {
      this.ctx.toast(`Webhook not added: ${error.message}`, true);
    }
    this.later("webhooks", () => this.loadWebhooks(), 0);
  }
}
