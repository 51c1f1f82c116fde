// The pipeline board: a column per stage with count, total and weighted total; drag a
// card to another stage (or use its "Move to" menu: the keyboard way); filters; bulk
// stage change and assignment (one call to the bulk API, which answers for each deal);
// the forecast by quarter when the reporting service is there.

import { get, post, Problem, session, config } from "./api.js";
import { h, fill, field, money, mount, messages, STAGES, STAGE_NAMES, announce, uuid } from "./ui.js";

const PAGE_LIMIT = 200;
const MAX_PAGES = 5;
let filters = { owner: "", team: "", q: "", expected_close_from: "", expected_close_to: "" };

async function loadDeals() {
  const params = new URLSearchParams({ limit: String(PAGE_LIMIT) });
  for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
  const deals = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    if (cursor) params.set("cursor", cursor);
    const r = await get("opportunity", `/opportunities?${params}`);
    deals.push(...r.items);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return { deals, complete: !cursor };
}

/** Sums per currency: without the reporting service there is no exchange rate here. */
function sums(deals) {
  const total = {}, weighted = {};
  for (const d of deals) {
    const c = d.value.currency, a = Number(d.value.amount);
    total[c] = (total[c] || 0) + a;
    weighted[c] = (weighted[c] || 0) + a * (d.probability / 100);
  }
  const show = (m) => Object.keys(m).length
    ? Object.entries(m).map(([c, a]) => money({ amount: a.toFixed(2), currency: c })).join(" + ")
    : "0";
  return { total: show(total), weighted: show(weighted) };
}

// The reporting service filters by owner, team and close dates, not by text.
const REPORTING_FILTERS = ["owner", "team", "expected_close_from", "expected_close_to"];

function reportingParams() {
  const params = new URLSearchParams();
  for (const k of REPORTING_FILTERS) if (filters[k]) params.set(k, filters[k]);
  return params;
}

/** The open stages' figures in the reporting currency, when the reporting service is
 * there and can answer for the filters set (a text filter it cannot apply). */
async function reportingPipeline() {
  const cfg = await config();
  if (!cfg.services.includes("reporting") || filters.q) return null;
  try { return await get("reporting", `/pipeline?${reportingParams()}`); } catch { return null; }
}

async function reportingForecast() {
  const cfg = await config();
  if (!cfg.services.includes("reporting")) return null;
  const params = reportingParams();
  params.set("period", "quarter");
  try { return await get("reporting", `/forecast?${params}`); } catch { return null; }
}

/** The reporting service's figures for one stage (it reports the open stages only). */
function stageFigures(pipeline, stage) {
  const col = pipeline && (pipeline.stages || []).find((c) => c.stage === stage);
  if (!col) return null;
  return { count: col.deals, total: money(col.value), weighted: money(col.weighted_value) };
}

