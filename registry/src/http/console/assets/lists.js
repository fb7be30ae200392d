// The list pages: the namespaces the user may see, and one namespace's image streams (paged and searched on the
// server, kept live through the watch API).
import { api, watch, IS } from "./api.js";
import { el, fill, when, size, announce } from "./ui.js";

export async function namespacesPage(main, crumbs) {
  crumbs([["Namespaces", "#/"]]);
  const list = await api.namespaces();
  const items = (list.items || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  fill(main, 
    el("h1", {}, "Namespaces"),
    items.length === 0
      ? el("p", { class: "muted" }, "You cannot see any namespace. Ask an administrator for a role in one.")
      : el("table", {}, el("caption", { class: "live" }, "Namespaces you can see"),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "Created"))),
        el("tbody", {}, items.map((ns) => el("tr", {},
          el("td", {}, el("a", { href: `#/ns/${ns.name}` }, ns.name)), el("td", {}, when(ns.created)))))));
}

/** The newest event over the stream's tags: [tag, event]. */
export function latest(stream) {
  let best = null;
  for (const t of (stream.status && stream.status.tags) || []) {
    const e = t.items && t.items[0];
    if (e && (!best || e.created > best[1].created)) best = [t.tag, e];
  }
  return best;
}

function imageSize(isimage) {
  const img = isimage.image || {};
  const layers = (img.dockerImageLayers || []).reduce((n, l) => n + (l.size || 0), 0);
  return (img.dockerImageMetadata && img.dockerImageMetadata.Size) || layers;
}

export async function streamsPage(main, crumbs, ns) {
  crumbs([["Namespaces", "#/"], [ns, `#/ns/${ns}`]]);
  const tbody = el("tbody", {});
  const more = el("button", { type: "button", hidden: true }, "Show more");
  const count = el("p", { class: "muted", "aria-live": "polite" });
  const search = el("input", { id: "stream-search", type: "search", placeholder: "Name contains…", autocomplete: "off" });
  const rows = new Map();
  let next = null;
  let query = "";
  let shown = 0;

  const row = (s) => {
    const name = s.metadata.name;
    const top = latest(s);
    const sizeCell = el("td", { class: "num hide-narrow" }, "…");
    const tr = el("tr", { "data-stream": name },
      el("th", { scope: "row" }, el("a", { href: `#/ns/${ns}/is/${name}` }, name)),
      el("td", { class: "num" }, String(((s.status && s.status.tags) || []).length)),
      el("td", {}, top ? [when(top[1].created), " ", el("span", { class: "muted" }, `(${top[0]})`)] : "never"),
      sizeCell,
      el("td", { class: "hide-narrow" }, s.spec && s.spec.lookupPolicy && s.spec.lookupPolicy.local ? "on" : "off"));
    if (top && top[1].image) {
      api.isimage(ns, name, top[1].image).then((i) => { sizeCell.textContent = size(imageSize(i)); },
        () => { sizeCell.textContent = "–"; });
    } else {
      sizeCell.textContent = "–";
    }
    return tr;
  };
  const put = (s) => {
    const tr = row(s);
    const old = rows.get(s.metadata.name);
    if (old) old.replaceWith(tr); else tbody.append(tr);
    rows.set(s.metadata.name, tr);
  };

  let revision = null;
  async function load(reset) {
    if (reset) { fill(tbody); rows.clear(); next = null; shown = 0; }
    const page = await api.streams(ns, { limit: 50, cont: reset ? undefined : next, search: query });
    page.items.forEach(put);
    shown += page.items.length;
    next = page.next;
    revision = revision || page.revision;
    more.hidden = !next;
    count.textContent = `${shown} shown${next ? `, ${page.remaining} more` : ""}${query ? ` matching “${query}”` : ""}`;
  }
  more.addEventListener("click", () => load(false));
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { query = search.value.trim(); load(true); }, 250);
  });

  await load(true);
  fill(main, 
    el("h1", {}, `Image streams in ${ns}`),
    el("div", { class: "field" }, el("label", { for: "stream-search" }, "Search streams"), search),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Stream"), el("th", { scope: "col", class: "num" }, "Tags"),
        el("th", { scope: "col" }, "Last update"), el("th", { scope: "col", class: "num hide-narrow" }, "Size (latest)"),
        el("th", { scope: "col", class: "hide-narrow" }, "Lookup"))),
      tbody),
    count, more);
  if (rows.size === 0) count.textContent = query ? "No stream matches." : "No image streams yet.";

  return watch(`${IS}/namespaces/${ns}/imagestreams`, revision, (ev) => {
    if (ev.type === "RESYNC") { load(true); return; }
    const s = ev.object;
    if (!s || !s.metadata) return;
    const name = s.metadata.name;
    if (ev.type === "DELETED") {
      const tr = rows.get(name);
      if (tr) { tr.remove(); rows.delete(name); }
    } else if (rows.has(name) || (!query || name.includes(query))) {
      put(s);
      announce(`Stream ${name} changed`);
    }
  }, async () => (await api.streams(ns, { limit: 1 })).revision);
}
