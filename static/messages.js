// The message centre: the human's inbox (mail and chats addressed to them,
// with unread counts), every conversation of the project, full mail
// threads with each recipient's delivery state, chat conversations with
// who waits on whom, and writing mail or chat to one agent, several or all.

const $ = (id) => document.getElementById(id);

export class MessageCentre {
  constructor(ctx) {
    this.ctx = ctx; // { call, h, ago, clock, toast, agents(), me(), agentView() }
    this.view = null; // { kind: "thread" | "chat", id, participants }
    this.timers = new Map();
    // Assigned, not added: a sign-in in the same tab makes a new centre,
    // and a second listener would send every message twice.
    $("messages-tabs").onclick = (e) => {
      const tab = e.target.closest("[data-tab]");
      if (tab) this.showTab(tab.dataset.tab);
    };
    $("inbox-button").onclick = () => {
      this.showTab("inbox");
      $("messages-panel").scrollIntoView({ block: "nearest" });
    };
    $("compose-form").onsubmit = (e) => this.compose(e);
    $("compose-all").onchange = () => this.renderRecipients();
    $("view-close").onclick = () => this.closeView();
    $("view-reply").onsubmit = (e) => this.reply(e);
    this.showTab("inbox");
  }

  onOpen() {
    // Every conversation of the project is a human's list; an agent's own
    // view keeps its inbox (its own chats are there).
    $("messages-tabs").querySelector('[data-tab="chats"]').hidden = this.ctx.agentView();
    this.later("inbox", 0);
    if (!this.ctx.agentView()) this.later("chats", 0);
    if (this.view) this.later("view", 0);
  }

  onEvent(event) {
    const d = event.data ?? {};
    const me = this.ctx.me();
    if (event.type === "mail" || event.type === "mail.read") {
      if (event.type === "mail.read" || (d.to ?? []).includes(me)) this.later("inbox");
      if (this.view?.kind === "thread" && d.thread_id === this.view.id) this.later("view");
      if (event.type === "mail.read" && this.view?.kind === "thread") this.later("view");
    }
    if (event.type === "chat.message" || event.type === "chat.read") {
      if (!this.ctx.agentView()) this.later("chats");
      if ((d.participants ?? []).includes(me) || event.type === "chat.read") this.later("inbox");
      if (this.view?.kind === "chat" && d.session_id === this.view.id) this.later("view");
    }
  }

  // One read per burst of events, as app.js's refreshes do.
  later(name, delay = 60) {
    coalesce(this.timers, name, delay, () => this[`load_${name}`](), (error) =>
      this.ctx.toast(error.message, true),
    );
  }

