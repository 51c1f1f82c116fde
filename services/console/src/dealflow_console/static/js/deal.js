// The deal record: one tab per part of an opportunity, each read from the service that
// owns it. Activity polls those services (every few seconds while the tab is open) and
// lists what changed, newest first.

import { get, post, patch, put, del, call, hasRole, Problem, config } from "./api.js";
import { h, fill, field, money, when, mount, messages, STAGE_NAMES, announce, uuid } from "./ui.js";

const POLL_MS = 3000;
let openapiPaths = null;

/** What the opportunity service offers (sharing, custom fields arrive with other work). */
async function offered() {
  if (!openapiPaths) {
    try {
      const r = await fetch("/api/opportunity/openapi.json");
      openapiPaths = Object.keys((await r.json()).paths || {});
    } catch { openapiPaths = []; }
  }
  return {
    sharing: openapiPaths.some((p) => p.includes("/shares")),
    customFields: openapiPaths.some((p) => p.includes("custom")),
  };
}

function tabsFor(has) {
  return [
    ["general", "General"], ["quotes", "Quotes"],
    has.customFields ? ["custom", "Custom fields"] : null,
    has.sharing ? ["sharing", "Sharing"] : null,
    ["tasks", "Tasks and notes"], ["history", "Sales history"], ["sequences", "Follow-up sequences"],
    ["orders", "Orders"], ["activity", "Activity"],
  ].filter(Boolean);
}

function table(caption, headers, rows) {
  return h("table", {}, h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: headers.length }, "None yet."))));
}

const actionPath = (a) => a.replace(/_/g, "-");

export async function dealPage(id, tab = "general", said = "") {
  const has = await offered();
  const tabs = tabsFor(has);
  if (!tabs.some(([t]) => t === tab)) tab = "general";
  const msg = messages();
  let deal;
  try { deal = await get("opportunity", `/opportunities/${id}`); } catch (e) {
    mount(h("h1", {}, "Deal"), msg.nodes, h("p", {}, h("a", { href: "#/board" }, "Back to the pipeline")));
    msg.error(e);
    return;
  }
  document.title = `${deal.title} · Dealflow`;
  const body = h("section", { id: "tab-panel", "aria-labelledby": `tab-${tab}` });
  mount(
    h("p", {}, h("a", { href: "#/board" }, "← Pipeline")),
    h("h1", {}, deal.title, " ", h("small", {}, `(${STAGE_NAMES[deal.stage] || deal.stage})`)),
    msg.nodes,
    h("nav", { class: "tabs", "aria-label": "Deal record" }, tabs.map(([t, label]) =>
      h("a", { id: `tab-${t}`, href: `#/deal/${id}/${t}`, "aria-current": t === tab ? "page" : null }, label))),
    body,
  );
  // A change says what it did, then draws the page again: the new page keeps that word.
  if (said) msg.ok(said);
  const reload = () => dealPage(id, tab, msg.said);
  const render = { general, quotes, custom, sharing, tasks, history, sequences, orders, activity }[tab];
  return render(deal, body, msg, reload);
}

