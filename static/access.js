// Team access, for a signed-in human only: every agent's keys (rotate,
// revoke), the join policy and the agents waiting to join (admit, refuse),
// invitations, the coordinator role, deleting an agent, and the audit
// trail of what humans did. An agent's own dashboard view never builds it
// (and the hub refuses these calls to an agent anyway).
//
// What the hub shows once (a rotated key, an invitation) is shown once
// here too: in one box, never stored, gone when dismissed or signed out.

import { coalesce, when } from "./messages.js";

const $ = (id) => document.getElementById(id);
const AUDIT_PAGE = 25;

// Which events make which list re-read (one read per burst of them).
const KEY_EVENTS = /^(key\.|agent\.registered$|workspace\.deleted$)/;
const REQUEST_EVENTS = /^join\.(requested|decided)$/;

// The hub's errors carry a sentence (`message`); a few codes get a lead
// that says what to do. Never the raw JSON of the answer.
export function readable(error) {
  if (!error) return "something went wrong";
  if (error.code === -32029 && error.data?.retry_after) {
    return `too many requests: try again in ${Math.ceil(error.data.retry_after)} s`;
  }
  if (error.code === -32003 && error.data?.needs === "human") {
    return `${error.message} (this session is not a signed-in human's)`;
  }
  const text = typeof error.message === "string" ? error.message.trim() : "";
  return text || "the hub refused without saying why";
}

function displayName(alias) {
  const name = String(alias ?? "");
  return name.startsWith("human:") ? `${name.slice(6)} (human)` : name;
}

export class TeamAccess {
  constructor(ctx) {
    this.ctx = ctx; // { call, h, ago, toast, confirmThen, agents() }
    this.timers = new Map();
    this.keys = [];
    this.requests = [];
    this.requestAliases = new Map(); // for the trail, after a request is decided
    this.policy = null;
    this.audit = { pages: [null], entries: [], more: false, newer: 0 };
    this.drawn = {};
    this.stopped = false;
    for (const id of ["access-panel", "audit-panel"]) $(id).hidden = false;
    // Static elements: handlers assigned, not added, so a second sign-in
    // in the same tab does not act twice.
    $("join-approval").onchange = () => this.setPolicy();
    $("invite-create").onclick = () => this.invite();
    $("access-secret-copy").onclick = () => this.copySecret();
    $("access-secret-done").onclick = () => this.hideSecret();
    $("audit-older").onclick = () => this.pageAudit(1);
    $("audit-newer").onclick = () => this.pageAudit(-1);
  }

  stop() {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.hideSecret();
    for (const id of ["access-panel", "audit-panel"]) $(id).hidden = true;
    for (const id of ["join-requests", "access-agents", "audit"]) $(id).replaceChildren();
  }

  later(name, delay = 60) {
    if (this.stopped) return;
    coalesce(this.timers, name, delay, () => this[`load_${name}`](), (error) => {
      if (!this.stopped) this.ctx.toast(`Team access: ${readable(error)}`, true);
    });
  }

  onOpen() {
    for (const name of ["keys", "requests", "policy", "audit"]) this.later(name, 0);
  }

  onEvent(event) {
    if (KEY_EVENTS.test(event.type)) this.later("keys");
    if (REQUEST_EVENTS.test(event.type)) this.later("requests");
    if (event.type === "join.policy.updated") this.renderPolicy(event.data);
    if (event.type === "audit.recorded") {
      if (this.audit.pages.length === 1) this.later("audit");
      else this.renderAuditPager(this.audit.newer + 1);
    }
  }

  // The team changed (app.js re-read presence.list): agents and roles.
  onAgents() {
    this.renderAgents();
  }

  async act(what, method, params) {
    try {
      const result = await this.ctx.call(method, params);
      return result;
    } catch (error) {
      this.ctx.toast(`Could not ${what}: ${readable(error)}`, true);
      return null;
    }
  }

  // -- joining: the policy, who waits, invitations ------------------------------------

  async load_policy() {
    this.renderPolicy(await this.ctx.call("join.policy.get"));
  }

  renderPolicy(policy) {
    this.policy = policy;
    const approval = policy.join_policy === "approval";
    $("join-approval").checked = approval;
    $("join-approval").disabled = false;
    $("join-policy-note").textContent =
      (approval
        ? "A new agent's init waits until a human admits it; one with an invitation joins at once."
        : "Anyone who reaches the hub may add an agent.") +
      (policy.default ? ` (The hub's default, ${policy.hub_default}.)` : "");
    $("join-policy-note").dataset.policy = policy.join_policy;
  }