  showTab(name) {
    for (const tab of $("messages-tabs").querySelectorAll("[data-tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    }
    $("messages-inbox").hidden = name !== "inbox";
    $("messages-chats").hidden = name !== "chats";
    $("compose-form").hidden = name !== "compose";
    if (name === "compose") this.renderRecipients();
  }

  // -- the human's inbox ---------------------------------------------------------

  async load_inbox() {
    const [mail, chats] = await Promise.all([
      this.ctx.call("mail.inbox", { limit: 50 }),
      this.ctx.call("chat.pending"),
    ]);
    const unread = mail.unread_count + chats.unread_messages;
    const badge = $("inbox-count");
    badge.textContent = String(unread);
    badge.dataset.count = String(unread);
    $("inbox-button").classList.toggle("alert", unread > 0);
    const { h, ago } = this.ctx;
    const rows = [
      ...chats.pending.map((c) =>
        h(
          "li",
          { class: "row inbox-chat unread", dataset: { sessionId: c.session_id } },
          h("span", { class: "tag kind-chat" }, "chat"),
          h("button", { type: "button", class: "link grow", onclick: () => this.openChat(c.session_id) },
            `${c.last_from}: ${c.last_message}`),
          h("span", { class: "badge", dataset: { count: c.unread_count } }, String(c.unread_count)),
        ),
      ),
      ...mail.messages.map((m) =>
        h(
          "li",
          { class: `row inbox-mail${m.read ? "" : " unread"}`, dataset: { messageId: m.message_id } },
          h("span", { class: "tag kind-mail" }, "mail"),
          h("button", { type: "button", class: "link grow", onclick: () => this.openThread(m.thread_id, m) },
            `${m.from_alias}: ${m.subject || m.body.split("\n")[0]}`),
          h("span", { class: "muted small", dataset: { ago: m.created_at } }, ago(m.created_at)),
        ),
      ),
    ];
    $("inbox-list").replaceChildren(...rows);
    $("inbox-empty").hidden = rows.length > 0;
  }

  // -- every conversation ----------------------------------------------------------

  async load_chats() {
    const { sessions } = await this.ctx.call("chat.all", { limit: 200 });
    const { h, ago } = this.ctx;
    $("chat-list").replaceChildren(
      ...sessions.map((s) =>
        h(
          "li",
          { class: "row chat-session", dataset: { sessionId: s.session_id } },
          h("button", { type: "button", class: "link grow", onclick: () => this.openChat(s.session_id) },
            h("span", { class: "who" }, s.participants.join(", ")),
            h("span", { class: "muted" }, ` — ${s.last_from}: ${s.last_message.split("\n")[0]}`)),
          h("span", { class: "muted small" }, `${s.message_count} msg`),
          s.last_activity
            ? h("span", { class: "muted small", dataset: { ago: s.last_activity } }, ago(s.last_activity))
            : null,
        ),
      ),
    );
    $("chats-empty").hidden = sessions.length > 0;
  }

  // -- a thread or a conversation, in full -----------------------------------------

  openThread(threadId, first) {
    this.view = { kind: "thread", id: threadId, first };
    this.showView();
  }

  openChat(sessionId) {
    this.view = { kind: "chat", id: sessionId };
    this.showView();
  }

  openEvent(event) {
    const d = event.data ?? {};
    if (event.type === "mail" && d.thread_id) this.openThread(d.thread_id);
    else if (d.session_id) this.openChat(d.session_id);
  }

  showView() {
    $("message-view").hidden = false;
    $("view-messages").replaceChildren();
    $("view-title").textContent = "Loading…";
    this.later("view", 0);
    $("message-view").scrollIntoView({ block: "nearest" });
  }

  closeView() {
    this.view = null;
    $("message-view").hidden = true;
  }

  async load_view() {
    const view = this.view;
    if (!view) return;
    if (view.kind === "thread") {
      const thread = await this.ctx.call("mail.thread", { thread_id: view.id, limit: 1000 });
      if (this.view !== view) return;
      this.renderThread(thread);
      // Reading it in full marks the human's own copies read.
      const mine = thread.messages.filter((m) => !m.read).map((m) => m.message_id);
      if (mine.length) {
        this.ctx.call("mail.ack", { message_ids: mine }).then(() => this.later("inbox", 0), () => {});
      }
    } else {
      const chat = await this.ctx.call("chat.history", { session_id: view.id, limit: 2000 });
      if (this.view !== view) return;
      this.renderChat(chat);
      if (chat.participants.some((p) => p.alias === this.ctx.me())) {
        this.ctx.call("chat.read", { session_id: view.id }).then(() => this.later("inbox", 0), () => {});
      }
    }
  }

  renderThread(thread) {
    const { h } = this.ctx;
    this.view.participants = [
      ...new Set(thread.messages.flatMap((m) => [m.from_alias, ...(m.to ?? [])])),
    ];
    $("view-title").textContent = `Mail · ${thread.subject || "(no subject)"}`;
    $("view-meta").textContent = `${thread.count} message${thread.count === 1 ? "" : "s"} · ${this.view.participants.join(", ")}`;
    $("view-messages").replaceChildren(
      ...thread.messages.map((m) =>
        h(
          "li",
          { class: "msg", dataset: { messageId: m.message_id } },
          h("div", { class: "msg-head" },
            h("strong", {}, m.from_alias), ` → ${(m.to ?? []).join(", ")}`,
            h("time", { class: "muted small", datetime: m.created_at }, ` ${when(m.created_at)}`)),
          m.subject ? h("div", { class: "msg-subject" }, m.subject) : null,
          h("pre", { class: "msg-body" }, m.body),
          h("ul", { class: "deliveries" },
            ...(m.deliveries ?? []).map((d) =>
              h("li", { class: d.read_at ? "delivered read" : "delivered", dataset: { alias: d.alias } },
                d.read_at ? `${d.alias}: read ${when(d.read_at)}` : `${d.alias}: delivered, unread`))),
        ),
      ),
    );
    $("view-reply-body").placeholder = "Reply to the thread…";
  }

  renderChat(chat) {
    const { h } = this.ctx;
    const me = this.ctx.me();
    this.view.participants = chat.participants.map((p) => p.alias);
    this.view.member = this.view.participants.includes(me);
    $("view-title").textContent = `Chat · ${this.view.participants.join(", ")}`;
    const waits = (chat.waiting ?? []).map((w) => {
      const others = this.view.participants.filter((a) => a !== w.alias).join(", ");
      return `${w.alias} waits on ${others} (until ${when(w.waiting_until)})`;
    });
    $("view-meta").textContent = waits.length ? waits.join(" · ") : "Nobody is waiting.";
    $("view-meta").dataset.waiting = String(waits.length);
    $("view-messages").replaceChildren(
      ...chat.messages.map((m) =>
        h(
          "li",
          { class: `msg${m.from_alias === me ? " mine" : ""}`, dataset: { messageId: m.message_id } },
          h("div", { class: "msg-head" }, h("strong", {}, m.from_alias),
            h("time", { class: "muted small", datetime: m.timestamp }, ` ${when(m.timestamp)}`),
            m.hang_on ? h("span", { class: "tag" }, "hang on") : null,
            m.sender_leaving ? h("span", { class: "tag" }, "left") : null),
          h("pre", { class: "msg-body" }, m.body),
        ),
      ),
    );
    $("view-reply-body").placeholder = this.view.member
      ? "Answer in this chat…"
      : "Write to them (starts a chat that includes you)…";
  }

  async reply(event) {
    event.preventDefault();
    const view = this.view;
    const body = $("view-reply-body").value.trim();
    if (!view || !body) return;
    const me = this.ctx.me();
    try {
      if (view.kind === "thread") {
        const to = (view.participants ?? []).filter((a) => a !== me);
        await this.ctx.call("mail.send", { to, body, thread_id: view.id });
      } else if (view.member) {
        await this.ctx.call("chat.send", { session_id: view.id, body });
      } else {
        const to = view.participants.filter((a) => a !== me);
        const sent = await this.ctx.call("chat.send", { to, body });
        this.view = { kind: "chat", id: sent.session_id };
      }
      $("view-reply-body").value = "";
      this.later("view", 0);
    } catch (error) {
      this.ctx.toast(`Not sent: ${error.message}`, true);
    }
  }

  // -- writing to one agent, several or all --------------------------------------------

  renderRecipients() {
    const { h } = this.ctx;
    const all = $("compose-all").checked;
    const chosen = new Set(
      [...$("compose-to").querySelectorAll("input:checked")].map((i) => i.value),
    );
    const agents = [...this.ctx.agents().values()].sort((a, b) => a.alias.localeCompare(b.alias));
    $("compose-to").replaceChildren(
      ...agents.map((a) =>
        h("label", { class: "check" },
          h("input", { type: "checkbox", name: "to", value: a.alias, checked: chosen.has(a.alias),
                       disabled: all }),
          ` ${a.alias}`),
      ),
    );
  }

  async compose(event) {
    event.preventDefault();
    const kind = $("compose-form").querySelector("input[name=kind]:checked").value;
    const all = $("compose-all").checked;
    const to = all
      ? [...this.ctx.agents().values()].map((a) => a.alias)
      : [...$("compose-to").querySelectorAll("input:checked")].map((i) => i.value);
    const body = $("compose-body").value.trim();
    const subject = $("compose-subject").value.trim();
    if (!body) return;
    if (!to.length) {
      this.ctx.toast("Choose at least one agent, or everyone", true);
      return;
    }
    try {
      if (kind === "mail") {
        const params = all ? { to_all: true, body, subject } : { to, body, subject };
        const sent = await this.ctx.call("mail.send", params);
        this.ctx.toast(`Mail sent to ${sent.to.join(", ")}`);
        this.openThread(sent.thread_id);
      } else {
        const sent = await this.ctx.call("chat.send", { to, body });
        this.openChat(sent.session_id);
      }
      $("compose-body").value = "";
      $("compose-subject").value = "";
    } catch (error) {
      this.ctx.toast(`Not sent: ${error.message}`, true);
    }
  }
}

// One run of `run` per burst: a call for `name` while one waits joins it.
// A refusal from the hub (an error with a code) goes to `failed`.
export function coalesce(timers, name, delay, run, failed) {
  if (timers.has(name)) return;
  timers.set(
    name,
    setTimeout(async () => {
      timers.delete(name);
      try {
        await run();
      } catch (error) {
        if (error.code !== undefined) failed(error);
      }
    }, delay),
  );
}

// Dates, not only times: history spans days.
export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
