// The image page: manifest type, the platforms of an index, layers with a bar of their sizes, the config
// (entrypoint, cmd, env, labels, exposed ports, user, created), referrers (signatures, SBOMs) and pull commands.
import { api } from "./api.js";
import { el, fill, size, when, short, errorBox } from "./ui.js";
import { pullCommands } from "./stream.js";

const KINDS = {
  "application/vnd.oci.image.index.v1+json": "OCI image index",
  "application/vnd.oci.image.manifest.v1+json": "OCI image manifest",
  "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
  "application/vnd.docker.distribution.manifest.v2+json": "Docker image manifest v2",
};

function list(items, empty) {
  return items.length ? el("ul", {}, items.map((i) => el("li", {}, el("code", {}, i)))) : el("span", { class: "muted" }, empty);
}

export async function imagePage(main, crumbs, ns, name, digest) {
  crumbs([["Namespaces", "#/"], [ns, `#/ns/${ns}`], [name, `#/ns/${ns}/is/${name}`], [short(digest), location.hash]]);
  const isi = await api.isimage(ns, name, digest);
  const img = isi.image;
  const meta = img.dockerImageMetadata || {};
  const cfg = meta.Config || meta.ContainerConfig || {};
  const layers = img.dockerImageLayers || [];
  const total = layers.reduce((n, l) => n + (l.size || 0), 0);
  const biggest = Math.max(1, ...layers.map((l) => l.size || 0));
  const repo = (img.dockerImageReference || "").split("@")[0];
  const mediaType = img.dockerImageManifestMediaType;

  const referrers = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  api.referrers(`${ns}/${name}`, img.metadata.name).then((idx) => {
    const ms = (idx && idx.manifests) || [];
    fill(referrers, ms.length === 0 ? el("p", { class: "muted" }, "No referrers (signatures, SBOMs, attestations).")
      : el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Artifact type"),
        el("th", { scope: "col" }, "Digest"), el("th", { scope: "col", class: "num" }, "Size"))),
      el("tbody", {}, ms.map((m) => el("tr", {}, el("td", {}, m.artifactType || m.mediaType),
        el("td", {}, el("code", {}, m.digest)), el("td", { class: "num" }, size(m.size)))))));
  }, (e) => fill(referrers, errorBox(e)));

  const platforms = (img.dockerImageManifests || []).map((m) => el("tr", {},
    el("td", {}, `${m.os}/${m.architecture}${m.variant ? `/${m.variant}` : ""}`),
    el("td", {}, el("a", { href: `#/ns/${ns}/is/${name}/image/${m.digest}`, class: "mono" }, m.digest)),
    el("td", { class: "num" }, size(m.manifestSize))));

  const env = cfg.Env || [];
  const labels = Object.entries(cfg.Labels || {}).map(([k, v]) => `${k}=${v}`);
  const ports = Object.keys(cfg.ExposedPorts || {});
  fill(main, 
    el("h1", {}, `${ns}/${name}@${short(img.metadata.name)}`),
    el("div", { class: "panel" }, el("dl", { class: "kv" },
      el("dt", {}, "Digest"), el("dd", {}, el("code", {}, img.metadata.name)),
      el("dt", {}, "Manifest type"), el("dd", {}, `${KINDS[mediaType] || mediaType} `, el("code", { class: "muted" }, mediaType)),
      el("dt", {}, "Platform"), el("dd", {}, meta.Os || meta.Architecture ? `${meta.Os || "?"}/${meta.Architecture || "?"}` : "–"),
      el("dt", {}, "Size"), el("dd", {}, size(meta.Size || total)),
      el("dt", {}, "Created"), el("dd", {}, meta.Created ? [when(meta.Created), ` (${meta.Created})`] : "–"))),
    el("h2", {}, "Pull"), pullCommands(repo, null, img.metadata.name),
    platforms.length ? [el("h2", {}, "Platforms"), el("table", {}, el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Platform"), el("th", { scope: "col" }, "Manifest"), el("th", { scope: "col", class: "num" }, "Size"))),
    el("tbody", {}, platforms))] : null,
    layers.length ? [el("h2", {}, `Layers (${layers.length}, ${size(total)})`),
      el("table", { class: "bars" }, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "#"),
        el("th", { scope: "col" }, "Digest"), el("th", { scope: "col", class: "num" }, "Size"),
        el("th", { scope: "col", class: "hide-narrow" }, "Share"))),
      el("tbody", {}, layers.map((l, i) => el("tr", {}, el("td", {}, String(i + 1)),
        el("td", {}, el("code", { title: l.mediaType }, short(l.name))), el("td", { class: "num" }, size(l.size)),
        el("td", { class: "barcell hide-narrow" }, el("div", { class: "bar", role: "img",
          "aria-label": `${Math.round((100 * (l.size || 0)) / Math.max(1, total))}% of the image`,
          style: `width: ${Math.max(1, Math.round((100 * (l.size || 0)) / biggest))}%` }))))))] : null,
    el("h2", {}, "Config"),
    el("div", { class: "panel" }, el("dl", { class: "kv" },
      el("dt", {}, "Entrypoint"), el("dd", {}, cfg.Entrypoint ? el("code", {}, JSON.stringify(cfg.Entrypoint)) : "–"),
      el("dt", {}, "Cmd"), el("dd", {}, cfg.Cmd ? el("code", {}, JSON.stringify(cfg.Cmd)) : "–"),
      el("dt", {}, "User"), el("dd", {}, cfg.User || "–"),
      el("dt", {}, "Working dir"), el("dd", {}, cfg.WorkingDir || "–"),
      el("dt", {}, "Exposed ports"), el("dd", {}, list(ports, "none")),
      el("dt", {}, "Env"), el("dd", {}, list(env, "none")),
      el("dt", {}, "Labels"), el("dd", {}, list(labels, "none")))),
    el("h2", {}, "Referrers"), referrers);
}
