// Sign-in. Development: pick a made-up user and the console mints a short-lived token.
// Identity provider: OpenID Connect authorization code with PKCE, done here in the browser
// (a public client: no secret anywhere). The code verifier waits in sessionStorage for
// the redirect back; the code is taken out of the address bar at once.

import { config, startSession } from "./api.js";
import { h, mount, messages } from "./ui.js";

const PKCE = "dealflow.pkce";

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function discovery(issuer) {
  const r = await fetch(`${issuer}/.well-known/openid-configuration`, { credentials: "omit" });
  if (!r.ok) throw new Error(`the identity provider's discovery document answered ${r.status}`);
  return r.json();
}

async function startOidc(oidc) {
  const meta = await discovery(oidc.issuer);
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PKCE, JSON.stringify({ verifier, state }));
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code", client_id: oidc.client_id, redirect_uri: `${location.origin}/`,
    scope: oidc.scope, state, code_challenge: challenge, code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/** Back from the identity provider with ?code=…&state=…: trade the code for a token. */
export async function finishOidc() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return false;
  // The code must not stay in the address bar (history, screenshots, referrers).
  history.replaceState(null, "", `${location.pathname}#/board`);
  const pending = JSON.parse(sessionStorage.getItem(PKCE) || "null");
  sessionStorage.removeItem(PKCE);
  if (params.has("error")) throw new Error(`sign-in refused: ${params.get("error")}`);
  if (!pending || pending.state !== params.get("state")) throw new Error("sign-in answer does not match the request; try again");
  const { oidc } = await config();
  const meta = await discovery(oidc.issuer);
  const r = await fetch(meta.token_endpoint, {
    method: "POST", credentials: "omit",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: `${location.origin}/`,
      client_id: oidc.client_id, code_verifier: pending.verifier,
    }),
  });
  if (!r.ok) throw new Error(`the identity provider refused the code (${r.status})`);
  const tokens = await r.json();
  startSession(tokens.access_token);
  return true;
}

export async function signInPage() {
  const cfg = await config();
  const msg = messages();
  const parts = [h("h1", {}, "Sign in to Dealflow"), ...msg.nodes];
  if (cfg.oidc) {
    parts.push(h("button", {
      type: "button", class: "primary",
      onclick: () => startOidc(cfg.oidc).catch((e) => msg.error(e)),
    }, "Sign in with your company account"));
  }
  if (cfg.dev_sign_in) {
    parts.push(
      h("h2", { id: "dev-users" }, "Development users"),
      h("p", {}, "Development run only: the console mints a short-lived token for the user you pick."),
      h("ul", { class: "users", "aria-labelledby": "dev-users" }, cfg.dev_users.map((u) =>
        h("li", {}, h("button", {
          type: "button",
          onclick: async () => {
            try {
              const r = await fetch("/auth/dev-token", {
                method: "POST", headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ user: u.sub }),
              });
              if (!r.ok) throw new Error(`sign-in refused (${r.status})`);
              startSession((await r.json()).access_token);
              const target = u.roles.includes("operator") && !u.roles.includes("rep") ? "#/purge" : "#/board";
              if (location.hash === target) window.dispatchEvent(new Event("dealflow:signed-in"));
              else location.hash = target;
            } catch (e) { msg.error(e); }
          },
        }, h("strong", {}, `Sign in as ${u.name}`), h("br"),
          h("span", {}, `roles: ${u.roles.join(", ")}; teams: ${u.teams.join(", ") || "none"}`))))),
    );
  }
  if (!cfg.oidc && !cfg.dev_sign_in) parts.push(h("p", {}, "No sign-in is configured."));
  mount(parts);
}