export async function boardPage() {
  document.title = "Pipeline · Dealflow";
  const msg = messages();
  const selected = new Set();
  const boardEl = h("div", { class: "board" });
  const chartEl = h("section", { "aria-labelledby": "forecast-h" });
  const note = h("p", { class: "sums" });
  let deals = [];

  async function move(deal, stage) {
    if (stage === deal.stage) return;
    try {
      if (stage === "closed_lost") {
        const reason = window.prompt(`Why was "${deal.title}" lost?`);
        if (!reason) return;
        await post("opportunity", `/opportunities/${deal.id}/lose`, { reason });
      } else {
        await post("opportunity", `/opportunities/${deal.id}/stage`, { stage });
      }
      msg.ok(`${deal.title} moved to ${STAGE_NAMES[stage]}.`);
      announce(`${deal.title} moved to ${STAGE_NAMES[stage]}`);
      await refresh();
    } catch (e) {
      msg.error(e);
      if (!(e instanceof Problem)) throw e;
    }
  }

  function card(deal) {
    const moveSelect = h("select", { "aria-label": `Move ${deal.title} to stage` },
      h("option", { value: "" }, "Move to…"),
      (deal.allowed_moves || []).map((s) => h("option", { value: s }, STAGE_NAMES[s] || s)));
    const box = h("input", {
      type: "checkbox", "aria-label": `Select ${deal.title}`, checked: selected.has(deal.id),
      onchange: (e) => { if (e.target.checked) selected.add(deal.id); else selected.delete(deal.id); },
    });
    return h("article", {
      class: "card", draggable: "true", dataset: { id: deal.id }, "aria-label": deal.title,
      ondragstart: (e) => { e.dataTransfer.setData("text/plain", deal.id); e.dataTransfer.effectAllowed = "move"; },
    },
      h("div", { class: "row" }, box, h("a", { href: `#/deal/${deal.id}/general` }, deal.title)),
      h("div", { class: "meta" }, `${deal.customer.name} · ${money(deal.value)} · ${deal.probability}%`),
      h("div", { class: "meta" }, `owners: ${deal.owners.join(", ") || "none (team queue)"}${deal.team_id ? ` · ${deal.team_id}` : ""}`),
      deal.expected_close_date ? h("div", { class: "meta" }, `closes ${deal.expected_close_date}`) : null,
      deal.allowed_moves && deal.allowed_moves.length ? h("div", { class: "row" }, moveSelect,
        h("button", { type: "button", onclick: () => moveSelect.value && move(deal, moveSelect.value) }, "Move")) : null,
    );
  }

  function column(stage, inStage, figures) {
    const own = sums(inStage);
    const headingId = `col-${stage}`;
    const col = h("section", {
      class: "column", "aria-labelledby": headingId, dataset: { stage },
      ondragover: (e) => { e.preventDefault(); col.classList.add("drop"); },
      ondragleave: () => col.classList.remove("drop"),
      ondrop: (e) => {
        e.preventDefault(); col.classList.remove("drop");
        const deal = deals.find((d) => d.id === e.dataTransfer.getData("text/plain"));
        if (deal) move(deal, stage);
      },
    },
      h("h2", { id: headingId }, `${STAGE_NAMES[stage]} (${figures ? figures.count : inStage.length})`),
      h("dl", { class: "sums" },
        h("dt", {}, "Total"), h("dd", {}, figures ? figures.total : own.total),
        h("dt", {}, "Weighted"), h("dd", {}, figures ? figures.weighted : own.weighted)),
      inStage.map(card));
    return col;
  }

  async function refresh() {
    const [{ deals: found, complete }, pipeline, forecast] = await Promise.all([loadDeals(), reportingPipeline(), reportingForecast()]);
    fill(chartEl, ...forecastChart(forecast));
    deals = found;
    for (const id of [...selected]) if (!deals.some((d) => d.id === id)) selected.delete(id);
    fill(boardEl, ...STAGES.map((s) => column(s, deals.filter((d) => d.stage === s), stageFigures(pipeline, s))));
    note.textContent = (pipeline
      ? `Open stages' totals in ${pipeline.currency} from the reporting service (rates of ${pipeline.as_of}); won and lost summed per currency from the deals shown. `
      : "Totals summed per currency from the deals shown. ")
      + (complete ? `${deals.length} deals.` : `Showing the newest ${deals.length} deals; narrow the filters to see the rest.`);
  }

  const filterInputs = {
    owner: h("input", { name: "owner", value: filters.owner }),
    team: h("input", { name: "team", value: filters.team }),
    expected_close_from: h("input", { name: "expected_close_from", type: "date", value: filters.expected_close_from }),
    expected_close_to: h("input", { name: "expected_close_to", type: "date", value: filters.expected_close_to }),
    q: h("input", { name: "q", type: "search", value: filters.q }),
  };
  const filterForm = h("form", {
    class: "inline", role: "search", "aria-label": "Filter deals",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const [k, el] of Object.entries(filterInputs)) filters[k] = el.value.trim();
      try { await refresh(); } catch (err) { msg.error(err); }
    },
  },
    field("Owner", filterInputs.owner), field("Team", filterInputs.team),
    field("Closes from", filterInputs.expected_close_from), field("Closes until", filterInputs.expected_close_to),
    field("Text", filterInputs.q), h("button", { type: "submit" }, "Apply filters"));

  const s = session();
  const newDeal = {
    title: h("input", { name: "title", required: true }),
    customer: h("input", { name: "customer", required: true }),
    amount: h("input", { name: "amount", required: true, inputmode: "decimal", placeholder: "50000.00" }),
    currency: h("input", { name: "currency", value: "USD", size: 4, required: true }),
    close: h("input", { name: "close", type: "date" }),
    team: h("input", { name: "team", value: s.teams[0] || "" }),
  };
  // One Idempotency-Key per deal being entered: a double click, or a retry after an
  // answer that never came, opens it once. A new one once it is open or the form changes.
  let openingKey = uuid();
  const createForm = h("form", {
    class: "inline", "aria-label": "New deal",
    oninput: () => { openingKey = uuid(); },
    onsubmit: async (e) => {
      e.preventDefault();
      const name = newDeal.customer.value.trim();
      const body = {
        title: newDeal.title.value.trim(),
        customer: { kind: "organization", id: name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "customer", name },
        value: { amount: newDeal.amount.value.trim(), currency: newDeal.currency.value.trim().toUpperCase() },
      };
      if (newDeal.close.value) body.expected_close_date = newDeal.close.value;
      if (newDeal.team.value.trim()) body.team_id = newDeal.team.value.trim();
      try {
        const deal = await post("opportunity", "/opportunities", body, { "Idempotency-Key": openingKey });
        openingKey = uuid();
        msg.ok(`Deal ${deal.title} created in Lead.`);
        newDeal.title.value = ""; newDeal.amount.value = "";
        await refresh();
      } catch (err) { msg.error(err); }
    },
  },
    field("Title", newDeal.title), field("Customer", newDeal.customer), field("Value", newDeal.amount),
    field("Currency", newDeal.currency), field("Expected close", newDeal.close), field("Team", newDeal.team),
    h("button", { type: "submit", class: "primary" }, "Create deal"));

  const bulkStage = h("select", { "aria-label": "Stage for the selected deals" },
    STAGES.filter((x) => x !== "closed_lost").map((x) => h("option", { value: x }, STAGE_NAMES[x])));
  const bulkOwner = h("input", { "aria-label": "Owner to add to the selected deals", placeholder: "user id" });
  const bulkOutcome = h("ul", { class: "outcome", "aria-label": "Outcome per deal of the last bulk change" });
  /** One call to the bulk API for all the selected deals; it answers for each deal
   * (changed, unchanged, refused with its problem, not found), shown one line a deal. */
  async function bulkChange(what, path, change) {
    const chosen = deals.filter((d) => selected.has(d.id));
    if (!chosen.length) { msg.error("Select deals first."); return; }
    let answer;
    try {
      answer = await post("opportunity", `/opportunities/bulk/${path}`, { ids: chosen.map((d) => d.id), ...change });
    } catch (e) { fill(bulkOutcome); msg.error(e); return; }
    const title = (id) => chosen.find((d) => d.id === id)?.title || id;
    const words = {
      changed: () => "changed", unchanged: () => "unchanged: it already was so",
      not_found: () => "not found: gone, or no longer yours to see",
      refused: (r) => `refused: ${r.problem ? new Problem(r.problem.status, r.problem).describe() : "no reason given"}`,
    };
    fill(bulkOutcome, answer.results.map((r) => h("li", { dataset: { outcome: r.outcome } }, `${title(r.id)}: ${words[r.outcome](r)}`)));
    const summary = `${what}: ${answer.changed} changed, ${answer.unchanged} unchanged, ${answer.refused} refused, ${answer.not_found} not found.`;
    if (answer.refused || answer.not_found) msg.error(summary); else msg.ok(summary);
    announce(summary);
    await refresh();
  }
  const bulk = h("section", { class: "bulk", "aria-labelledby": "bulk-h" },
    h("h2", { id: "bulk-h" }, "Selected deals"),
    h("div", { class: "row" }, bulkStage,
      h("button", { type: "button", onclick: () => bulkChange(`Move to ${STAGE_NAMES[bulkStage.value]}`, "stage", { stage: bulkStage.value }) }, "Move selected"),
      bulkOwner,
      h("button", { type: "button", onclick: () => bulkOwner.value.trim() && bulkChange(`Assign to ${bulkOwner.value.trim()}`, "assign", { user_id: bulkOwner.value.trim() }) }, "Assign selected")),
    bulkOutcome);

  mount(
    h("h1", {}, "Pipeline"),
    msg.nodes,
    h("details", {}, h("summary", {}, "New deal"), createForm),
    filterForm,
    bulk,
    note,
    h("p", { class: "visually-hidden" }, "Drag a card to another column, or use its Move to menu."),
    boardEl,
    chartEl,
  );
  await refresh();
}