  async setPolicy() {
    const input = $("join-approval");
    const wanted = input.checked ? "approval" : "open";
    input.disabled = true;
    const policy = await this.act("change the join policy", "join.policy.set", {
      join_policy: wanted,
    });
    if (policy) {
      this.renderPolicy(policy);
      this.ctx.toast(wanted === "approval" ? "New agents now wait for approval" : "Anyone may join now");
    } else if (this.policy) {
      this.renderPolicy(this.policy);
    }
    input.disabled = false;
  }

  async load_requests() {
    const { requests } = await this.ctx.call("join.requests", { status: "pending" });
    this.requests = requests;
    for (const r of requests) this.requestAliases.set(r.request_id, r.alias);
    this.renderRequests();
  }

  renderRequests() {
    const { h, ago } = this.ctx;
    const key = JSON.stringify(this.requests.map((r) => r.request_id));
    $("access-note").textContent = this.requests.length ? `${this.requests.length} waiting to join` : "";
    $("join-requests-empty").hidden = this.requests.length > 0;
    if (key === this.drawn.requests) return; // keeps an armed Refuse armed
    this.drawn.requests = key;
    $("join-requests").replaceChildren(
      ...this.requests.map((r) => {
        const admit = h("button", { type: "button", class: "primary small" }, "Admit");
        admit.addEventListener("click", () => this.decide(r, true, admit));
        const refuse = h("button", { type: "button", class: "ghost small danger" }, "Refuse");
        refuse.addEventListener("click", () =>
          this.ctx.confirmThen(refuse, () => this.decide(r, false, refuse)));
        const where = [r.hostname, r.workspace_path].filter(Boolean).join(":");
        return h(
          "li",
          { class: "row join-request", dataset: { requestId: r.request_id, alias: r.alias } },
          h("div", { class: "grow" },
            h("strong", {}, r.alias),
            r.role ? h("span", { class: "tag role" }, r.role) : null,
            r.human_name ? ` for ${r.human_name}` : "",
            h("div", { class: "muted small reported",
                       title: "What the agent reported about itself: it proves nothing" },
              [where, r.repo_origin, r.client_address ? `from ${r.client_address}` : ""]
                .filter(Boolean).join(" · ")),
          ),
          h("span", { class: "muted small", title: r.created_at, dataset: { ago: r.created_at } },
            ago(r.created_at)),
          admit,
          refuse,
        );
      }),
    );
  }

  async decide(request, admit, button) {
    button.disabled = true;
    const decided = await this.act(
      `${admit ? "admit" : "refuse"} ${request.alias}`,
      admit ? "join.admit" : "join.refuse",
      { request_id: request.request_id },
    );
    if (decided) {
      this.ctx.toast(
        admit
          ? `Admitted ${request.alias}: its next init with the same report joins`
          : `Refused ${request.alias}`,
      );
    } else {
      button.disabled = false;
    }
    this.later("requests", 0);
  }

  async invite() {
    // The hub checks the number (1 to 1000) and says what is wrong.
    const uses = Number($("invite-uses").value || 1);
    const made = await this.act("create an invitation", "invitations.create", { uses });
    if (!made) return;
    this.showSecret(
      `Invitation to ${made.project_slug}: ${made.uses} use${made.uses === 1 ? "" : "s"}, ` +
        `until ${new Date(made.expires_at).toLocaleString()}`,
      made.invitation,
      "An agent's init that carries it joins at once, whatever the policy: " +
        "send it as Authorization: Bearer <token> on POST /v1/init, or as \"invitation\" in the body.",
    );
  }

  // -- agents and their keys -------------------------------------------------------------

  async load_keys() {
    const { keys } = await this.ctx.call("keys.list");
    this.keys = keys;
    this.renderAgents();
  }

  renderAgents() {
    const agents = [...this.ctx.agents().values()].sort((a, b) => a.alias.localeCompare(b.alias));
    const shape = agents.map((a) => [a.agent_id, a.alias, a.granted_role ?? null, a.online]);
    const key = JSON.stringify([shape, this.keys]);
    $("access-agents-empty").hidden = agents.length > 0;
    if (key === this.drawn.agents) return; // keeps armed buttons armed
    this.drawn.agents = key;
    const byAgent = new Map();
    for (const k of this.keys) {
      if (!byAgent.has(k.agent_id)) byAgent.set(k.agent_id, []);
      byAgent.get(k.agent_id).push(k);
    }
    $("access-agents").replaceChildren(
      ...agents.map((a) => this.agentRow(a, byAgent.get(a.agent_id) ?? [])),
    );
  }

