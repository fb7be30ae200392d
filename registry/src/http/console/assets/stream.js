// The stream page: the stream's spec and status, its tags (paged and searched on the server), one tag's spec,
// import conditions and history as a timeline (newest first), pull commands, and the actions (tag, roll back,
// delete a tag, import, image lookup). Tag changes arrive through the watch API and redraw what they touch.
import { api, watch, IS } from "./api.js";
import { el, fill, when, short, errorBox, announce, confirmAction, copyButton, actionForm, field } from "./ui.js";

const TAG_PAGE = 100;

export function pullCommands(repo, tag, digest) {
  const lines = [];
  if (tag) {
    lines.push([`docker pull ${repo}:${tag}`, "docker pull by tag"], [`podman pull ${repo}:${tag}`, "podman pull by tag"],
      [`skopeo inspect docker://${repo}:${tag}`, "skopeo inspect by tag"]);
  }
  if (digest) {
    lines.push([`docker pull ${repo}@${digest}`, "docker pull by digest"],
      [`podman pull ${repo}@${digest}`, "podman pull by digest"],
      [`skopeo copy docker://${repo}@${digest} oci:image`, "skopeo copy by digest"]);
  }
  return el("div", { class: "pull" }, lines.map(([cmd, label]) => [el("code", {}, cmd), copyButton(cmd, label)]));
}

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function specOf(t) {
  if (!t) return el("p", { class: "muted" }, "No spec tag: this tag was pushed, not declared.");
  const from = t.from ? `${t.from.kind} ${t.from.namespace ? `${t.from.namespace}/` : ""}${t.from.name}` : "";
  const alias = t.from && t.from.kind === "ImageStreamTag" ? "yes (tracks the source tag)" : "no";
  const ip = t.importPolicy || {};
  return kv([["From", from], ["Alias", alias], ["Reference only", t.reference ? "yes" : "no"],
    ["Reference policy", (t.referencePolicy && t.referencePolicy.type) || "Source"],
    ["Import policy", `scheduled: ${!!ip.scheduled}, insecure: ${!!ip.insecure}${ip.importMode ? `, mode: ${ip.importMode}` : ""}`],
    ["Generation", t.generation], ["Annotations", t.annotations ? JSON.stringify(t.annotations) : ""]]);
}

