// The router: #/board, #/deal/<id>/<tab>, #/purge; the sign-in page when signed out.
// Hash routes carry ids only, never a token.

import { session, endSession, hasRole } from "./api.js";
import { signInPage, finishOidc } from "./auth.js";
import { h, mount, messages } from "./ui.js";

const pages = {
  board: () => import("./board.js").then((m) => m.boardPage()),
  deal: (id, tab) => import("./deal.js").then((m) => m.dealPage(id, tab)),
  purge: () => import("./purge.js").then((m) => m.purgePage()),
};

let stopPage = null;

function header() {
  const s = session();
  document.getElementById("nav").hidden = !s;
  document.getElementById("sign-out").hidden = !s;
  document.getElementById("nav-purge").hidden = !hasRole("operator", "admin");
  document.getElementById("who").textContent = s ? `Signed in as ${s.sub} (${s.roles.join(", ")})` : "";
  const route = location.hash.split("/")[1] || "";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${route}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (stopPage) { stopPage(); stopPage = null; }
  header();
  if (!session()) { document.title = "Sign in · Dealflow"; return signInPage(); }
  const [, name = "board", ...rest] = location.hash.split("/");
  const page = pages[name] || pages.board;
  try {
    stopPage = (await page(...rest)) || null;
  } catch (e) {
    const msg = messages();
    mount(h("h1", {}, "Something went wrong"), msg.nodes);
    msg.error(e);
  }
  document.getElementById("main").focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => {
  endSession();
  location.hash = "";
  route();
});
window.addEventListener("hashchange", route);
window.addEventListener("dealflow:signed-in", route);
window.addEventListener("dealflow:signed-out", route);

finishOidc().catch((e) => console.warn("sign-in failed:", e.message)).finally(route);
