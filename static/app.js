// The BeadHub dashboard: one page, no build step, nothing loaded from
// outside the hub. It holds a browser ticket (never the api key), talks
// JSON-RPC over the hub's WebSocket and redraws from pushed events; the
// only timer redraws countdowns and "5s ago" labels, it never asks the hub.

import { ControlRoom } from "./control.js";
import { renderMarkdown } from "./markdown.js";
import { when } from "./messages.js";

const STORAGE_KEY = "beadhub.session";
const ACTIVITY_TYPES = ["mail", "chat.message"];
const ACTIVITY_LIMIT = 60;
const TIMELINE_LIMIT = 60;
const CALL_TIMEOUT_MS = 15000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5000;

const $ = (id) => document.getElementById(id);

// -- tiny DOM helper: text goes in as text, never as HTML ---------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function pick(obj, ...names) {
  for (const name of names) {
    const value = obj?.[name];
    if (value !== undefined && value !== null && value !== "") return value;
  }
  return undefined;
}

function firstLine(text, max = 120) {
  const line = String(text ?? "").split("\n").find((l) => l.trim()) ?? "";
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

function listOf(value) {
  if (Array.isArray(value)) return value;
  return value === undefined || value === null || value === "" ? [] : [value];
}

// -- time rendering -------------------------------------------------------------

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return new Date(iso).toLocaleDateString();
}

function clock(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function remaining(iso) {
  const seconds = Math.max(0, Math.floor((Date.parse(iso) - Date.now()) / 1000));
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return { seconds, text: seconds > 0 ? `${m}:${s}` : "expired" };
}

// One ticker for every relative label on the page: it reads the clock and
// rewrites text, nothing more.
function tick() {
  for (const el of document.querySelectorAll("[data-expires]")) {
    const left = remaining(el.dataset.expires);
    el.textContent = left.text;
    el.dataset.seconds = String(left.seconds);
    el.classList.toggle("soon", left.seconds < 60);
  }
  for (const el of document.querySelectorAll("[data-ago]")) {
    el.textContent = ago(el.dataset.ago);
  }
}

// -- the session: a ticket in sessionStorage, one project per tab --------------

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
    if (saved?.ticket && Date.parse(saved.expires_at) > Date.now()) return saved;
  } catch {
    // A damaged entry is treated as signed out.
  }
  sessionStorage.removeItem(STORAGE_KEY);
  return null;
}

// Humans sign in with a human credential (the operator's token from
// `beadhub serve`, or a one-time link from `beadhub signin` or another
// human); an agent's api key (`bdh :dashboard`) opens that agent's own
// view, with only what the agent may do itself.
const HUMAN_CREDENTIAL = /^bh[ol]_/;

async function exchangeKey(credential, projectSlug = "") {
  const human = HUMAN_CREDENTIAL.test(credential);
  const response = await fetch(human ? "/v1/auth/signin" : "/v1/auth/ticket", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(
      human ? { token: credential, project_slug: projectSlug } : { api_key: credential },
    ),
    cache: "no-store",
    credentials: "omit",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || `the hub answered ${response.status}`);
  }
  if (body.choose_project) return { choose: body.projects, credential };
  const session = {
    ticket: body.ticket,
    expires_at: body.expires_at,
    project_slug: body.project_slug,
    human_name: body.kind === "agent" ? `${body.alias} (agent view)` : body.human_name,
    kind: body.kind,
    alias: body.alias,
  };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  return session;
}

// A `bdh :dashboard` link carries the key once, in the fragment (which the
// browser never sends to a server): `#api_key=` from bdh, `#key=` too; a
// human's sign-in link carries `#signin=`. Take it and wipe it from the
// address bar and history before doing anything else.
const FRAGMENT_KEYS = ["signin", "api_key", "key"];

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const name = FRAGMENT_KEYS.find((n) => params.get(n));
  if (!name) return null;
  const key = params.get(name);
  FRAGMENT_KEYS.forEach((n) => params.delete(n));
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return key;
}

// -- JSON-RPC over the hub's WebSocket, with reconnect and resume ------------------

class RpcError extends Error {
  constructor(error) {
    super(error.message);
    this.code = error.code;
    this.data = error.data;
  }
}

class HubSocket {
  constructor(ticket, handlers) {
    this.ticket = ticket;
    this.handlers = handlers;
    this.cursor = null;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.seen = new Set();
    this.backoff = BACKOFF_FIRST_MS;
    this.failures = 0;
    this.stopped = false;
    this.retryTimer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // The ticket rides in the handshake's subprotocols, never in the URL
    // (which proxies and access logs keep).
    const query = new URLSearchParams();
    if (this.cursor !== null) query.set("cursor", String(this.cursor));
    return `${scheme}://${location.host}/v1/ws?${query}`;
  }