export async function streamPage(main, crumbs, ns, name, selected) {
  crumbs([["Namespaces", "#/"], [ns, `#/ns/${ns}`], [name, `#/ns/${ns}/is/${name}`]]);
  const tagList = el("ul", { class: "taglist", "aria-label": "Tags" });
  const tagCount = el("p", { class: "muted", "aria-live": "polite" });
  const more = el("button", { type: "button", hidden: true }, "Show more tags");
  const search = el("input", { id: "tag-search", type: "search", placeholder: "Tag contains…", autocomplete: "off" });
  const detail = el("section", { "aria-labelledby": "tag-title" });
  const head = el("div", {});
  let query = "";
  let next = null;
  let shownTags = 0;

  const first = await api.streamPage(ns, name, { limit: TAG_PAGE });
  const revision = first.revision;
  let stream = first.stream;
  const repo = stream.status.publicDockerImageRepository || stream.status.dockerImageRepository;

  function drawHead() {
    const lookup = !!(stream.spec.lookupPolicy && stream.spec.lookupPolicy.local);
    const toggle = el("button", { type: "button", "aria-pressed": String(lookup) }, lookup ? "Turn image lookup off" : "Turn image lookup on");
    const status = el("div", { "aria-live": "polite" });
    toggle.addEventListener("click", async () => {
      if (!(await confirmAction("Image lookup", `Turn local image lookup ${lookup ? "off" : "on"} for ${ns}/${name}?`))) return;
      try {
        stream = await api.setLookup(ns, name, !lookup);
        drawHead();
        announce(`Image lookup ${lookup ? "off" : "on"}`);
      } catch (e) {
        fill(status, errorBox(e));
      }
    });
    fill(head, 
      el("h1", {}, `${ns}/${name}`),
      el("div", { class: "panel" }, kv([["Repository", el("code", {}, repo)],
        ["Image lookup", lookup ? "local (resources in the namespace may use the tags by name)" : "off"],
        ["Generation", stream.metadata.generation], ["Created", when(stream.metadata.creationTimestamp)],
        ["Spec repository", stream.spec.dockerImageRepository]]),
      el("div", { class: "row" }, toggle), status),
      actionForm({
        title: "Import an image", submit: "Import",
        fields: [field("From (registry/repository:tag)", "from", { required: true, placeholder: "quay.io/org/app:1.0" }),
          field("Into tag", "tag", { required: true, placeholder: "latest", pattern: "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" })],
        confirmText: (d) => `Import ${d.from} into ${name}:${d.tag}?`,
        act: async (d) => {
          const r = await api.importImage(ns, name, d.tag, d.from);
          const img = r.status && r.status.images && r.status.images[0];
          if (img && img.status && img.status.status === "Failure") throw new Error(img.status.message || "import failed");
        },
        done: (d) => `Imported ${d.from} into ${name}:${d.tag}.`,
      }));
  }

  function tagItem(t) {
    const e = t.items && t.items[0];
    const a = el("a", { href: `#/ns/${ns}/is/${name}/tag/${t.tag}`, "aria-current": t.tag === selected ? "true" : "false" },
      el("span", { class: "mono" }, t.tag), el("span", { class: "muted" }, e ? short(e.image) : "no image"));
    return el("li", { "data-tag": t.tag }, a);
  }

  function tagsOf(s) {
    // Spec tags without a history yet are listed too.
    const byName = new Map((s.status.tags || []).map((t) => [t.tag, t]));
    for (const t of s.spec.tags || []) if (!byName.has(t.name)) byName.set(t.name, { tag: t.name, items: [] });
    return [...byName.values()].sort((a, b) => (a.tag < b.tag ? -1 : 1));
  }

  async function loadTags(reset) {
    const page = reset && !query ? first : await api.streamPage(ns, name, { limit: TAG_PAGE, cont: reset ? undefined : next, search: query });
    if (reset) { fill(tagList); shownTags = 0; }
    const tags = tagsOf(page.stream);
    tagList.append(...tags.map(tagItem));
    shownTags += tags.length;
    next = page.next;
    more.hidden = !next;
    tagCount.textContent = `${page.total} tag${page.total === 1 ? "" : "s"}${query ? ` matching “${query}”` : ""}` +
      (next ? `, ${shownTags} shown` : "");
  }

  async function drawTag() {
    if (!selected) {
      fill(detail, el("h2", { id: "tag-title" }, "Tags"), el("p", { class: "muted" },
        "Choose a tag to see its history, its spec and the pull commands."));
      return;
    }
    const page = await api.streamPage(ns, name, { tag: selected, limit: 1 });
    const status = (page.stream.status.tags || []).find((t) => t.tag === selected) || { tag: selected, items: [] };
    const spec = (page.stream.spec.tags || []).find((t) => t.name === selected);
    if (!spec && status.items.length === 0) {
      fill(detail, el("h2", { id: "tag-title" }, `Tag ${selected}`), errorBox(`${name}:${selected} does not exist.`));
      return;
    }
    const current = status.items[0];
    const timeline = el("ol", { class: "timeline", "aria-label": `History of ${selected}, newest first` },
      status.items.map((e, i) => el("li", { class: i === 0 ? "current" : "", "data-digest": e.image },
        el("div", {}, el("a", { href: `#/ns/${ns}/is/${name}/image/${e.image}`, class: "mono" }, e.image),
          i === 0 ? el("span", { class: "badge" }, "current") : null),
        el("div", { class: "muted" }, when(e.created), ` · generation ${e.generation}`,
          e.by ? ` · by ${e.by}` : ""),
        i === 0 ? null : rollback(e))));
    const conditions = (status.conditions || []).map((c) =>
      el("div", { class: "error", role: "note" }, `${c.type} ${c.status}: ${c.reason || ""} ${c.message || ""} (${c.lastTransitionTime || ""})`));
    fill(detail, 
      el("h2", { id: "tag-title" }, `Tag ${selected}`),
      conditions.length ? el("div", {}, el("h3", {}, "Import conditions"), conditions) : null,
      el("h3", {}, "Pull"), pullCommands(repo, selected, current && current.image),
      el("h3", {}, "History"),
      status.items.length ? timeline : el("p", { class: "muted" }, "No image yet."),
      el("h3", {}, "Spec"), specOf(spec),
      el("h3", {}, "Actions"),
      actionForm({
        title: "Tag this image as…", submit: "Tag",
        fields: [field("New tag", "to", { required: true, pattern: "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" }),
          el("div", { class: "row" }, el("input", { type: "checkbox", id: "alias", name: "alias" }),
            el("label", { for: "alias" }, `Alias (track ${selected} instead of its current image)`))],
        confirmText: (d) => d.alias ? `Make ${name}:${d.to} track ${name}:${selected}?`
          : `Point ${name}:${d.to} at ${short(current && current.image)}?`,
        act: (d) => api.setTag(ns, name, d.to, d.alias ? { kind: "ImageStreamTag", name: `${name}:${selected}` }
          : { kind: "ImageStreamImage", name: `${name}@${current.image}` }),
        done: (d) => `Tagged ${name}:${d.to}.`,
      }),
      el("div", { class: "row" }, deleteButton()));
  }

  function rollback(e) {
    const b = el("button", { type: "button" }, "Roll back to this");
    const out = el("div", { "aria-live": "polite" });
    b.addEventListener("click", async () => {
      if (!(await confirmAction("Roll back", `Point ${name}:${selected} back at ${short(e.image)}?`, "Roll back"))) return;
      try {
        await api.setTag(ns, name, selected, { kind: "ImageStreamImage", name: `${name}@${e.image}` });
        announce(`${selected} rolled back to ${short(e.image)}`);
        await drawTag();
      } catch (err) {
        fill(out, errorBox(err));
      }
    });
    return el("div", { class: "row" }, b, out);
  }

  function deleteButton() {
    const b = el("button", { type: "button", class: "danger" }, `Delete tag ${selected}`);
    const out = el("div", { "aria-live": "polite" });
    b.addEventListener("click", async () => {
      if (!(await confirmAction("Delete tag", `Delete ${name}:${selected} and its history?`, "Delete"))) return;
      try {
        await api.deleteTag(ns, name, selected);
        location.hash = `#/ns/${ns}/is/${name}`;
      } catch (err) {
        fill(out, errorBox(err));
      }
    });
    return el("div", {}, b, out);
  }

  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { query = search.value.trim(); loadTags(true); }, 250);
  });
  more.addEventListener("click", () => loadTags(false));

  drawHead();
  await loadTags(true);
  await drawTag();
  fill(main, head, el("div", { class: "layout" },
    el("section", { "aria-labelledby": "tags-title" }, el("h2", { id: "tags-title" }, "Tags"),
      el("div", { class: "field" }, el("label", { for: "tag-search" }, "Search tags"), search), tagCount, tagList, more),
    detail));

  // Live: a change to one of this stream's tags redraws that tag's row and, when open, its history.
  const pending = new Set();
  let flush = null;
  return watch(`${IS}/namespaces/${ns}/imagestreamtags`, revision, (ev) => {
    const n = ev.type === "RESYNC" ? `${name}:${selected || ""}` : ev.object && ev.object.metadata && ev.object.metadata.name;
    if (!n || !n.startsWith(`${name}:`)) return;
    pending.add(n.slice(name.length + 1));
    clearTimeout(flush);
    flush = setTimeout(async () => {
      const tags = [...pending];
      pending.clear();
      for (const tag of tags) {
        try {
          const p = await api.streamPage(ns, name, { tag, limit: 1 });
          const t = tagsOf(p.stream)[0];
          const old = tagList.querySelector(`li[data-tag="${CSS.escape(tag)}"]`);
          if (t && old) old.replaceWith(tagItem(t));
          else if (t && !query) { tagList.prepend(tagItem(t)); }
          else if (!t && old) old.remove();
          if (tag === selected) await drawTag();
          announce(`Tag ${tag} changed`);
        } catch (_) { /* shown on the next change or reload */ }
      }
    }, 150);
  }, async () => (await api.streamPage(ns, name, { limit: 1 })).revision);
}
