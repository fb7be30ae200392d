// The console's entry: sign-in with an API token, the header (breadcrumbs, who is signed in), and the hash router
// that renders one page at a time into <main> and stops the previous page's watches.
import { api, token } from "./api.js";
import { el, fill, errorBox } from "./ui.js";
import { namespacesPage, streamsPage } from "./lists.js";
import { streamPage } from "./stream.js";
import { imagePage } from "./image.js";

const main = document.getElementById("main");
let cleanup = null;

function crumbs(parts) {
  const ol = document.getElementById("crumbs");
  fill(ol, ...parts.map(([label, href], i) => el("li", {},
    i === parts.length - 1 ? el("span", { "aria-current": "page" }, label) : el("a", { href }, label))));
}

function signInPage(message) {
  crumbs([["Sign in", "#/"]]);
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help" });
  const form = el("form", { class: "panel signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    message ? errorBox(message) : null,
    el("div", { class: "field" }, el("label", { for: "token" }, "API token"), input,
      el("small", { id: "token-help", class: "muted" },
        "The token from `tributary whoami -t`. It stays in this browser tab only.")),
    el("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(input.value.trim());
    try {
      await api.whoami();
      route();
    } catch (e) {
      token.clear();
      signInPage(e.status === 401 ? "That token is not valid." : e);
    }
  });
  fill(main, form);
  input.focus();
}

async function showWho() {
  const out = document.getElementById("whoami");
  const button = document.getElementById("signout");
  try {
    const me = await api.whoami();
    out.textContent = `Signed in as ${me.name || me.user || me.username || JSON.stringify(me)}`;
    button.hidden = false;
    return true;
  } catch (e) {
    out.textContent = "";
    button.hidden = true;
    if (e.status === 401) token.clear();
    return false;
  }
}

const routes = [
  [/^\/?$/, () => namespacesPage(main, crumbs)],
  [/^\/ns\/([^/]+)$/, (m) => streamsPage(main, crumbs, m[1])],
  [/^\/ns\/([^/]+)\/is\/([^/]+)(?:\/tag\/([^/]+))?$/, (m) => streamPage(main, crumbs, m[1], m[2], m[3])],
  [/^\/ns\/([^/]+)\/is\/([^/]+)\/image\/([^/]+)$/, (m) => imagePage(main, crumbs, m[1], m[2], m[3])],
];

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!token.get() || !(await showWho())) {
    signInPage();
    return;
  }
  const path = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const found = routes.find(([re]) => re.test(path));
  if (!found) {
    crumbs([["Not found", "#/"]]);
    fill(main, el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/" }, "Back to the namespaces")));
    return;
  }
  fill(main, el("p", { class: "muted" }, "Loading…"));
  try {
    cleanup = (await found[1](path.match(found[0]))) || null;
  } catch (e) {
    if (e.status === 401) { token.clear(); signInPage("Your session has ended; sign in again."); return; }
    fill(main, el("h1", {}, "Cannot show this page"), errorBox(e));
  }
  if (document.activeElement === document.body) main.focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => {
  token.clear();
  document.getElementById("whoami").textContent = "";
  document.getElementById("signout").hidden = true;
  location.hash = "#/";
  route();
});
window.addEventListener("hashchange", route);
route();