  connect() {
    if (this.stopped) return;
    this.handlers.onState("connecting");
    const ws = (this.ws = new WebSocket(this.url(), ["beadhub", `beadhub.ticket.${this.ticket}`]));
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff = BACKOFF_FIRST_MS;
      this.failures = 0;
      this.handlers.onState("live");
      this.handlers.onOpen();
    };
    ws.onmessage = (message) => this.onFrame(message.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending();
      if (this.stopped) return;
      if (!opened) this.failures += 1;
      if (this.handlers.shouldGiveUp(this.failures)) return;
      // Exponential backoff with jitter, so a restarted hub is not hit by
      // every dashboard in the same millisecond.
      const delay = this.backoff * (0.5 + Math.random());
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.handlers.onState("reconnecting", delay);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  onFrame(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message.method === "event") {
      const event = message.params;
      if (event.id && this.seen.has(event.id)) return;
      if (event.id) {
        this.seen.add(event.id);
        if (this.seen.size > 5000) this.seen.delete(this.seen.values().next().value);
      }
      this.advance(event.cursor);
      this.handlers.onEvent(event);
      return;
    }
    const call = this.pending.get(message.id);
    if (!call) return;
    this.pending.delete(message.id);
    clearTimeout(call.timer);
    if (message.error) call.reject(new RpcError(message.error));
    else call.resolve(message.result);
  }

  advance(cursor) {
    if (cursor === undefined || cursor === null) return;
    const value = Number(cursor);
    if (Number.isFinite(value) && (this.cursor === null || value > this.cursor)) {
      this.cursor = value;
    }
  }