async function general(deal, body, msg, reload) {
  const ifMatch = { "If-Match": `"${deal.version}"` };
  const prob = h("input", { type: "number", min: 0, max: 100, value: deal.probability });
  const amount = h("input", { inputmode: "decimal", value: deal.value.amount });
  const close = h("input", { type: "date", value: deal.expected_close_date || "" });
  const nextDate = h("input", { type: "date", value: deal.next_action?.date || "" });
  const nextNote = h("input", { value: deal.next_action?.note || "" });
  const stage = h("select", {}, h("option", { value: "" }, "Choose…"),
    deal.allowed_moves.map((s) => h("option", { value: s }, STAGE_NAMES[s] || s)));
  const act = (fn, done) => async (e) => {
    e.preventDefault();
    try { await fn(); msg.ok(done); await reload(); } catch (err) { msg.error(err); }
  };
  fill(body, 
    h("h2", {}, "General"),
    h("dl", { class: "facts" },
      h("dt", {}, "Stage"), h("dd", {}, STAGE_NAMES[deal.stage] || deal.stage),
      h("dt", {}, "Probability"), h("dd", {}, `${deal.probability}%`),
      h("dt", {}, "Value"), h("dd", {}, money(deal.value)),
      h("dt", {}, "Customer"), h("dd", {}, deal.customer.name),
      h("dt", {}, "Expected close"), h("dd", {}, deal.expected_close_date || "—"),
      h("dt", {}, "Next action"), h("dd", {}, deal.next_action ? `${deal.next_action.date} ${deal.next_action.note || ""}` : "—"),
      h("dt", {}, "Owners"), h("dd", {}, deal.owners.join(", ") || "none: in the team's queue"),
      h("dt", {}, "Team"), h("dd", {}, deal.team_id || "—"),
      h("dt", {}, "Order"), h("dd", {}, deal.order_id || "—"),
      deal.lost_reason ? [h("dt", {}, "Lost because"), h("dd", {}, deal.lost_reason)] : null,
    ),
    deal.allowed_moves.length ? h("form", { class: "inline", "aria-label": "Move stage",
      onsubmit: act(() => stage.value === "closed_lost"
        ? post("opportunity", `/opportunities/${deal.id}/lose`, { reason: window.prompt("Why was it lost?") || "" })
        : post("opportunity", `/opportunities/${deal.id}/stage`, { stage: stage.value }), "Stage moved.") },
      field("Move to stage", stage), h("button", { type: "submit" }, "Move")) : null,
    deal.owners.length === 0 && deal.team_id ? h("button", { type: "button",
      onclick: act(() => post("opportunity", `/opportunities/${deal.id}/claim`, undefined, ifMatch), "You own this deal now.") }, "Claim this deal") : null,
    ["closed_won", "closed_lost"].includes(deal.stage) ? null : h("form", { class: "inline", "aria-label": "Edit deal",
      onsubmit: act(() => {
        const change = { value: { amount: amount.value.trim(), currency: deal.value.currency } };
        change.expected_close_date = close.value || null;
        change.next_action = nextDate.value ? { date: nextDate.value, note: nextNote.value || null } : null;
        return patch("opportunity", `/opportunities/${deal.id}`, change, ifMatch).then(() =>
          Number(prob.value) !== deal.probability
            ? post("opportunity", `/opportunities/${deal.id}/stage`, { stage: deal.stage, probability: Number(prob.value) }).catch(() => null)
            : null);
      }, "Saved.") },
      field("Value", amount), field("Expected close", close), field("Probability %", prob),
      field("Next action date", nextDate), field("Next action", nextNote), h("button", { type: "submit" }, "Save")),
  );
}

