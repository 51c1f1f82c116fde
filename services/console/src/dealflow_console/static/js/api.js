// Calls to the services through the console's own origin (/api/<service>/...), with the
// signed-in user's token. The token lives in this tab's sessionStorage only: never in a
// URL, a cookie or a log line.

const KEY = "dealflow.session";

export function session() {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  const s = JSON.parse(raw);
  if (s.exp && s.exp * 1000 < Date.now()) { sessionStorage.removeItem(KEY); return null; }
  return s;
}

export function startSession(token) {
  const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  const s = { token, sub: claims.sub, roles: claims.roles || [], teams: claims.teams || [], exp: claims.exp };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function endSession() { sessionStorage.removeItem(KEY); }

/** A refusal or failure of a service, as the service words it (RFC 9457). */
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
  describe() {
    const b = this.body;
    let text = `${b.title || "Error"}: ${b.detail || ""}`.trim();
    if (Array.isArray(b.errors) && b.errors.length && !b.detail) {
      text += " " + b.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    }
    if (Array.isArray(b.allowed)) {
      text += ` Allowed moves: ${b.allowed.length ? b.allowed.join(", ") : "none"}.`;
    }
    return text;
  }
}

export async function call(service, path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const s = session();
  const h = { Accept: "application/json", ...headers };
  if (s) h.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const response = await fetch(`/api/${service}${path}`, {
    method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
  });
  if (response.status === 401) {
    endSession();
    window.dispatchEvent(new Event("dealflow:signed-out"));
  }
  if (!response.ok) {
    let problem = { title: response.statusText, detail: `HTTP ${response.status}` };
    try { problem = await response.json(); } catch { /* not a problem document */ }
    throw new Problem(response.status, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (service, path) => call(service, path);
export const post = (service, path, body, headers) => call(service, path, { method: "POST", body, headers });
export const put = (service, path, body, headers) => call(service, path, { method: "PUT", body, headers });
export const patch = (service, path, body, headers) => call(service, path, { method: "PATCH", body, headers });
export const del = (service, path, headers) => call(service, path, { method: "DELETE", headers });

export function hasRole(...roles) {
  const s = session();
  return !!s && s.roles.some((r) => roles.includes(r));
}

let consoleConfig = null;
export async function config() {
  if (!consoleConfig) {
    const r = await fetch("/auth/config", { cache: "no-store" });
    consoleConfig = await r.json();
  }
  return consoleConfig;
}