/** Forecast by quarter against actuals, from the reporting service's /forecast. */
function forecastChart(forecast) {
  const heading = h("h2", { id: "forecast-h" }, "Forecast by quarter");
  if (!forecast) {
    return [heading, h("p", {}, "No forecast: the reporting service is not part of this installation, or did not answer.")];
  }
  if (!forecast.lines.length) return [heading, h("p", {}, "Nothing to forecast yet.")];
  const num = (v) => Number(v && v.amount !== undefined ? v.amount : v || 0);
  const data = forecast.lines.map((r) => ({ label: r.period, forecast: r.weighted, actual: r.won }));
  const max = Math.max(1, ...data.flatMap((d) => [num(d.forecast), num(d.actual)]));
  const pct = (v) => `${Math.round((num(v) / max) * 100)}%`;
  return [heading,
    h("div", { class: "chart", role: "img", "aria-label": data.map((d) => `${d.label}: forecast ${num(d.forecast)}, actual ${num(d.actual)}`).join("; ") },
      data.map((d) => h("figure", {},
        h("div", { class: "pair" },
          h("div", { class: "bar", style: `height:${pct(d.forecast)}`, title: "forecast" }),
          h("div", { class: "bar actual", style: `height:${pct(d.actual)}`, title: "actual" })),
        h("figcaption", {}, d.label)))),
    h("table", {}, h("caption", {}, `Weighted forecast against won, by quarter of close, in ${forecast.currency}`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Quarter"), h("th", { scope: "col" }, "Forecast"), h("th", { scope: "col" }, "Actual"))),
      h("tbody", {}, data.map((d) => h("tr", {}, h("td", {}, d.label),
        h("td", {}, d.forecast && d.forecast.amount ? money(d.forecast) : String(num(d.forecast))),
        h("td", {}, d.actual && d.actual.amount ? money(d.actual) : String(num(d.actual))))))),
  ];
}