async function quotes(deal, body, msg, reload) {
  const list = await get("quote", `/quotes?opportunity_id=${deal.id}`);
  const desc = h("input", { required: true, value: "Services" });
  const qty = h("input", { required: true, inputmode: "decimal", value: "1" });
  const price = h("input", { required: true, inputmode: "decimal", value: deal.value.amount });
  const discount = h("input", { inputmode: "decimal", value: "0" });
  const links = {};
  async function act(q, action) {
    try {
      if (action === "buy_now_link") {
        const r = await post("quote", `/quotes/${q.id}/buy-now-link`);
        links[q.id] = r.url;
        msg.ok(`Buy-now link created, valid until ${when(r.expires_at)}.`);
      } else if (action === "abandon") {
        await post("quote", `/quotes/${q.id}/abandon`, { reason: window.prompt("Why abandon this quote?") || "abandoned" });
        msg.ok("Quote abandoned.");
      } else if (action === "accept") {
        await post("quote", `/quotes/${q.id}/accept`, undefined, { "If-Match": `"${q.version}"` });
        msg.ok("Acceptance requested: the deal decides; watch it become won.");
        announce("Acceptance requested");
      } else {
        await post("quote", `/quotes/${q.id}/${actionPath(action)}`);
        msg.ok(`Quote: ${action.replace(/_/g, " ")} done.`);
      }
      await render();
    } catch (e) { msg.error(e); }
  }
  async function render() {
    const fresh = await get("quote", `/quotes?opportunity_id=${deal.id}`);
    // One Idempotency-Key per quote being entered: a double click, or a retry after an
    // answer that never came, drafts it once. A new one when the form changes.
    let draftingKey = uuid();
    fill(body, 
      h("h2", {}, "Quotes"),
      fresh.length ? null : h("p", {}, "No quotes yet."),
      fresh.map((q, i) => h("article", { class: "card", "aria-labelledby": `q-${q.id}` },
        h("h3", { id: `q-${q.id}` }, `Quote ${i + 1}: ${q.status.replace(/_/g, " ")}`),
        table(`Lines of quote ${i + 1}`, ["#", "Item", "Qty", "Unit price", "Discount %", "Total"],
          q.lines.map((l) => [l.line_no, l.description, l.quantity, money(l.unit_price), l.discount_percent, money(l.total)])),
        h("p", {}, `Total ${money(q.total)} · discount ${q.discount_percent}% · valid until ${when(q.valid_until)}`,
          q.needs_approval ? " · needs approval" : "", q.approved_by ? ` · approved by ${q.approved_by}` : "",
          q.status_reason ? ` · ${q.status_reason}` : ""),
        links[q.id] ? h("p", {}, "Buy-now link: ", h("a", { href: links[q.id], rel: "noreferrer" }, links[q.id])) : null,
        h("div", { class: "row" }, (q.allowed_actions || []).filter((a) => a !== "edit").map((a) =>
          h("button", { type: "button", onclick: () => act(q, a) }, `${a.replace(/_/g, " ")} quote ${i + 1}`.replace(/^./, (c) => c.toUpperCase()))),
          // A presented quote can be offered to the customer as a signed link.
          q.status === "presented" ? h("button", { type: "button", onclick: () => act(q, "buy_now_link") }, `Buy-now link for quote ${i + 1}`) : null),
      )),
      ["closed_won", "closed_lost"].includes(deal.stage) ? null : h("form", { class: "inline", "aria-label": "New quote",
        oninput: () => { draftingKey = uuid(); },
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await post("quote", "/quotes", { opportunity_id: deal.id, lines: [{
              description: desc.value, quantity: qty.value.trim(), discount_percent: discount.value.trim() || "0",
              unit_price: { amount: price.value.trim(), currency: deal.value.currency } }] },
              { "Idempotency-Key": draftingKey });
            msg.ok("Draft quote created.");
            await render();
          } catch (err) { msg.error(err); }
        } },
        h("h3", {}, "New quote"), field("Line description", desc), field("Quantity", qty),
        field(`Unit price (${deal.value.currency})`, price), field("Discount %", discount),
        h("button", { type: "submit", class: "primary" }, "Add quote")),
    );
  }
  void list;
  await render();
}

/** A custom field's value as text: money as "amount currency", the rest as it is. */
function fieldValue(v) {
  if (v !== null && typeof v === "object" && "amount" in v) return `${v.amount} ${v.currency}`;
  return String(v);
}

const FIELD_TYPES = ["text", "number", "money", "date", "choice"];

/** The input(s) of one custom field, of its type's kind, with a place beside it for the
 * API's refusal; `changed()` is the value to send, or undefined when it did not change
 * (only changed values are saved, so a required field a deal has lacked since before it
 * became required does not stop saving the others). An emptied field sends null. */
function customInput(def, current, currency) {
  const id = `cf-${def.key}`;
  const error = h("span", { id: `${id}-error`, class: "field-error" });
  // Marked, not enforced by the browser: whether a value may be left out is the API's word.
  const attrs = { id, "aria-required": def.required ? "true" : null, "aria-describedby": error.id };
  const label = `${def.label}${def.required ? " (required)" : ""}`;
  let inputs, read;
  if (def.type === "money") {
    const amount = h("input", { ...attrs, inputmode: "decimal", value: current?.amount ?? "" });
    const cur = h("input", { id: `${id}-currency`, "aria-describedby": error.id, size: 4, value: current?.currency ?? currency });
    inputs = [amount, cur];
    read = () => (amount.value.trim() ? { amount: amount.value.trim(), currency: cur.value.trim().toUpperCase() } : null);
  } else if (def.type === "choice") {
    // A value whose choice was since withdrawn stays shown, so saving does not drop it.
    const choices = current && !def.choices.includes(current) ? [...def.choices, current] : def.choices;
    inputs = [h("select", attrs, h("option", { value: "" }, "—"),
      choices.map((c) => h("option", { value: c, selected: c === current }, c)))];
    read = () => inputs[0].value || null;
  } else {
    const kind = { number: { type: "number", step: "any" }, date: { type: "date" } }[def.type] || {};
    inputs = [h("input", { ...attrs, ...kind, value: current ?? "" })];
    read = () => inputs[0].value.trim() || null;
  }
  const labelled = inputs.length === 2
    ? [field(`${label}: amount`, inputs[0]), field(`${def.label}: currency`, inputs[1])]
    : [field(label, inputs[0])];
  return {
    def,
    node: h("div", { class: "custom-field" }, labelled, error),
    changed() {
      const value = read();
      return JSON.stringify(value) === JSON.stringify(current ?? null) ? undefined : value;
    },
    refuse(text) {
      error.textContent = text;
      for (const i of inputs) i.setAttribute("aria-invalid", "true");
    },
    clear() {
      error.textContent = "";
      for (const i of inputs) i.removeAttribute("aria-invalid");
    },
  };
}

