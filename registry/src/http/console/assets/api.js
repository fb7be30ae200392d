// The console's only way to the server: the registry's public APIs, called with the user's API token as a bearer
// token (kept in this tab's sessionStorage). Errors come back as ApiError with the API's own message.
const TOKEN_KEY = "tributary.console.token";
export const IS = "/apis/image.openshift.io/v1";
export const ADMIN = "/apis/tributary.dev/v1";
/** Kubernetes' server-side table: one row of cells per object, much smaller than the objects. */
export const TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io";
const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message, reason) {
    super(message);
    this.status = status;
    this.reason = reason || "";
  }
}

/** The message an answer carries: a Kubernetes Status, an OCI error body, or the status line. */
async function failure(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let reason = "";
  try {
    const body = await resp.json();
    if (body && body.kind === "Status") {
      message = body.message || message;
      reason = body.reason || "";
    } else if (body && Array.isArray(body.errors) && body.errors.length) {
      message = body.errors.map((e) => e.message || e.code).join("; ");
      reason = body.errors[0].code || "";
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(resp.status, message, reason);
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token.get();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

/** One request; the parsed JSON body (or the Response when `raw`). */
export async function request(method, path, { body, contentType, accept, raw, signal } = {}) {
  const h = headers(accept ? { Accept: accept } : {});
  if (body !== undefined) h.set("Content-Type", contentType || "application/json");
  const resp = await fetch(path, {
    method, headers: h, signal, cache: "no-store",
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
  if (!resp.ok) throw await failure(resp);
  if (raw) return resp;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

const enc = encodeURIComponent;

/** A stream table row: name, the newest tag, tag count, newest event time. */
export function streamRow(row) {
  const [name, , tags, , count, updatedAt] = row.cells;
  return { name, newestTag: (tags || "").split(/[, ]/)[0] || null, count: Number(count || 0), updatedAt: updatedAt || null };
}
const qs = (o) => Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== "")
  .map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&");

export const api = {
  whoami: () => request("GET", `${ADMIN}/whoami`),
  namespaces: () => request("GET", `${ADMIN}/namespaces`),
  /** A page of a namespace's streams as table rows: {rows, next, remaining, revision}. */
  async streams(ns, { limit = 50, cont, search } = {}) {
    const t = await request("GET", `${IS}/namespaces/${enc(ns)}/imagestreams?${qs({ limit, continue: cont, search })}`,
      { accept: TABLE });
    return { rows: (t.rows || []).map(streamRow), next: t.metadata.continue || null,
      remaining: t.metadata.remainingItemCount || 0, revision: t.metadata.resourceVersion };
  },
  /** The stream with a page of its tags: {stream, total, next, revision}. */
  async streamPage(ns, name, { limit = 100, cont, search, tag } = {}) {
    // A page of tags shows what each points at now; one tag's page shows its whole history.
    const q = qs({ limit, continue: cont, search, tag, historyLimit: tag ? undefined : 1 });
    const resp = await request("GET", `${IS}/namespaces/${enc(ns)}/imagestreams/${enc(name)}?${q}`, { raw: true });
    return { stream: await resp.json(), total: Number(resp.headers.get("Tributary-Tags-Total") || 0),
      next: resp.headers.get("Tributary-Tags-Continue"), revision: resp.headers.get("Tributary-Revision") };
  },
  isimage: (ns, stream, digest) => request("GET", `${IS}/namespaces/${enc(ns)}/imagestreamimages/${enc(stream)}@${digest}`),
  manifest: (repo, digest) => request("GET", `/v2/${repo}/manifests/${digest}`, { accept: MANIFEST_TYPES }),
  blob: (repo, digest) => request("GET", `/v2/${repo}/blobs/${digest}`),
  referrers: (repo, digest) => request("GET", `/v2/${repo}/referrers/${digest}`),
  /** Points `tag` of the stream at `from` ({kind, name}), creating the image stream tag or replacing its spec. */
  async setTag(ns, stream, tag, from) {
    const path = `${IS}/namespaces/${enc(ns)}/imagestreamtags/${enc(stream)}:${enc(tag)}`;
    const spec = { name: tag, from, referencePolicy: { type: "Source" } };
    let current = null;
    try {
      current = await request("GET", path);
    } catch (e) {
      if (e.status !== 404) throw e;
    }
    if (current) {
      current.tag = spec;
      delete current.image;
      return request("PUT", path, { body: current });
    }
    return request("POST", `${IS}/namespaces/${enc(ns)}/imagestreamtags`, { body: {
      kind: "ImageStreamTag", apiVersion: "image.openshift.io/v1", metadata: { name: `${stream}:${tag}` }, tag: spec } });
  },
  deleteTag: (ns, stream, tag) =>
    request("DELETE", `${IS}/namespaces/${enc(ns)}/imagestreamtags/${enc(stream)}:${enc(tag)}`),
  setLookup: (ns, stream, local) => request("PATCH", `${IS}/namespaces/${enc(ns)}/imagestreams/${enc(stream)}`,
    { body: { spec: { lookupPolicy: { local } } }, contentType: "application/merge-patch+json" }),
  importImage: (ns, stream, tag, from) => request("POST", `${IS}/namespaces/${enc(ns)}/imagestreamimports`, { body: {
    kind: "ImageStreamImport", apiVersion: "image.openshift.io/v1", metadata: { name: stream },
    spec: { import: true, images: [{ from: { kind: "DockerImage", name: from }, to: { name: tag } }] } } }),
};

/**
 * Follows a watch (one JSON event a line) from `revision`, calling onEvent(event) for each; reconnects after a
 * dropped connection from the newest revision seen; an expired revision asks refresh() for a current one (and
 * reports a RESYNC event). Returns a function that stops it.
 */
export function watch(path, revision, onEvent, refresh, accept) {
  const ctl = new AbortController();
  let rv = revision;
  let stopped = false;
  const run = async () => {
    while (!stopped) {
      try {
        const sep = path.includes("?") ? "&" : "?";
        const resp = await request("GET", `${path}${sep}${qs({ watch: "true", resourceVersion: rv })}`,
          { raw: true, signal: ctl.signal, accept });
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const ev = JSON.parse(line);
            if (ev.type === "ERROR") {
              rv = await refresh(); // expired: read the current revision and start from there
              onEvent({ type: "RESYNC" });
              continue;
            }
            const obj = ev.object && ev.object.rows ? ev.object.rows[0].object : ev.object;
            const seen = obj && obj.metadata && obj.metadata.resourceVersion;
            if (seen) rv = seen;
            onEvent(ev);
          }
        }
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  run();
  return () => { stopped = true; ctl.abort(); };
}