  call(method, params = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("not connected to the hub"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} timed out`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  failPending() {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new Error("the connection to the hub was lost"));
    }
    this.pending.clear();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    this.failPending();
    if (ws) ws.close(1000);
  }
}

// -- state --------------------------------------------------------------------

const METHOD_NOT_FOUND = -32601;

function freshState() {
  return {
    agents: new Map(), // agent_id -> presence row
    claims: [],
    ready: [],
    reservations: [],
    escalations: [],
    activity: new Map(), // event id -> event (mail and chat)
    timelineAgent: null,
    timeline: new Map(),
    missing: new Set(), // methods this hub does not offer
  };
}

let session = null;
let socket = null;
let room = null; // control.js: message centre, search, attention, charts
let state = freshState();
const refreshTimers = new Map();
const refreshing = new Map();

// Each list is re-read from the hub when an event says it changed (push,
// then one read). A burst of events makes one read; an event that arrives
// while a read is under way makes one more after it, so the last read
// always started after the last change and an older answer never wins.
function scheduleRefresh(name, delay = 40) {
  const running = refreshing.get(name);
  if (running) {
    running.again = true;
    return;
  }
  if (refreshTimers.has(name)) return;
  refreshTimers.set(
    name,
    setTimeout(() => runRefresh(name), delay),
  );
}

async function runRefresh(name) {
  refreshTimers.delete(name);
  const run = { again: false };
  refreshing.set(name, run);
  const current = socket;
  try {
    await REFRESHERS[name](current);
  } catch (error) {
    // A failed read keeps what is shown; the next event or reconnect reads again.
    if (current === socket && current?.ws) toast(error.message || String(error), true);
  } finally {
    refreshing.delete(name);
    if (run.again && current === socket) scheduleRefresh(name, 0);
  }
}

// A method this hub does not have answers null (its panel says so); any
// other failure throws. Answers that arrive after a sign-out or a switch of
// socket are dropped (`Stale`).
class Stale extends Error {}

async function read(current, method, params = {}, { optional = true } = {}) {
  if (optional && state.missing.has(method)) return null;
  let result;
  try {
    result = await current.call(method, params);
  } catch (error) {
    if (optional && error.code === METHOD_NOT_FOUND) {
      state.missing.add(method);
      result = null;
    } else {
      throw current === socket ? error : new Stale();
    }
  }
  if (current !== socket) throw new Stale();
  return result;
}

const REFRESHERS = {
  async agents(current) {
    const result = await read(current, "presence.list", {}, { optional: false });
    state.agents = new Map(result.agents.map((a) => [a.agent_id, a]));
    renderTeam();
  },
  async claims(current) {
    const [claims, ready] = await Promise.all([
      read(current, "claims.list"),
      read(current, "beads.ready"),
    ]);
    state.claims = listOf(pick(claims ?? {}, "claims", "items"));
    state.ready = listOf(pick(ready ?? {}, "issues", "ready", "items"));
    state.workMissing = claims === null && ready === null;
    renderWork();
    renderTeam();
  },
  async reservations(current) {
    const result = await read(current, "reservations.list");
    state.reservations = listOf(pick(result ?? {}, "reservations", "items"));
    state.reservationsMissing = result === null;
    renderReservations();
    renderTeam();
  },
  async escalations(current) {
    const result = await read(current, "escalations.list", { limit: 100 });
    state.escalations = listOf(pick(result ?? {}, "escalations", "items"));
    renderEscalations();
  },
  async activity(current) {
    const result = await read(current, "activity.recent", {
      types: ACTIVITY_TYPES,
      limit: ACTIVITY_LIMIT,
    });
    if (!result) return;
    current.advance(result.cursor);
    for (const event of result.events) state.activity.set(event.id, event);
    renderActivity();
  },
  async timeline(current) {
    const agentId = state.timelineAgent;
    if (!agentId) return;
    const result = await read(current, "activity.recent", {
      agent_id: agentId,
      limit: TIMELINE_LIMIT,
    });
    if (!result || state.timelineAgent !== agentId) return;
    for (const event of result.events) state.timeline.set(event.id, event);
    renderTimeline();
  },
  async policy(current) {
    const [policy, versions] = await Promise.all([
      read(current, "policy.get"),
      read(current, "policy.versions", { limit: 50 }),
    ]);
    state.policy = policy;
    state.policyVersions = versions?.versions ?? [];
    renderPolicy();
  },
};

function refreshAll() {
  for (const name of Object.keys(REFRESHERS)) scheduleRefresh(name, 0);
}

// -- events ---------------------------------------------------------------------

const EVENT_LISTS = {
  "agent.registered": "agents",
  "claim.acquired": "claims",
  "claim.released": "claims",
  "beads.synced": "claims",
  "beads.updated": "claims",
  "reservation.granted": "reservations",
  "reservation.released": "reservations",
  "reservation.renewed": "reservations",
  "reservation.revoked": "reservations",
  "reservation.expired": "reservations",
  "agent.granted": "agents",
  "workspace.deleted": "agents",
  "escalation.created": "escalations",
  "escalation.answered": "escalations",
  "escalation.expired": "escalations",
  "policy.updated": "policy",
};

function onEvent(event) {
  if (event.type === "resync") {
    onResync(event);
    return;
  }
  room?.onEvent(event);
  if (event.type === "presence" && event.data?.agent_id) {
    state.agents.set(event.data.agent_id, event.data);
    renderTeam();
    // A presence.list answer under way may predate this change.
    if (refreshing.has("agents")) scheduleRefresh("agents");
  }
  const list = EVENT_LISTS[event.type] ?? (event.type.startsWith("beads.") ? "claims" : null);
  if (list) scheduleRefresh(list);
  if (ACTIVITY_TYPES.includes(event.type)) {
    state.activity.set(event.id, event);
    renderActivity();
  }
  if (state.timelineAgent && concerns(event, state.timelineAgent)) {
    state.timeline.set(event.id, event);
    renderTimeline();
  }
}

// The page resumed from a cursor older than the hub keeps events: the hub
// could not replay what happened meanwhile and said so. What the page built
// from events (the mail and chat feed, a timeline) may have holes, so it is
// dropped, and every list is read again.
function onResync(event) {
  state.activity = new Map();
  state.timeline = new Map();
  renderActivity();
  renderTimeline();
  refreshAll();
  room?.onResync();
  const days = event.data?.retention_days;
  const note = $("resync-note");
  note.hidden = false;
  note.textContent =
    `This page was away longer than the hub keeps events` +
    `${days ? ` (${days} day${days === 1 ? "" : "s"})` : ""}: ` +
    `it read everything again at ${new Date().toLocaleTimeString()}; this feed starts from what the hub still has.`;
  toast("Caught up: the page read everything again");
}

function concerns(event, agentId) {
  return JSON.stringify(event.data ?? {}).includes(agentId);
}

// -- rendering: team -------------------------------------------------------------

function agentName(agentId, fallback) {
  return state.agents.get(agentId)?.alias ?? fallback ?? "?";
}

function claimsOf(agent) {
  return state.claims.filter(
    (c) =>
      (c.agent_id && c.agent_id === agent.agent_id) ||
      (!c.agent_id && pick(c, "alias", "claimed_by") === agent.alias),
  );
}

function renderTeam() {
  const agents = [...state.agents.values()].sort(
    (a, b) => Number(b.online) - Number(a.online) || a.alias.localeCompare(b.alias),
  );
  const online = agents.filter((a) => a.online).length;
  $("online-count").textContent = agents.length ? `${online} of ${agents.length} online` : "";
  $("team-empty").hidden = agents.length > 0;
  // Redrawn on every change: keep the keyboard focus on the same agent.
  const focused = document.activeElement?.closest?.("#team li.agent")?.dataset.agentId;
  $("team").replaceChildren(...agents.map(agentItem));
  if (focused) $("team").querySelector(`li[data-agent-id="${focused}"] .agent-open`)?.focus();
  renderMailTargets(agents);
  room?.onAgents();
}

function agentItem(agent) {
  const claims = claimsOf(agent);
  const where = [agent.repo, agent.branch].filter(Boolean).join(" @ ");
  const selected = state.timelineAgent === agent.agent_id;
  return h(
    "li",
    {
      class: `agent ${agent.online ? "online" : "offline"}${selected ? " selected" : ""}`,
      dataset: { alias: agent.alias, agentId: agent.agent_id, online: String(agent.online) },
    },
    h(
      "button",
      {
        type: "button",
        class: "agent-open",
        title: `Timeline of ${agent.alias}`,
        "aria-pressed": String(selected),
        onclick: () => openTimeline(agent.agent_id),
      },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "alias" }, agent.alias),
      h("span", { class: "agent-state" }, agent.online ? "online" : "offline"),
    ),
    h(
      "div",
      { class: "agent-meta" },
      agent.role ? h("span", { class: "tag role" }, agent.role) : null,
      // A declared role grants nothing; this one a human granted.
      agent.granted_role
        ? h("span", { class: "tag granted", title: "granted by a human" },
            `${agent.granted_role} (granted)`)
        : null,
      agent.human_name ? h("span", { class: "human-of" }, `for ${agent.human_name}`) : null,
      where ? h("span", { class: "where mono" }, where) : null,
    ),
    claims.length
      ? h(
          "div",
          { class: "agent-claim" },
          "Claim: ",
          ...claims.map((c) => h("span", { class: "mono bead" }, beadId(c))),
          claims[0].title ? ` ${firstLine(claims[0].title, 60)}` : "",
        )
      : null,
    agent.focus ? h("div", { class: "agent-focus" }, `Focus: ${agent.focus}`) : null,
    filesOf(agent),
    h(
      "div",
      { class: "agent-seen muted small" },
      agent.last_seen
        ? ["last seen ", h("span", { class: "last-seen", dataset: { ago: agent.last_seen } },
            ago(agent.last_seen))]
        : "never connected",
    ),
  );
}

function filesOf(agent) {
  const held = state.reservations.filter((r) => holderOf(r) === agent.agent_id);
  if (!held.length) return null;
  const shown = held.slice(0, 2).map((r) => r.path).join(", ");
  const more = held.length > 2 ? ` +${held.length - 2}` : "";
  return h("div", { class: "agent-files" }, "Files: ", h("span", { class: "mono" }, shown), more);
}

function renderMailTargets(agents) {
  const select = $("mail-to");
  const current = select.value;
  const options = [h("option", { value: "*" }, "Everyone")];
  for (const agent of [...agents].sort((a, b) => a.alias.localeCompare(b.alias))) {
    options.push(h("option", { value: agent.alias }, agent.alias));
  }
  select.replaceChildren(...options);
  select.value = [...select.options].some((o) => o.value === current) ? current : "*";
}

// -- rendering: work ---------------------------------------------------------------

function beadId(item) {
  return pick(item, "bead_id", "issue_id", "id") ?? "?";
}

function renderWork() {
  $("claims").replaceChildren(
    ...state.claims.map((c) =>
      h(
        "li",
        { class: "row claim", dataset: { bead: beadId(c) } },
        h("span", { class: "mono bead" }, beadId(c)),
        h("span", { class: "grow" }, firstLine(pick(c, "title", "summary") ?? "", 80)),
        h("span", { class: "who" }, agentName(c.agent_id, pick(c, "alias", "claimed_by"))),
        // The holder is gone (no session, no heartbeat): released after the grace.
        c.stale
          ? h("span", { class: "tag stale", title: `holder last seen ${c.holder_last_seen ?? "?"}` },
              c.holder_last_seen ? `stale, seen ${ago(c.holder_last_seen)}` : "stale")
          : null,
        pick(c, "claimed_at", "created_at")
          ? h("span", { class: "muted small", dataset: { ago: pick(c, "claimed_at", "created_at") } },
              ago(pick(c, "claimed_at", "created_at")))
          : null,
      ),
    ),
  );
  $("ready").replaceChildren(
    ...state.ready.map((issue) =>
      h(
        "li",
        { class: "row ready", dataset: { bead: beadId(issue) } },
        h("span", { class: "mono bead" }, beadId(issue)),
        h("span", { class: "grow" }, firstLine(pick(issue, "title", "summary") ?? "", 80)),
        issue.priority !== undefined && issue.priority !== null
          ? h("span", { class: "tag" }, `P${issue.priority}`)
          : null,
      ),
    ),
  );
  $("claims-empty").hidden = state.claims.length > 0;
  $("ready-empty").hidden = state.ready.length > 0;
  const note = $("work-note");
  note.hidden = !state.workMissing;
  note.textContent = state.workMissing ? "This hub does not serve claims yet." : "";
}

// -- rendering: reservations -------------------------------------------------------

function renderReservations() {
  const items = [...state.reservations].sort(
    (a, b) =>
      String(a.expires_at ?? "").localeCompare(String(b.expires_at ?? "")) ||
      String(a.path ?? "").localeCompare(String(b.path ?? "")),
  );
  $("reservations").replaceChildren(...items.map(reservationItem));
  $("reservations-empty").hidden = items.length > 0;
  const note = $("reservations-note");
  note.hidden = !state.reservationsMissing;
  note.textContent = state.reservationsMissing ? "This hub does not serve reservations yet." : "";
  tick();
}

function holderOf(r) {
  return pick(r, "holder_agent_id", "agent_id", "workspace_id");
}

function reservationItem(r) {
  const path = pick(r, "path", "resource_key") ?? "?";
  const holder = agentName(holderOf(r), pick(r, "holder_alias", "alias"));
  const exclusive = r.exclusive !== false;
  const revoke = h("button", { type: "button", class: "ghost small danger revoke" }, "Revoke");
  revoke.addEventListener("click", () => confirmThen(revoke, () => revokeReservation(r)));
  return h(
    "li",
    { class: "row reservation", dataset: { path, reservationId: pick(r, "reservation_id", "id") ?? "" } },
    h("span", { class: "mono path grow", title: r.reason ? `${path} — ${r.reason}` : path }, path),
    h("span", { class: "who" }, holder),
    r.bead_id ? h("span", { class: "mono bead" }, r.bead_id) : null,
    h("span", { class: "tag" }, exclusive ? "exclusive" : "shared"),
    r.expires_at
      ? h("span", { class: "countdown mono", title: `expires ${r.expires_at}`,
                    dataset: { expires: r.expires_at } }, remaining(r.expires_at).text)
      : null,
    revoke,
  );
}

// Destructive buttons ask once more in place instead of a modal prompt.
function confirmThen(button, action) {
  if (button.dataset.armed === "1") {
    button.disabled = true;
    action();
    return;
  }
  button.dataset.armed = "1";
  const label = button.textContent;
  button.textContent = "Confirm";
  setTimeout(() => {
    if (!button.isConnected) return;
    button.dataset.armed = "";
    button.textContent = label;
  }, 4000);
}

async function revokeReservation(r) {
  try {
    await socket.call("reservations.revoke", { paths: [r.path] });
    toast(`Revoked ${r.path}`);
  } catch (error) {
    toast(`Could not revoke: ${error.message}`, true);
  }
  scheduleRefresh("reservations");
}

// -- rendering: escalations ---------------------------------------------------------

function pendingEscalations() {
  return state.escalations.filter((e) => (e.status ?? "pending") === "pending");
}

function renderEscalations() {
  const pending = pendingEscalations();
  const badge = $("escalation-count");
  badge.textContent = String(pending.length);
  badge.dataset.count = String(pending.length);
  $("escalations-button").classList.toggle("alert", pending.length > 0);
  const shown = [...pending, ...state.escalations.filter((e) => !pending.includes(e)).slice(0, 5)];
  $("escalations").replaceChildren(...shown.map(escalationItem));
  $("escalations-empty").hidden = shown.length > 0;
  $("escalations-note").textContent = pending.length ? `${pending.length} pending` : "";
  if (session) {
    const prefix = pending.length ? `(${pending.length}) ` : "";
    document.title = `${prefix}${session.project_slug} · BeadHub`;
  }
  const open = $("escalation-dialog").dataset.escalationId;
  if (open && $("escalation-dialog").open) {
    const current = state.escalations.find((e) => e.escalation_id === open);
    if (current) fillEscalationDialog(current);
  }
}

function escalationItem(e) {
  const pending = (e.status ?? "pending") === "pending";
  return h(
    "li",
    { class: `row escalation ${e.status ?? "pending"}`, dataset: { escalationId: e.escalation_id } },
    h("span", { class: `tag status-${e.status}` }, e.status ?? "pending"),
    h("span", { class: "grow subject" }, e.subject),
    h("span", { class: "who" }, e.alias ?? agentName(e.agent_id)),
    e.status === "answered"
      ? h("span", { class: "muted small answered-by" }, `answered by ${e.responded_by} ${when(e.responded_at)}`)
      : h("span", { class: "muted small", dataset: { ago: e.created_at } }, ago(e.created_at)),
    h(
      "button",
      { type: "button", class: pending ? "primary small" : "ghost small",
        onclick: () => openEscalation(e.escalation_id) },
      pending ? "Answer" : "View",
    ),
  );
}

function openEscalation(id) {
  const escalation = state.escalations.find((e) => e.escalation_id === id);
  if (!escalation) return;
  const dialog = $("escalation-dialog");
  dialog.dataset.escalationId = id;
  $("escalation-response").value = "";
  $("escalation-status").textContent = "";
  fillEscalationDialog(escalation);
  if (!dialog.open) dialog.showModal();
  if (escalation.status === "pending") $("escalation-response").focus();
}

function fillEscalationDialog(e) {
  const pending = (e.status ?? "pending") === "pending";
  $("escalation-subject").textContent = e.subject;
  const bits = [`from ${e.alias ?? agentName(e.agent_id)}`, `asked ${ago(e.created_at)}`];
  if (e.bead_id) bits.push(`issue ${e.bead_id}`);
  if (pending && e.expires_at) bits.push(`expires ${new Date(e.expires_at).toLocaleString()}`);
  $("escalation-meta").textContent = bits.join(" · ");
  $("escalation-situation").replaceChildren(renderMarkdown(e.situation));
  const answer = $("escalation-answer");
  answer.hidden = pending;
  answer.textContent = pending
    ? ""
    : e.status === "answered"
      ? `Answered by ${e.responded_by ?? "someone"} ${when(e.responded_at)}: ${e.response}`
      : `This escalation expired ${when(e.expires_at)} without an answer; the agent was told.`;
  $("escalation-response").disabled = !pending;
  $("escalation-send").disabled = !pending;
}

async function sendEscalationResponse(event) {
  event.preventDefault();
  const dialog = $("escalation-dialog");
  const id = dialog.dataset.escalationId;
  const response = $("escalation-response").value.trim();
  if (!id || !response) return;
  $("escalation-send").disabled = true;
  try {
    await socket.call("escalations.respond", { escalation_id: id, response });
    dialog.close();
    toast("Response sent");
  } catch (error) {
    $("escalation-status").textContent =
      error.data?.status === "expired"
        ? `Too late: this escalation expired ${when(error.data.expires_at)}, so your answer was not sent. The agent was told it expired; write to it in chat instead.`
        : error.data?.status === "answered"
          ? `Already answered by ${error.data.responded_by}; your answer was not sent.`
          : error.message;
    $("escalation-send").disabled = error.data?.status !== undefined;
  }
  scheduleRefresh("escalations");
}

// -- rendering: mail and chat ------------------------------------------------------

// Humans write from the dashboard as "human:<name>".
function displayName(alias) {
  const name = String(alias ?? "");
  return name.startsWith("human:") ? `${name.slice(6)} (human)` : name;
}

function describeMessage(event) {
  const d = event.data ?? {};
  const from = displayName(pick(d, "from_alias", "from", "sender_alias") ?? agentName(d.from_agent_id));
  let to = pick(d, "to_aliases", "to", "recipients_aliases", "participants");
  if (d.to_all) to = "everyone";
  to = listOf(to).filter((name) => name !== from).join(", ");
  const text =
    event.type === "mail"
      ? pick(d, "subject") || firstLine(pick(d, "body", "preview"))
      : firstLine(pick(d, "body", "text", "preview"));
  return { from, to, text };
}

function renderActivity() {
  const events = [...state.activity.values()]
    .sort((a, b) => Number(b.cursor) - Number(a.cursor))
    .slice(0, ACTIVITY_LIMIT);
  $("activity").replaceChildren(
    ...events.map((event) => {
      const { from, to, text } = describeMessage(event);
      const kind = event.type === "mail" ? "mail" : "chat";
      return h(
        "li",
        { class: `row message ${kind}`, dataset: { eventId: event.id } },
        h("span", { class: `tag kind-${kind}` }, kind),
        h(
          "button",
          { type: "button", class: "link grow message-text", title: "Open in full",
            onclick: () => room?.messages.openEvent(event) },
          h("span", { class: "from" }, from),
          to ? h("span", { class: "to muted" }, ` → ${to}`) : null,
          h("span", { class: "text" }, text ? `: ${text}` : ""),
        ),
        h("time", { class: "muted small", datetime: event.at, title: event.at }, clock(event.at)),
      );
    }),
  );
  $("activity-empty").hidden = events.length > 0;
}

async function sendMail(event) {
  event.preventDefault();
  const target = $("mail-to").value;
  const body = $("mail-body").value.trim();
  const subject = $("mail-subject").value.trim();
  if (!body) return;
  const params = { body, subject };
  if (target === "*") params.to_all = true;
  else params.to = [target];
  const status = $("mail-status");
  status.textContent = "sending…";
  try {
    await socket.call("mail.send", params);
    $("mail-body").value = "";
    $("mail-subject").value = "";
    status.textContent = `sent to ${target === "*" ? "everyone" : target}`;
  } catch (error) {
    status.textContent = "";
    toast(`Mail not sent: ${error.message}`, true);
  }
}

// -- rendering: policy ------------------------------------------------------------

function renderPolicy() {
  const policy = state.policy;
  const note = $("policy-note");
  const missing = state.missing.has("policy.get");
  note.hidden = !missing;
  note.textContent = missing ? "This hub does not serve a policy." : "";
  const select = $("policy-version");
  const versions = state.policyVersions ?? [];
  select.replaceChildren(
    ...versions.map((v) =>
      h("option", { value: v.version }, `v${v.version}${v.active ? " (active)" : ""}`),
    ),
  );
  if (policy) select.value = String(policy.version);
  $("policy-activate").disabled = true;
  $("invariants").replaceChildren(
    ...(policy?.invariants ?? []).map((inv) =>
      h(
        "li",
        { class: "row invariant", dataset: { invariant: inv.id } },
        h("details", {},
          h("summary", {}, h("span", { class: "mono" }, inv.id), inv.title),
          renderMarkdown(inv.body_md)),
      ),
    ),
  );
  $("playbooks").replaceChildren(
    ...Object.entries(policy?.roles ?? {}).map(([role, book]) =>
      h(
        "li",
        { class: "row playbook", dataset: { role } },
        h("details", {},
          h("summary", {}, h("span", { class: "mono" }, role), book.title),
          renderMarkdown(book.playbook_md)),
      ),
    ),
  );
}

async function activatePolicy() {
  const version = Number($("policy-version").value);
  $("policy-activate").disabled = true;
  try {
    await socket.call("policy.activate", { version });
    toast(`Policy v${version} is now active`);
  } catch (error) {
    toast(`Could not activate: ${error.message}`, true);
  }
  scheduleRefresh("policy");
}

// -- rendering: timeline -----------------------------------------------------------

function describeEvent(event) {
  const d = event.data ?? {};
  const bead = pick(d, "bead_id", "issue_id");
  switch (event.type) {
    case "presence":
      return d.online ? `online${d.focus ? ` — ${d.focus}` : ""}` : "went offline";
    case "agent.registered":
      return `joined the project${d.role ? ` as ${d.role}` : ""}`;
    case "claim.acquired":
      return `claimed ${bead ?? "an issue"}${d.title ? ` — ${firstLine(d.title, 60)}` : ""}`;
    case "claim.released":
      return `released ${bead ?? "an issue"}`;
    case "mail":
    case "chat.message": {
      const { from, to, text } = describeMessage(event);
      return `${event.type === "mail" ? "mail" : "chat"} ${from}${to ? ` → ${to}` : ""}: ${text}`;
    }
    case "escalation.created":
      return `escalated: ${d.subject ?? ""}`;
    case "policy.updated":
      return `policy v${d.version} ${d.reason ?? "updated"}${d.by ? ` by ${displayName(d.by)}` : ""}`;
    case "escalation.answered":
      return `escalation answered: ${firstLine(d.response ?? d.subject ?? "")}`;
    case "agent.granted":
      return d.granted_role
        ? `made ${d.granted_role} by ${displayName(d.by)}`
        : `no longer a coordinator (${displayName(d.by)})`;
    case "key.rotated":
      return `key rotated by ${displayName(d.by)}: now ${d.prefix}…`;
    case "key.revoked":
      return `key ${d.prefix}… revoked by ${displayName(d.by)}`;
    case "workspace.deleted":
      return `deleted by ${displayName(d.by)}`;
    default:
      if (event.type.startsWith("reservation.")) {
        const what = event.type.split(".")[1];
        const paths = listOf(pick(d, "path", "paths")).join(", ");
        return `reservation ${what}${paths ? `: ${paths}` : ""}`;
      }
      return event.type;
  }
}

function openTimeline(agentId) {
  if (state.timelineAgent === agentId) {
    closeTimeline();
    return;
  }
  state.timelineAgent = agentId;
  state.timeline = new Map();
  $("timeline-panel").hidden = false;
  renderTimeline();
  renderTeam();
  scheduleRefresh("timeline", 0);
  $("timeline-panel").scrollIntoView({ block: "nearest" });
}

function closeTimeline() {
  state.timelineAgent = null;
  state.timeline = new Map();
  $("timeline-panel").hidden = true;
  renderTeam();
}

function renderTimeline() {
  const agentId = state.timelineAgent;
  if (!agentId) return;
  $("timeline-title").textContent = `Timeline · ${agentName(agentId)}`;
  const events = [...state.timeline.values()]
    .sort((a, b) => Number(b.cursor) - Number(a.cursor))
    .slice(0, TIMELINE_LIMIT);
  // Presence updates in a row (focus changes, reconnects) are one line.
  const rows = [];
  for (const event of events) {
    const last = rows.at(-1);
    if (event.type === "presence" && last?.event.type === "presence" &&
        Boolean(last.event.data?.online) === Boolean(event.data?.online)) {
      last.repeats += 1;
    } else {
      rows.push({ event, repeats: 1 });
    }
  }
  $("timeline").replaceChildren(
    ...rows.map(({ event, repeats }) =>
      h(
        "li",
        { class: "row tl-event", dataset: { type: event.type, repeats } },
        h("time", { class: "muted small mono", datetime: event.at, title: event.at }, when(event.at)),
        h("span", { class: "grow" }, describeEvent(event),
          repeats > 1 ? h("span", { class: "muted small" }, ` (${repeats} presence updates)`) : null),
      ),
    ),
  );
  $("timeline-empty").hidden = events.length > 0;
}

// -- chrome: connection state, toast, sign-in/out ---------------------------------

function setConnection(stateName, delay) {
  room?.onState(stateName);
  const el = $("connection");
  el.dataset.state = stateName;
  el.querySelector(".conn-text").textContent =
    stateName === "live"
      ? "live"
      : stateName === "reconnecting"
        ? `reconnecting in ${Math.max(1, Math.round(delay / 1000))}s`
        : stateName;
}

let toastTimer = null;
function toast(text, isError = false) {
  const el = $("toast");
  el.textContent = text;
  el.classList.toggle("error", isError);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 4000);
}

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  const error = $("signin-error");
  error.textContent = message;
  error.hidden = !message;
  document.title = "BeadHub";
  $("api-key").focus();
}

function start(newSession) {
  session = newSession;
  state = freshState();
  $("signin").hidden = true;
  $("app").hidden = false;
  $("project-slug").textContent = session.project_slug;
  $("human-name").textContent = session.human_name;
  $("resync-note").hidden = true;
  document.title = `${session.project_slug} · BeadHub`;
  renderTeam();
  renderWork();
  renderReservations();
  renderEscalations();
  renderActivity();
  renderPolicy();
  hubReadyButRefusing = false;
  room?.stop();
  room = new ControlRoom({
    call: (method, params) => socket.call(method, params),
    h,
    ago,
    toast,
    confirmThen,
    agents: () => state.agents,
    // Who "me" is in mail and chat: the agent itself in its own view.
    me: () => (session?.kind === "agent" ? session.alias : `human:${session?.human_name}`),
    agentView: () => session?.kind === "agent",
    openEscalation: (id) => {
      if (state.escalations.some((e) => e.escalation_id === id)) openEscalation(id);
      else toast("That escalation is older than the list shown here", true);
    },
  });
  socket = new HubSocket(session.ticket, {
    onOpen: () => {
      hubReadyButRefusing = false;
      refreshAll();
      room.onOpen();
    },
    onEvent,
    onState: setConnection,
    shouldGiveUp: (failures) => {
      // A ticket that expired cannot be renewed without the key: ask again.
      if (Date.parse(session.expires_at) <= Date.now()) {
        signOut("Your session expired. Sign in again.");
        return true;
      }
      // A browser does not say why a handshake failed. If the hub said it
      // was ready and still refuses the socket, the ticket is no longer
      // valid; otherwise the hub is down and retrying is right.
      if (hubReadyButRefusing) {
        signOut("The hub no longer accepts this session. Sign in again.");
        return true;
      }
      if (failures >= 3) probeHub();
      return false;
    },
  });
  socket.connect();
}

let hubReadyButRefusing = false;

async function probeHub() {
  const ready = await fetch("/ready", { cache: "no-store" }).then(
    (response) => response.ok,
    () => false,
  );
  hubReadyButRefusing = ready && socket?.ws?.readyState !== WebSocket.OPEN;
}

async function signOut(message = "") {
  const ticket = session?.ticket;
  socket?.close();
  socket = null;
  room?.stop();
  room = null;
  session = null;
  if (ticket) {
    // The ticket stops working everywhere, not just in this tab. An
    // expired or unknown one has nothing to revoke: ignore failures.
    await fetch("/v1/auth/ticket/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ticket }),
    }).catch(() => {});
  }
  state = freshState();
  sessionStorage.removeItem(STORAGE_KEY);
  $("escalation-dialog").open && $("escalation-dialog").close();
  showSignIn(message);
}

async function signIn(credential, projectSlug = "") {
  const error = $("signin-error");
  error.hidden = true;
  $("signin-projects").hidden = true;
  try {
    socket?.close();
    const answer = await exchangeKey(credential.trim(), projectSlug);
    if (answer.choose) chooseProject(answer.credential, answer.choose);
    else start(answer);
  } catch (failure) {
    showSignIn(`Sign-in failed: ${failure.message}`);
  }
}

// The operator's token signs in to any project: pick one. The token stays
// in this closure only, never in storage.
function chooseProject(credential, projects) {
  showSignIn(projects.length ? "" : "The hub has no project yet.");
  const list = $("signin-projects");
  list.replaceChildren(
    ...projects.map((slug) => {
      const button = h("button", { type: "button", dataset: { slug } }, slug);
      button.addEventListener("click", () => signIn(credential, slug));
      return h("li", {}, button);
    }),
  );
  list.hidden = projects.length === 0;
}

function main() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value;
    input.value = "";
    if (key.trim()) signIn(key);
  });
  $("signout").addEventListener("click", () => signOut());
  $("mail-form").addEventListener("submit", sendMail);
  $("escalation-form").addEventListener("submit", sendEscalationResponse);
  $("escalation-cancel").addEventListener("click", () => $("escalation-dialog").close());
  $("escalation-dialog").addEventListener("close", () => {
    delete $("escalation-dialog").dataset.escalationId;
  });
  $("escalations-button").addEventListener("click", () => {
    const first = pendingEscalations()[0];
    if (first) openEscalation(first.escalation_id);
    else $("escalations-panel").scrollIntoView({ behavior: "smooth" });
  });
  $("timeline-close").addEventListener("click", closeTimeline);
  $("policy-version").addEventListener("change", () => {
    $("policy-activate").disabled = Number($("policy-version").value) === state.policy?.version;
  });
  $("policy-activate").addEventListener("click", activatePolicy);
  setInterval(tick, 1000);

  const key = takeKeyFromFragment();
  if (key) {
    signIn(key);
    return;
  }
  const saved = loadSession();
  if (saved) start(saved);
  else showSignIn();
}

main();