  agentRow(agent, keys) {
    const { h } = this.ctx;
    const active = keys.filter((k) => k.active);
    const revoked = keys.filter((k) => !k.active);
    const coordinator = agent.granted_role === "coordinator";
    const rotate = h("button", { type: "button", class: "ghost small rotate" }, "Rotate key");
    rotate.addEventListener("click", () =>
      this.ctx.confirmThen(rotate, () => this.rotate(agent, rotate)));
    const grant = h("button", { type: "button", class: "ghost small grant" },
      coordinator ? "Take back coordinator" : "Make coordinator");
    grant.addEventListener("click", () => this.grant(agent, coordinator ? null : "coordinator", grant));
    const remove = h("button", { type: "button", class: "ghost small danger delete" }, "Delete agent");
    remove.addEventListener("click", () =>
      this.ctx.confirmThen(remove, () => this.remove(agent, remove)));
    return h(
      "li",
      { class: "access-agent", dataset: { alias: agent.alias, agentId: agent.agent_id } },
      h("div", { class: "access-agent-head" },
        h("span", { class: `dot${agent.online ? " on" : ""}`, "aria-hidden": "true" }),
        h("strong", { class: "alias" }, agent.alias),
        coordinator
          ? h("span", { class: "tag granted", title: "granted by a human" }, "coordinator")
          : null,
        agent.role && !coordinator ? h("span", { class: "tag" }, agent.role) : null),
      h("ul", { class: "rows keys" },
        ...active.map((k) => this.keyRow(k)),
        active.length ? null : h("li", { class: "empty small" }, "No working key.")),
      revoked.length
        ? h("details", { class: "revoked-keys" },
            h("summary", { class: "muted small" },
              `${revoked.length} revoked key${revoked.length === 1 ? "" : "s"}`),
            h("ul", { class: "rows keys" }, ...revoked.map((k) => this.keyRow(k))))
        : null,
      h("div", { class: "access-actions" }, rotate, grant, remove),
    );
  }

  keyRow(k) {
    const { h, ago } = this.ctx;
    const revoke = k.active
      ? h("button", { type: "button", class: "ghost small danger revoke" }, "Revoke")
      : null;
    revoke?.addEventListener("click", () =>
      this.ctx.confirmThen(revoke, () => this.revoke(k, revoke)));
    return h(
      "li",
      { class: `row key${k.active ? "" : " revoked"}`,
        dataset: { keyId: k.key_id, prefix: k.prefix, active: String(k.active) } },
      h("span", { class: "mono key-prefix", title: "the key's first characters" }, `${k.prefix}…`),
      h("span", { class: "muted small grow" },
        `created ${when(k.created_at)} · `,
        k.last_used_at
          ? ["used ", h("span", { dataset: { ago: k.last_used_at }, title: k.last_used_at },
              ago(k.last_used_at))]
          : "never used"),
      k.active
        ? revoke
        : h("span", { class: "tag revoked-tag" },
            `revoked ${when(k.revoked_at)}${k.revoked_by ? ` by ${displayName(k.revoked_by)}` : ""}`),
    );
  }

  async rotate(agent, button) {
    const rotated = await this.act(`rotate ${agent.alias}'s key`, "keys.rotate", {
      agent_id: agent.agent_id,
    });
    button.disabled = false;
    if (!rotated) return;
    this.showSecret(
      `New key for ${agent.alias}`,
      rotated.api_key,
      `Copy it now: it is shown once and will not be shown again. ${agent.alias}'s ` +
        `old key stopped working on every instance; give this one to the agent.`,
    );
    this.later("keys", 0);
  }

  async revoke(k, button) {
    const done = await this.act(`revoke ${k.prefix}…`, "keys.revoke", { key_id: k.key_id });
    if (done) this.ctx.toast(`Revoked ${k.alias}'s key ${k.prefix}…: its sessions are closed`);
    else button.disabled = false;
    this.later("keys", 0);
  }

  async grant(agent, role, button) {
    button.disabled = true;
    const done = await this.act(
      role ? `make ${agent.alias} coordinator` : `take the coordinator role from ${agent.alias}`,
      "agents.grant",
      { agent_id: agent.agent_id, role },
    );
    if (done) {
      this.ctx.toast(role ? `${agent.alias} is now a coordinator` : `${agent.alias} is no longer a coordinator`);
    }
    button.disabled = false;
  }

