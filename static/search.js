// Find anything: search.query over mail, chat, escalations and issues with
// filters, paging through all history by the hub's keyset cursor.

import { when } from "./messages.js";

const $ = (id) => document.getElementById(id);
const PAGE = 250;

export class SearchPanel {
  constructor(ctx, openHit) {
    this.ctx = ctx; // { call, h, agents() }
    this.openHit = openHit;
    this.pages = []; // the `after` cursor of each page shown so far
    this.params = null;
    this.current = 0;
    // Assigned, not added: each sign-in in the tab makes a new panel.
    $("search-form").onsubmit = (e) => {
      e.preventDefault();
      this.start();
    };
    $("search-filters").onchange = () => this.params && this.start();
    $("search-next").onclick = () => this.page(this.current + 1);
    $("search-prev").onclick = () => this.page(this.current - 1);
    $("search-close").onclick = () => ($("search-panel").hidden = true);
  }

  fillAgents() {
    const { h } = this.ctx;
    const select = $("search-agent");
    const current = select.value;
    select.replaceChildren(
      h("option", { value: "" }, "Anyone"),
      ...[...this.ctx.agents().values()]
        .sort((a, b) => a.alias.localeCompare(b.alias))
        .map((a) => h("option", { value: a.alias }, a.alias)),
    );
    select.value = [...select.options].some((o) => o.value === current) ? current : "";
  }

  start() {
    const text = $("search-text").value.trim();
    if (!text) return;
    const params = { text, limit: PAGE };
    const type = $("search-type").value;
    if (type) params.types = [type];
    const agent = $("search-agent").value;
    if (agent) params.agent = agent;
    const since = $("search-since").value;
    const until = $("search-until").value;
    if (since) params.since = new Date(`${since}T00:00:00`).toISOString();
    if (until) params.until = new Date(`${until}T23:59:59.999`).toISOString();
    this.params = params;
    this.pages = [null];
    $("search-panel").hidden = false;
    this.fillAgents();
    this.page(0);
  }

  async page(index) {
    if (index < 0 || !this.params) return;
    const after = this.pages[index];
    if (after === undefined) return;
    $("search-status").textContent = "searching…";
    let result;
    try {
      result = await this.ctx.call("search.query", { ...this.params, ...(after ? { after } : {}) });
    } catch (error) {
      $("search-status").textContent = error.message;
      return;
    }
    this.current = index;
    this.pages = this.pages.slice(0, index + 1);
    if (result.next) this.pages.push(result.next);
    this.render(result, index);
  }

  render(result, index) {
    const { h } = this.ctx;
    const first = index * PAGE + 1;
    const last = index * PAGE + result.count;
    $("search-status").textContent = result.count
      ? `Results ${first}–${last}${result.next ? "" : " (the last page)"}`
      : index
        ? "No more results."
        : "Nothing found.";
    $("search-status").dataset.page = String(index + 1);
    $("search-prev").disabled = index === 0;
    $("search-next").disabled = !result.next;
    $("search-results").replaceChildren(
      ...result.hits.map((hit) =>
        h(
          "li",
          { class: `row hit ${hit.type}`, dataset: { type: hit.type, id: hit.id } },
          h("span", { class: `tag kind-${hit.type}` }, hit.type),
          h(
            "button",
            { type: "button", class: "link grow", onclick: () => this.openHit(hit) },
            h("span", { class: "who" }, hit.alias || ""),
            hit.title ? h("strong", {}, ` ${hit.title}`) : null,
            h("span", { class: "snippet muted" }, ` ${hit.snippet.split("\n")[0]}`),
          ),
          h("time", { class: "muted small", datetime: hit.at }, when(hit.at)),
        ),
      ),
    );
  }
}