async function custom(deal, body, msg, reload) {
  const defs = await get("opportunity", "/custom-fields?include_retired=true");
  const values = deal.custom_fields || {};
  const active = defs.filter((d) => !d.retired);
  const open = !["closed_won", "closed_lost"].includes(deal.stage);
  const fields = active.map((d) => customInput(d, values[d.key], deal.value.currency));
  // Grouped by the tab label each definition gives, in the definitions' order.
  const groups = new Map();
  for (const f of fields) {
    if (!groups.has(f.def.tab || "")) groups.set(f.def.tab || "", []);
    groups.get(f.def.tab || "").push(f.node);
  }
  async function save(e) {
    e.preventDefault();
    for (const f of fields) f.clear();
    const changes = {};
    for (const f of fields) {
      const value = f.changed();
      if (value !== undefined) changes[f.def.key] = value;
    }
    if (!Object.keys(changes).length) { msg.ok("Nothing to save: no value was changed."); return; }
    try {
      await patch("opportunity", `/opportunities/${deal.id}`, { custom_fields: changes }, { "If-Match": `"${deal.version}"` });
      msg.ok(`Saved: ${fields.filter((f) => f.def.key in changes).map((f) => f.def.label).join(", ")}.`);
      await reload();
    } catch (err) {
      msg.error(err);
      // The API names the field at fault (custom_fields.<key>): its words go beside it.
      for (const { field: name, message } of err.body?.errors || []) {
        const key = /^custom_fields\.([a-z0-9_]+)/.exec(name || "")?.[1];
        fields.find((f) => f.def.key === key)?.refuse(message);
      }
    }
  }
  const kept = Object.entries(values).filter(([k]) => !open || !active.some((d) => d.key === k));
  const labelOf = (k) => defs.find((d) => d.key === k)?.label || k;
  fill(body, h("h2", {}, "Custom fields"),
    active.length ? null : h("p", {}, "No custom fields are defined."),
    open ? null : h("p", {}, Object.keys(values).length ? "The deal is closed: its values no longer change." : "The deal is closed and has no values."),
    open && active.length ? h("form", { class: "custom", "aria-label": "Custom fields", onsubmit: save },
      [...groups].map(([tab, nodes]) => (tab ? h("fieldset", {}, h("legend", {}, tab), nodes) : nodes)),
      h("button", { type: "submit", class: "primary" }, "Save custom fields")) : null,
    kept.length ? [open ? h("h3", {}, "Retired fields (values kept)") : null,
      h("dl", { class: "facts" }, kept.map(([k, v]) => [h("dt", {}, labelOf(k)), h("dd", {}, fieldValue(v))]))] : null,
    hasRole("admin") ? defineField(msg, reload) : null);
}

/** Admins define a field for every deal here (the API keeps its key and type for good). */
function defineField(msg, reload) {
  const key = h("input", { required: true, placeholder: "lower_case_key" });
  const label = h("input", { required: true });
  const type = h("select", {}, FIELD_TYPES.map((t) => h("option", { value: t }, t)));
  const required = h("input", { type: "checkbox" });
  const choices = h("input", { placeholder: "gold, silver" });
  const tab = h("input", {});
  return [h("h3", {}, "Define a custom field (every deal)"), h("form", { class: "inline", "aria-label": "Define a custom field", onsubmit: async (e) => {
    e.preventDefault();
    const definition = { key: key.value.trim(), label: label.value.trim(), type: type.value, required: required.checked };
    if (type.value === "choice") definition.choices = choices.value.split(",").map((c) => c.trim()).filter(Boolean);
    if (tab.value.trim()) definition.tab = tab.value.trim();
    try { await post("opportunity", "/custom-fields", definition); msg.ok(`Field ${definition.label} defined for every deal.`); await reload(); } catch (err) { msg.error(err); }
  } },
    field("Key", key), field("Label", label), field("Type", type),
    field("Required", required), field("Choices (choice fields, comma-separated)", choices), field("Tab label", tab),
    h("button", { type: "submit" }, "Define field"))];
}