  async remove(agent, button) {
    const done = await this.act(`delete ${agent.alias}`, "agents.delete", {
      agent_id: agent.agent_id,
    });
    if (done) this.ctx.toast(`Deleted ${agent.alias}: its keys stopped working`);
    else button.disabled = false;
  }

  // -- what the hub shows once -------------------------------------------------------------

  showSecret(title, value, note) {
    $("access-secret-title").textContent = title;
    $("access-secret-value").value = value;
    $("access-secret-note").textContent = note;
    $("access-secret-copy").textContent = "Copy";
    $("access-secret").hidden = false;
    $("access-secret").scrollIntoView({ block: "nearest" });
  }

  hideSecret() {
    $("access-secret").hidden = true;
    $("access-secret-value").value = "";
  }

  async copySecret() {
    const input = $("access-secret-value");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      // No clipboard permission: leave it selected for Ctrl+C.
      input.select();
      this.ctx.toast("Select-all done: press Ctrl+C (or ⌘C) to copy", true);
      return;
    }
    $("access-secret-copy").textContent = "Copied";
  }

  // -- the audit trail: newest first, page by page ---------------------------------------------

  async load_audit() {
    const { pages } = this.audit;
    const before = pages.at(-1);
    const answer = await this.ctx.call("audit.list", {
      limit: AUDIT_PAGE + 1,
      ...(before ? { before } : {}),
    });
    if (this.audit.pages !== pages || pages.at(-1) !== before) return; // paged meanwhile
    this.audit.more = answer.entries.length > AUDIT_PAGE;
    this.audit.entries = answer.entries.slice(0, AUDIT_PAGE);
    if (pages.length === 1) this.audit.newer = 0;
    this.renderAudit();
  }

  pageAudit(step) {
    const { pages, entries } = this.audit;
    if (step > 0 && this.audit.more) pages.push(entries.at(-1).id);
    else if (step < 0 && pages.length > 1) pages.pop();
    else return;
    this.later("audit", 0);
  }

  renderAudit() {
    const { h } = this.ctx;
    const { entries } = this.audit;
    $("audit").replaceChildren(
      ...entries.map((e) =>
        h(
          "li",
          { class: "row audit-entry",
            dataset: { id: e.id, action: e.action, outcome: e.outcome, actor: e.actor } },
          h("time", { class: "muted small mono", datetime: e.at, title: e.at }, when(e.at)),
          h("span", { class: "who" }, displayName(e.actor)),
          h("span", { class: "mono action" }, e.action),
          h("span", { class: "grow muted small" }, this.describe(e)),
          h("span", { class: `tag outcome-${e.outcome === "ok" ? "ok" : "refused"}` },
            e.outcome === "ok" ? "done" : e.outcome.replaceAll("_", " ")),
        ),
      ),
    );
    $("audit-empty").hidden = entries.length > 0;
    this.renderAuditPager(this.audit.newer);
  }

  renderAuditPager(newer) {
    this.audit.newer = newer;
    const page = this.audit.pages.length;
    const status = $("audit-status");
    status.dataset.page = String(page);
    status.textContent =
      page === 1 ? "Newest first" : `Page ${page}${this.audit.more ? "" : " (the oldest)"}`;
    $("audit-older").disabled = !this.audit.more;
    $("audit-newer").disabled = page === 1;
    $("audit-newer").textContent = newer > 0 && page > 1 ? `Newer (${newer} new)` : "Newer";
  }

  // Ids become names where the page knows them; never a secret (the hub
  // keeps none in the trail).
  describe(entry) {
    const agents = this.ctx.agents();
    const parts = [];
    if (entry.target) parts.push(entry.target);
    for (const [name, value] of Object.entries(entry.detail ?? {})) {
      if (name === "agent_id") parts.push(agents.get(value)?.alias ?? `agent ${value}`);
      else if (name === "request_id") {
        const alias = this.requestAliases.get(value);
        parts.push(alias ? `${alias}'s join request` : `join request ${value}`);
      }
      else if (name === "key_id") {
        const k = this.keys.find((x) => x.key_id === value);
        parts.push(k ? `${k.alias}'s key ${k.prefix}…` : `key ${value}`);
      } else if (Array.isArray(value)) parts.push(`${name}: ${value.join(", ")}`);
      else parts.push(`${name}: ${value ?? "none"}`);
    }
    return parts.join(" · ");
  }
}
