// The web console in Debian's chromium, driven by playwright-core. Run by registry/tests/console.rs, which starts
// the registry, fills it (namespaces team and secret, team/app:v1 with two history items, team/big with 10,000
// tags, secret/hidden) and passes: REGISTRY_URL, ADMIN_TOKEN, VIEWER_TOKEN (view in team only), SHOTS (screenshot
// directory), RESULTS (a JSON file this writes for the Rust side), DIGEST_A / DIGEST_B (v1's history, newest B).
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";

const { REGISTRY_URL: URL_, ADMIN_TOKEN, VIEWER_TOKEN, SHOTS, RESULTS, DIGEST_A, DIGEST_B } = process.env;
const TIME_BOX_MS = Number(process.env.TIME_BOX_MS || 1000);
const results = { steps: [] };
let failures = 0;

function check(cond, what) {
  if (!cond) { failures++; console.error(`FAIL: ${what}`); } else console.log(`ok: ${what}`);
}

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.steps.push({ name, ok: true, ms: Date.now() - t });
    console.log(`step ok: ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failures++;
    results.steps.push({ name, ok: false, error: String(e) });
    console.error(`step FAILED: ${name}: ${e.stack || e}`);
  }
}

const sha = (b) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** Pushes a one-layer image to repo:tag over the OCI API, as a client would; returns its digest. */
async function push(repo, tag, seed) {
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", created: new Date().toISOString(),
    config: { Entrypoint: ["/bin/app"], Cmd: ["--seed", seed] } }));
  const layer = Buffer.from(`layer ${seed} `.repeat(200));
  for (const b of [config, layer]) {
    const r = await fetch(`${URL_}/v2/${repo}/blobs/uploads/?digest=${sha(b)}`, { method: "POST", headers: auth, body: b });
    if (r.status !== 201) throw new Error(`blob push: ${r.status}`);
  }
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha(layer), size: layer.length }] }));
  const r = await fetch(`${URL_}/v2/${repo}/manifests/${tag}`, { method: "PUT", body: manifest,
    headers: { ...auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json" } });
  if (r.status !== 201) throw new Error(`manifest push: ${r.status}`);
  return sha(manifest);
}

mkdirSync(SHOTS, { recursive: true });
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "tributary-console-")), {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] || await context.newPage();
const foreign = [];
const pageErrors = [];
page.on("request", (r) => { if (!r.url().startsWith(URL_) && !r.url().startsWith("data:")) foreign.push(r.url()); });
page.on("pageerror", (e) => pageErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const hash = (h) => page.evaluate((x) => { location.hash = x; }, h);
const current = () => page.locator(".timeline li.current").first().getAttribute("data-digest");

await step("/ redirects to the console, which asks for a token", async () => {
  const resp = await page.goto(`${URL_}/`);
  check(resp.url().endsWith("/console/"), `landed on /console/ (${resp.url()})`);
  await page.getByLabel("API token").waitFor();
  await shot("01-sign-in");
});

await step("a wrong token is refused, the admin token signs in", async () => {
  await page.getByLabel("API token").fill("trb_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  await page.getByLabel("API token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Namespaces" }).waitFor();
  check(await page.getByRole("link", { name: "team", exact: true }).isVisible(), "team listed");
  check(await page.getByRole("link", { name: "secret", exact: true }).isVisible(), "secret listed for the admin");
  await shot("02-namespaces");
});

await step("a namespace's streams, with tag counts, within the time box", async () => {
  const t = Date.now();
  await page.getByRole("link", { name: "team", exact: true }).click();
  const big = page.locator('tr[data-stream="big"]');
  await big.waitFor();
  const ms = Date.now() - t;
  results.namespaceMs = ms;
  check(ms < TIME_BOX_MS, `namespace page with a 10,000-tag stream in ${ms} ms (< ${TIME_BOX_MS})`);
  check((await big.locator("td").first().textContent()) === "10000", "big shows 10000 tags");
  await page.locator('tr[data-stream="app"] td').nth(2).getByText("KiB").waitFor().catch(() => {});
  await shot("03-streams");
});

await step("the stream page with 10,000 tags opens within the time box and searches on the server", async () => {
  const t = Date.now();
  await hash("#/ns/team/is/big");
  await page.getByText("10000 tags").waitFor();
  const ms = Date.now() - t;
  results.bigStreamMs = ms;
  check(ms < TIME_BOX_MS, `stream page with 10,000 tags in ${ms} ms (< ${TIME_BOX_MS})`);
  check(await page.locator(".taglist li").count() === 100, "the first page holds 100 tags");
  const t2 = Date.now();
  await page.getByLabel("Search tags").fill("09999");
  await page.getByText("1 tag matching").waitFor();
  results.searchMs = Date.now() - t2;
  check(await page.locator(".taglist li").count() === 1, "search finds the one tag");
  await page.getByRole("link", { name: /tag-09999/ }).click();
  await page.getByRole("heading", { name: "Tag tag-09999" }).waitFor();
  await shot("04-stream-10000-tags");
});

await step("a tag's history is a timeline, newest first, saying who pushed each image", async () => {
  await hash("#/ns/team/is/app/tag/v1");
  await page.getByRole("heading", { name: "Tag v1" }).waitFor();
  const items = await page.locator(".timeline li").evaluateAll((ls) => ls.map((l) => l.dataset.digest));
  check(JSON.stringify(items) === JSON.stringify([DIGEST_B, DIGEST_A]), `history is [B, A]: ${items}`);
  const who = await page.locator(".timeline li").evaluateAll((ls) => ls.map((l) => /by admin/.test(l.textContent)));
  check(who.length === 2 && who.every(Boolean), `each item says who pushed it (by admin): ${who}`);
  check(await page.getByText(`docker pull `).first().isVisible(), "pull commands shown");
  await shot("05-tag-timeline");
});

let digestC = null;
await step("a push made now appears in the open timeline without a reload", async () => {
  await page.evaluate(() => { window.__notReloaded = true; });
  digestC = await push("team/app", "v1", "pushed-during-the-test");
  await page.waitForFunction((d) => document.querySelector(".timeline li.current")?.dataset.digest === d, digestC,
    { timeout: 10000 });
  check(await page.evaluate(() => window.__notReloaded === true), "the page was not reloaded");
  check(await page.locator(".timeline li").count() === 3, "three history items");
  results.pushed = digestC;
  await shot("06-timeline-after-push");
});

await step("roll v1 back to A, with confirmation", async () => {
  await page.locator(`.timeline li[data-digest="${DIGEST_A}"]`).getByRole("button", { name: "Roll back to this" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("Point app:v1 back at").waitFor();
  await dialog.getByRole("button", { name: "Roll back" }).click();
  await page.waitForFunction((d) => document.querySelector(".timeline li.current")?.dataset.digest === d, DIGEST_A);
  check(await current() === DIGEST_A, "A is current again");
  results.rolledBackTo = DIGEST_A;
  await shot("07-rolled-back");
});

await step("the image page: manifest type, layers with bars, config, referrers, pull by digest", async () => {
  await page.locator(`.timeline li[data-digest="${DIGEST_A}"] a`).first().click();
  await page.getByRole("heading", { name: "Layers (2," }).waitFor();
  check(await page.getByText("OCI image manifest").first().isVisible(), "manifest type");
  check(await page.locator(".bar").count() === 2, "a bar per layer");
  check(await page.getByText('["/entry"]').isVisible(), "entrypoint from the config");
  check(await page.getByText("8080/tcp").isVisible(), "exposed port");
  check(await page.getByText("org.example.seed=a").isVisible(), "label");
  await page.getByText(/No referrers|Artifact type/).waitFor();
  check(await page.getByText(`@${DIGEST_A}`).first().isVisible(), "pull by digest");
  await shot("08-image");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("09-image-phone");
  await hash("#/ns/team/is/app/tag/v1");
  await page.getByRole("heading", { name: "Tag v1" }).waitFor();
  await shot("10-tag-phone");
  await page.setViewportSize({ width: 1280, height: 900 });
});

await step("toggle image lookup, with confirmation", async () => {
  await page.getByRole("button", { name: "Turn image lookup on" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Confirm" }).click();
  await page.getByRole("button", { name: "Turn image lookup off" }).waitFor();
});

await step("sign out", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API token").waitFor();
});

await step("a viewer's refused roll back shows the API's error", async () => {
  await page.getByLabel("API token").fill(VIEWER_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Namespaces" }).waitFor();
  await hash("#/ns/team/is/app/tag/v1");
  await page.getByRole("heading", { name: "Tag v1" }).waitFor();
  await page.locator(`.timeline li[data-digest="${DIGEST_B}"]`).getByRole("button", { name: "Roll back to this" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Roll back" }).click();
  const err = page.locator(".timeline .error");
  await err.waitFor();
  const text = await err.textContent();
  results.refusal = text;
  check(/denied|forbidden/i.test(text), `the refusal is shown: ${text}`);
  check(await current() === DIGEST_A, "nothing changed");
  await shot("11-refused");
});

await step("the viewer sees nothing of the namespace secret", async () => {
  await hash("#/");
  await page.getByRole("heading", { name: "Namespaces" }).waitFor();
  check(await page.getByRole("link", { name: "team", exact: true }).isVisible(), "team listed");
  check(await page.getByText("secret").count() === 0, "secret not listed");
  for (const h of ["#/ns/secret", "#/ns/secret/is/hidden", "#/ns/secret/is/hidden/tag/v1"]) {
    // The previous route's answer is cleared first, so that what is read below is this route's (right after
    // the hash changes the old alert is still there, or the new page still says "Loading…").
    await page.evaluate((x) => { document.getElementById("main").replaceChildren(); location.hash = x; }, h);
    await page.waitForFunction(() => /denied|forbidden/i.test(document.getElementById("main")?.textContent ?? ""),
      null, { timeout: 5000 }).catch(() => {});
    await page.getByRole("alert").first().waitFor();
    const body = await page.locator("main").textContent();
    check(!body.includes("hidden") || h.includes("hidden") && !/sha256:[0-9a-f]{12}/.test(body),
      `${h}: an error and no content`);
    check(/denied|forbidden/i.test(body), `${h}: says access is denied (${body.slice(0, 120)})`);
  }
  await shot("12-viewer-no-access");
});

check(foreign.length === 0, `no request to another host (${foreign.join(", ")})`);
check(pageErrors.length === 0, `no script errors (${pageErrors.join("; ")})`);
await context.close();
writeFileSync(RESULTS, JSON.stringify(results, null, 2));
console.log(`console steps: ${results.steps.filter((s) => s.ok).length} ok, ${results.steps.filter((s) => !s.ok).length} not ok`);
process.exit(failures ? 1 : 0);