async function sharing(deal, body, msg, reload) {
  const shares = await get("opportunity", `/opportunities/${deal.id}/shares`);
  const ifMatch = { "If-Match": `"${deal.version}"` };
  const kind = h("select", {}, h("option", { value: "user" }, "a user"), h("option", { value: "team" }, "a team"));
  const holder = h("input", { required: true });
  const grant = h("select", {}, h("option", { value: "read" }, "read"), h("option", { value: "edit" }, "edit"));
  const change = (fn, done) => async (e) => {
    if (e) e.preventDefault();
    try { await fn(); msg.ok(done); await reload(); } catch (err) { msg.error(err); }
  };
  fill(body, h("h2", {}, "Sharing"),
    h("p", {}, "Users and teams beside the owners and the deal's team who may read it, or work on it (edit)."),
    table("Shares", ["With", "Who", "May", ""], shares.map((x) => [x.kind, x.id, x.grant,
      h("button", { type: "button", onclick: change(() => del("opportunity", `/opportunities/${deal.id}/shares/${x.kind}/${encodeURIComponent(x.id)}`, ifMatch), `Share with ${x.id} revoked.`) },
        `Revoke ${x.kind} ${x.id}`)])),
    h("form", { class: "inline", "aria-label": "Share the deal", onsubmit: change(() =>
      post("opportunity", `/opportunities/${deal.id}/shares`, { kind: kind.value, id: holder.value.trim(), grant: grant.value }, ifMatch), "Shared.") },
      field("Share with", kind), field("User or team id", holder), field("Grant", grant), h("button", { type: "submit" }, "Share")));
}

async function tasks(deal, body, msg, reload) {
  const [taskList, notes] = await Promise.all([
    get("sequence", `/tasks?opportunity_id=${deal.id}`).catch(() => []),
    get("opportunity", `/opportunities/${deal.id}/notes`),
  ]);
  const items = Array.isArray(taskList) ? taskList : taskList.items || [];
  const noteText = h("textarea", { required: true, rows: 2 });
  const taskTitle = h("input", { required: true });
  const taskDue = h("input", { type: "date", required: true });
  fill(body, 
    h("h2", {}, "Tasks"),
    table("Tasks", ["Task", "Assignee", "Due", "State", ""], items.map((t) => [t.title, t.assignee, when(t.due_at),
      `${t.state}${t.overdue ? " (overdue)" : ""}`,
      t.allowed_actions?.includes("complete") ? h("button", { type: "button", onclick: async () => {
        try { await post("sequence", `/tasks/${t.id}/complete`); msg.ok("Task completed."); await reload(); } catch (e) { msg.error(e); }
      } }, `Complete ${t.title}`) : ""])),
    h("form", { class: "inline", "aria-label": "New task", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await post("sequence", "/tasks", { opportunity_id: deal.id, title: taskTitle.value, due_at: `${taskDue.value}T09:00:00Z` });
        msg.ok("Task added."); await reload();
      } catch (err) { msg.error(err); }
    } }, field("Task", taskTitle), field("Due", taskDue), h("button", { type: "submit" }, "Add task")),
    h("h2", {}, "Notes"),
    table("Notes", ["When", "By", "Kind", "Note"], notes.map((n) => [when(n.added_at), n.added_by, n.reason, n.text])),
    h("form", { class: "inline", "aria-label": "New note", onsubmit: async (e) => {
      e.preventDefault();
      try { await post("opportunity", `/opportunities/${deal.id}/notes`, { text: noteText.value }); msg.ok("Note added."); await reload(); } catch (err) { msg.error(err); }
    } }, field("Note", noteText), h("button", { type: "submit" }, "Add note")),
  );
}

async function history(deal, body) {
  const entries = await get("opportunity", `/opportunities/${deal.id}/history`);
  fill(body, h("h2", {}, "Sales history"),
    table("Sales history", ["When", "From", "To", "Days in previous stage", "By", "Owners then"],
      entries.map((e) => [when(e.at), e.from_stage ? STAGE_NAMES[e.from_stage] || e.from_stage : "opened",
        STAGE_NAMES[e.to_stage] || e.to_stage,
        e.days_in_previous_stage === null ? "—" : e.days_in_previous_stage.toFixed(1), e.by, e.owners.join(", ")])));
}

