// Small DOM helpers shared by the pages: element building (text is always set as text, never parsed as HTML),
// sizes and times, the confirmation dialog, copy buttons, error boxes and the live region.

/** el("a", {href: "#/"}, "text", child…): attributes starting with "on" are listeners. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v; // through the CSSOM: the CSP allows no inline style attribute
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...nodes(children));
  return node;
}

/** Children as nodes: nested arrays flattened, null/undefined/false left out, anything else as text. */
function nodes(children) {
  return children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replaces the children of `node` (the same child rules as el). */
export function fill(node, ...children) {
  node.replaceChildren(...nodes(children));
  return node;
}

export function size(bytes) {
  if (bytes === undefined || bytes === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(bytes);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return "just now";
  const [n, u] = s < 3600 ? [s / 60, "minute"] : s < 86400 ? [s / 3600, "hour"] : [s / 86400, "day"];
  const k = Math.floor(n);
  return `${k} ${u}${k === 1 ? "" : "s"} ago`;
}

/** A <time> showing "3 minutes ago" with the exact time as its title. */
export function when(iso) {
  return el("time", { datetime: iso, title: iso ? new Date(iso).toISOString() : "" }, ago(iso));
}

export const short = (digest) => (digest || "").replace(/^sha256:/, "").slice(0, 12);

export function errorBox(e) {
  return el("div", { class: "error", role: "alert" }, e && e.message ? e.message : String(e));
}

export function announce(text) {
  const live = document.getElementById("live");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 30);
}

/** Asks for confirmation in the page's dialog; resolves to true when confirmed. */
export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

/** A button copying `text` to the clipboard (falls back to selecting a hidden field). */
export function copyButton(text, label) {
  const b = el("button", { type: "button", "aria-label": `Copy ${label}` }, "Copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const t = el("textarea", { "aria-hidden": "true" }, text);
      document.body.append(t);
      t.select();
      document.execCommand("copy");
      t.remove();
    }
    b.textContent = "Copied";
    announce(`Copied ${label}`);
    setTimeout(() => { b.textContent = "Copy"; }, 1500);
  });
  return b;
}

/**
 * An action form inside a <details>: fields, a submit button; on submit asks for confirmation, runs `act`, shows
 * the API's error in the form when refused, or `done` when it worked.
 */
export function actionForm({ title, fields, submit, confirmText, act, done, danger }) {
  const status = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "action-form" }, fields, el("div", { class: "row" },
    el("button", { type: "submit", class: danger ? "danger" : "primary" }, submit)), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const data = Object.fromEntries(new FormData(form).entries());
    if (!(await confirmAction(title, confirmText(data), submit))) return;
    try {
      await act(data);
      status.replaceChildren(el("div", { class: "notice", role: "status" }, done(data)));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  });
  return el("details", { class: "action" }, el("summary", {}, title), form);
}

export function field(label, name, attrs = {}) {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  return el("div", { class: "field" }, el("label", { for: id }, label), el("input", { id, name, ...attrs }));
}
