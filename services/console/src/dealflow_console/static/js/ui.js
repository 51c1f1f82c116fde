// Small DOM helpers: every element built with h() escapes its text; nothing uses innerHTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "style") el.style.cssText = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function field(label, input) {
  return h("label", {}, label, input);
}

export function money(m) {
  if (!m) return "—";
  return `${Number(m.amount).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${m.currency}`;
}

export function when(t) {
  if (!t) return "—";
  const d = new Date(t);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export const STAGE_NAMES = {
  lead: "Lead", qualification: "Qualification", proposal: "Proposal", negotiation: "Negotiation",
  closed_won: "Won", closed_lost: "Lost",
};
export const STAGES = Object.keys(STAGE_NAMES);

export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 30);
}

/** A message area for one form or page: refusals in red (role alert), success in green. */
export function messages() {
  const bad = h("div", { class: "alert", role: "alert" });
  const good = h("div", { class: "ok", role: "status" });
  return {
    nodes: [bad, good],
    error(e) { good.textContent = ""; bad.textContent = e && e.describe ? e.describe() : String(e && e.message || e); },
    ok(text) { bad.textContent = ""; good.textContent = text; },
    /** The success text shown now, so a page drawn again after a change can keep it. */
    get said() { return good.textContent; },
    clear() { bad.textContent = ""; good.textContent = ""; },
  };
}

export function mount(...nodes) {
  return fill(document.getElementById("main"), ...nodes);
}

export function uuid() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

/** Replace an element's children; lists are flattened and empty parts left out. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}