async function sequences(deal, body, msg, reload) {
  const [enrollments, defs] = await Promise.all([
    get("sequence", `/opportunities/${deal.id}/enrollments`),
    get("sequence", "/sequences").catch(() => []),
  ]);
  const defList = Array.isArray(defs) ? defs : defs.items || [];
  const choice = h("select", {}, defList.map((d) => h("option", { value: d.id }, d.name)));
  fill(body, h("h2", {}, "Follow-up sequences"),
    table("Enrollments", ["Sequence", "State", "Next step due", "Enrolled", ""], enrollments.map((e) => [e.sequence_name, e.state,
      when(e.next_due_at), `${when(e.enrolled_at)} by ${e.enrolled_by}`,
      h("span", {}, e.allowed_actions.map((a) => h("button", { type: "button", onclick: async () => {
        try { await post("sequence", `/enrollments/${e.id}/${a}`); msg.ok(`Enrollment: ${a} done.`); await reload(); } catch (err) { msg.error(err); }
      } }, `${a} ${e.sequence_name}`)))])),
    defList.length ? h("form", { class: "inline", "aria-label": "Enroll in a sequence", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await post("sequence", `/opportunities/${deal.id}/enrollments`, { sequence_id: choice.value }); msg.ok("Enrolled."); await reload(); } catch (err) { msg.error(err); }
    } }, field("Sequence", choice), h("button", { type: "submit" }, "Enroll")) : h("p", {}, "No sequences are defined."));
}

async function orders(deal, body, msg, reload) {
  const list = await get("order", `/opportunities/${deal.id}/orders`);
  const parts = [h("h2", {}, "Orders")];
  if (!list.length) parts.push(h("p", {}, deal.stage === "closed_won" ? "The order is on its way (refresh in a moment)." : "No order: the deal is not won through a quote yet."));
  for (const o of list) {
    const ledger = await get("order", `/orders/${o.id}/ledger`);
    const amount = h("input", { required: true, inputmode: "decimal", value: o.balance.amount });
    const method = h("select", {}, ["bank_transfer", "card", "direct_debit", "check", "cash", "other"].map((m) => h("option", { value: m }, m.replace(/_/g, " "))));
    const refundAmount = h("input", { required: true, inputmode: "decimal" });
    const refundReason = h("input", { required: true });
    const pdfLink = h("span");
    // One Idempotency-Key per payment or refund being entered (a fresh one per submit
    // would let a double click record twice); the tab is drawn again after each.
    const keys = { payment: uuid(), refund: uuid() };
    const money_ = (a) => ({ amount: a.trim(), currency: o.total.currency });
    const submit = (fn, done) => async (e) => {
      e.preventDefault();
      try { await fn(); msg.ok(done); await reload(); } catch (err) { msg.error(err); }
    };
    if (o.invoice_id) {
      pdfLink.append(h("button", { type: "button", onclick: async () => {
        try {
          const r = await call("order", `/invoices/${o.invoice_id}`, { headers: { Accept: "application/pdf" }, raw: true });
          const url = URL.createObjectURL(await r.blob());
          fill(pdfLink, h("a", { href: url, download: `invoice-${o.invoice_id}.pdf` }, "Download the invoice PDF"));
        } catch (e) { msg.error(e); }
      } }, "Get the invoice PDF"));
    }
    parts.push(h("article", { class: "card", "aria-label": `Order ${o.id}` },
      h("h3", {}, `Order: ${o.status.replace(/_/g, " ")}`),
      h("dl", { class: "facts" },
        h("dt", {}, "Total"), h("dd", {}, money(o.total)), h("dt", {}, "Amount due"), h("dd", {}, money(o.amount_due)),
        h("dt", {}, "Paid"), h("dd", { "data-testid": "paid" }, money(o.paid)), h("dt", {}, "Balance"), h("dd", {}, money(o.balance))),
      table("Order lines", ["#", "Item", "Qty", "Total"], o.lines.map((l) => [l.line_no, l.description, l.quantity, money(l.total)])),
      h("h4", {}, "Payments and refunds"),
      table("Ledger", ["When", "Kind", "Amount", "Method / reason", "By", "Balance after"], ledger.entries.map((e) =>
        [when(e.occurred_at), e.kind, money(e.amount), e.method || e.reason || "", e.recorded_by, money(e.balance)])),
      h("form", { class: "inline", "aria-label": "Record a payment", oninput: () => { keys.payment = uuid(); }, onsubmit: submit(() =>
        post("order", `/orders/${o.id}/payments`, { amount: money_(amount.value), method: method.value }, { "Idempotency-Key": keys.payment }), "Payment recorded.") },
        field(`Payment (${o.total.currency})`, amount), field("Method", method), h("button", { type: "submit", class: "primary" }, "Record payment")),
      h("form", { class: "inline", "aria-label": "Give a refund", oninput: () => { keys.refund = uuid(); }, onsubmit: submit(() =>
        post("order", `/orders/${o.id}/refunds`, { amount: money_(refundAmount.value), reason: refundReason.value }, { "Idempotency-Key": keys.refund }), "Refund recorded.") },
        field(`Refund (${o.total.currency})`, refundAmount), field("Reason", refundReason), h("button", { type: "submit" }, "Refund")),
      h("h4", {}, "Invoice"),
      o.invoice_id ? pdfLink : h("form", { class: "inline", "aria-label": "Issue the invoice", onsubmit: submit(() =>
        post("order", `/orders/${o.id}/invoices`, {}), "Invoice issued.") }, h("button", { type: "submit" }, "Issue invoice")),
    ));
  }
  fill(body, ...parts);
}

