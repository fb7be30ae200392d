// The list pages: the namespaces the user may see, and one namespace's image streams (paged and searched on the
// server, kept live through the watch API).
import { api, watch, streamRow, IS, TABLE } from "./api.js";
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

function imageSize(isimage) {
  const img = isimage.image || {};
  const layers = (img.dockerImageLayers || []).reduce((n, l) => n + (l.size || 0), 0);
  return (img.dockerImageMetadata && img.dockerImageMetadata.Size) || layers;
}

/** The size of the image the stream's newest tag points at (two small reads, after the row is shown). */
async function newestSize(ns, r) {
  if (!r.newestTag) return "–";
  const p = await api.streamPage(ns, r.name, { tag: r.newestTag, limit: 1 });
  const e = p.stream.status.tags && p.stream.status.tags[0] && p.stream.status.tags[0].items[0];
  return e ? size(imageSize(await api.isimage(ns, r.name, e.image))) : "–";
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

  const row = (r) => {
    const sizeCell = el("td", { class: "num hide-narrow" }, "…");
    const tr = el("tr", { "data-stream": r.name },
      el("th", { scope: "row" }, el("a", { href: `#/ns/${ns}/is/${r.name}` }, r.name)),
      el("td", { class: "num" }, String(r.count)),
      el("td", {}, r.updatedAt ? [when(r.updatedAt), " ", el("span", { class: "muted" }, `(${r.newestTag})`)] : "never"),
      sizeCell);
    newestSize(ns, r).then((t) => { sizeCell.textContent = t; }, () => { sizeCell.textContent = "–"; });
    return tr;
  };
  const put = (r) => {
    const tr = row(r);
    const old = rows.get(r.name);
    if (old) old.replaceWith(tr); else tbody.append(tr);
    rows.set(r.name, tr);
  };

  let revision = null;
  async function load(reset) {
    if (reset) { fill(tbody); rows.clear(); next = null; shown = 0; }
    const page = await api.streams(ns, { limit: 50, cont: reset ? undefined : next, search: query });
    page.rows.forEach(put);
    shown += page.rows.length;
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
        el("th", { scope: "col" }, "Last update"), el("th", { scope: "col", class: "num hide-narrow" }, "Size (newest tag)"))),
      tbody),
    count, more);
  if (rows.size === 0) count.textContent = query ? "No stream matches." : "No image streams yet.";

  return watch(`${IS}/namespaces/${ns}/imagestreams`, revision, (ev) => {
    if (ev.type === "RESYNC") { load(true); return; }
    const t = ev.object && ev.object.rows && ev.object.rows[0];
    if (!t) return;
    const s = streamRow(t);
    const name = s.name;
    if (ev.type === "DELETED") {
      const tr = rows.get(name);
      if (tr) { tr.remove(); rows.delete(name); }
    } else if (rows.has(name) || (!query || name.includes(query))) {
      put(s);
      announce(`Stream ${name} changed`);
    }
  }, async () => (await api.streams(ns, { limit: 1 })).revision, TABLE);
}