/** Everything that happened to the deal, from each owning service, newest first. */
async function activity(deal, body) {
  const list = h("ol", { "aria-live": "polite", "aria-relevant": "additions" });
  const seen = new Set();
  const status = h("p", { class: "sums" });
  fill(body, h("h2", {}, "Activity"),
    h("p", {}, `Updated every ${POLL_MS / 1000} seconds while this tab is open.`), status, list);
  async function poll() {
    const events = [];
    const safe = (p) => p.catch(() => null);
    const [hist, notes, qs, os, tasks] = await Promise.all([
      safe(get("opportunity", `/opportunities/${deal.id}/history`)),
      safe(get("opportunity", `/opportunities/${deal.id}/notes`)),
      safe(get("quote", `/quotes?opportunity_id=${deal.id}`)),
      safe(get("order", `/opportunities/${deal.id}/orders`)),
      safe(get("sequence", `/tasks?opportunity_id=${deal.id}`)),
    ]);
    for (const e of hist || []) events.push([e.at, `Stage ${e.from_stage ? `${e.from_stage} → ` : ""}${e.to_stage} by ${e.by}`]);
    for (const n of notes || []) events.push([n.added_at, `Note (${n.reason}) by ${n.added_by}: ${n.text}`]);
    for (const q of qs || []) {
      events.push([q.created_at, `Quote created by ${q.created_by}: ${money(q.total)}`]);
      if (q.updated_at !== q.created_at) events.push([q.updated_at, `Quote is ${q.status.replace(/_/g, " ")}`]);
    }
    for (const o of os || []) {
      events.push([o.created_at, `Order created: ${money(o.total)}`]);
      const ledger = await safe(get("order", `/orders/${o.id}/ledger`));
      for (const e of ledger?.entries || []) {
        events.push([e.recorded_at, `${e.kind === "payment" ? "Payment" : "Refund"} of ${money(e.amount)} recorded by ${e.recorded_by}: the order is ${e.status.replace(/_/g, " ")}`]);
      }
      if (o.cancelled_at) events.push([o.cancelled_at, `Order cancelled by ${o.cancelled_by}: ${o.cancel_reason || ""}`]);
    }
    for (const t of (Array.isArray(tasks) ? tasks : tasks?.items || [])) events.push([t.created_at, `Task "${t.title}" for ${t.assignee} (${t.state})`]);
    events.sort((a, b) => String(b[0]).localeCompare(String(a[0])));
    const fresh = events.filter(([at, text]) => !seen.has(at + text));
    for (const [at, text] of fresh.reverse()) {
      seen.add(at + text);
      list.prepend(h("li", {}, h("time", { datetime: at }, when(at)), " ", text));
    }
    status.textContent = `Last checked ${new Date().toISOString().slice(11, 19)} UTC.`;
  }
  await poll();
  const timer = setInterval(() => poll().catch(() => null), POLL_MS);
  return () => clearInterval(timer);
}
