// The web UI in a real browser (headless Chromium from the system, driven by playwright-core),
// against a live agent that scripts/ui-test.sh started on the test control plane with a real
// Git repository. Each step asserts what a user sees; axe-core checks each page; screenshots of
// each page go to $UI_SHOTS. Exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const BASE = env("UI_BASE"), READ = env("UI_READ_TOKEN"), ADMIN = env("UI_ADMIN_TOKEN");
const GIT = env("UI_GIT"), NS = env("UI_NS"), KUBECONFIG = env("UI_KUBECONFIG"), SHOTS = env("UI_SHOTS");
// A revision the agent applied before the live commit: what the rollback goes back to.
const FIRST = env("UI_TARGET");
// A kubeconfig that acts as alice, a person whose writes the control plane's audit webhook sends
// to the agent (scripts/ui-test.sh under `reckon-testenv run --audit`); empty: no audit here.
const ALICE = process.env.UI_ALICE_KUBECONFIG ?? "";
// "main": everything; "verified": the Integrity page after the store was verified.
const PHASE = process.env.UI_PHASE ?? "main";
mkdirSync(SHOTS, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const timings = [];
// The page a failure is reported from: its screenshot and text go with the error.
let current = null;
let failures = 0;
function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

/** axe-core on the page as it is now: no serious or critical violation. */
async function axe(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) console.error(`axe ${name}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`);
  check(bad.length === 0, `axe-core: no serious violations on ${name} (${result.violations.length} minor)`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: false });
}

/** Navigates and waits for `selector`; records how long the first screen took. */
async function open(page, path, selector, name) {
  const t0 = Date.now();
  await page.goto(`${BASE}${path}`);
  await page.waitForSelector(selector, { timeout: 20000 });
  timings.push([name, Date.now() - t0]);
}

async function signIn(page, token) {
  await page.goto(`${BASE}/ui/signin`);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui/`);
}

const git = (...args) => execFileSync("git", ["-C", GIT, "-c", "user.name=Bea", "-c", "user.email=bea@example.com", ...args], { encoding: "utf8" }).trim();
const kubectl = (...args) => execFileSync("kubectl", ["--kubeconfig", KUBECONFIG, ...args], { encoding: "utf8" });
const kubectlAs = (kubeconfig, ...args) => execFileSync("kubectl", ["--kubeconfig", kubeconfig, ...args], { encoding: "utf8" });

/** Reloads `path` until `selector` is on it (the agent records drifts and attributions as they
 * happen; a page shows what was recorded when it loaded). */
async function reloadUntil(page, path, ready, selector, what, ms = 40000) {
  for (const t0 = Date.now(); ;) {
    await page.goto(`${BASE}${path}`);
    await page.waitForSelector(ready);
    if (await page.locator(selector).count()) return;
    if (Date.now() - t0 > ms) throw new Error(`FAILED: ${what}`);
    await page.waitForTimeout(1000);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.UI_CHROMIUM ?? "/usr/bin/chromium",
  // Root in CI containers: Chromium's sandbox needs user namespaces it may not get.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  if (PHASE === "verified") {
    // After scripts/ui-test.sh stopped the agent, ran `reckon store verify` on its store and
    // started it again: the Integrity page shows that result.
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
    const page = await ctx.newPage();
    current = page;
    page.on("pageerror", (e) => { failures++; console.error(`page error: ${e.message}`); });
    await signIn(page, READ);
    await open(page, "/ui/integrity", "[data-section=verify]", "integrity (verified)");
    check(await page.getAttribute("[data-section=verify]", "data-state") === "ok", "integrity: the last verification passed");
    const text = (await page.innerText("[data-section=verify]")).replace(/\s+/g, " ");
    check(/up to #[\d,]+: [\d,]+ events/.test(text) && text.includes("by reckon"), `integrity: what it covered and by which reckon: ${text}`);
    const since = await page.innerText("[data-value=appended-since]");
    check(/nothing appended|events? appended, not covered/.test(since), `integrity: what came after it: ${since}`);
    await axe(page, "integrity (verified)");
    await shot(page, "integrity");
  } else {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
    const page = await ctx.newPage();
    current = page;
    page.on("pageerror", (e) => { failures++; console.error(`page error: ${e.message}`); });

    // --- sign in (read token) and the fleet
    await page.goto(`${BASE}/ui/`);
    await page.waitForURL(/\/ui\/signin/);
    await axe(page, "sign-in");
    await shot(page, "signin");
    await signIn(page, READ);
    await page.waitForSelector("table.fleet a:text('web')");
    check(await page.isVisible("text=following Git"), "fleet: web follows Git");
    await axe(page, "fleet");
    await shot(page, "fleet");
    await open(page, "/ui/", "table.fleet a:text('web')", "fleet");

    // --- the Integrity page of a store never verified: its size, and how to verify it
    await page.click("header nav a:text('Integrity')");
    await page.waitForSelector("[data-section=verify]");
    check(await page.getAttribute("[data-section=verify]", "data-state") === "never", "integrity: a fresh store was never verified, and the page says so");
    check(/\d/.test(await page.innerText("[data-value=bytes]")), `integrity: the store's size (${await page.innerText("[data-value=bytes]")})`);
    await axe(page, "integrity (never verified)");

    // --- the App's timeline, and a new commit appearing live
    await open(page, "/ui/apps/web", ".timeline li", "timeline");
    await page.waitForSelector("text=● live");
    let eventRequests = 0;
    // Polling would ask for what came after a position: the stream must make that unnecessary.
    page.on("request", (r) => { if (r.url().includes("/api/v1/events?") && r.url().includes("after=")) eventRequests++; });
    const cm = (name, n) => `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${name}\ndata:\n  n: "${n}"\n`;
    execFileSync("sh", ["-c", `cat > ${GIT}/app/keep.yaml`], { input: cm("keep", 3) });
    git("commit", "-qam", "Live commit for the browser");
    const third = git("rev-parse", "HEAD");
    await page.waitForSelector(".timeline li.new >> text=Live commit for the browser", { timeout: 30000 });
    check(true, `timeline: commit ${third.slice(0, 10)} appeared live without a reload`);
    // The status above the timeline follows: the new commit is applied.
    await page.waitForSelector(`.card a[href$='${third}'] >> nth=1`, { timeout: 30000 });
    check(true, "timeline: the App's status shows the new commit applied, without a reload");
    check(eventRequests === 0, `timeline: live updates came from the stream (${eventRequests} polls while waiting)`);
    // a row expands to the full event, by keyboard
    const row = page.locator(".timeline li.new button.row").first();
    await row.focus();
    await page.keyboard.press("Enter");
    await page.waitForSelector(".timeline li.new pre.full");
    check((await row.getAttribute("aria-expanded")) === "true", "timeline: Enter expands a row to the full event");
    await axe(page, "timeline");
    await shot(page, "timeline");
    // deep link with filters
    await open(page, "/ui/apps/web?kind=commit", ".timeline li", "timeline filtered");
    const kinds = await page.locator(".timeline li .badge").allTextContents();
    check(kinds.length > 0 && kinds.every((k) => k === "CommitObserved"), `timeline: ?kind=commit shows only commits (${kinds.length})`);

    // --- drifts, then blame shows them with the field manager and the person. Two hand edits:
    // the admin token's on keep (the control plane's audit policy sends nothing for it, as for a
    // controller: unattributed), and alice's on a (sent by the audit webhook: attributed to her).
    const beforeDrift = new Date(Date.now() - 1000).toISOString();
    kubectl("-n", NS, "patch", "configmap", "keep", "--type=merge", "--field-manager=hand-edit", "-p", '{"data":{"n":"99"}}');
    if (ALICE) kubectlAs(ALICE, "-n", NS, "patch", "configmap", "a", "--type=merge", "--field-manager=alice-edit", "-p", '{"data":{"n":"42"}}');
    const objectPath = `/ui/apps/web/object?object=${encodeURIComponent(`ConfigMap/${NS}/keep`)}`;
    const field = "tr[data-field='/data/n']";
    await reloadUntil(page, objectPath, field, `${field} li >> text=hand-edit`, "blame never showed the drift on /data/n");
    if (ALICE) {
      // Recorded unattributed once the agent's --audit-wait passed without an explaining write.
      await reloadUntil(page, objectPath, field, `${field} li >> text=unattributed (no audit event matched)`, "blame never showed the admin's drift unattributed");
    }
    const driftText = (await page.locator(`${field} li`).first().innerText()).replace(/\s+/g, " ");
    check(driftText.includes("hand-edit"), `blame: the drift on /data/n names its field manager: ${driftText}`);
    check(await page.locator(`${field} .person`).count() === 0, `blame: a drift no audit event explains names nobody: ${driftText}`);
    await open(page, objectPath, field, "object (blame)");
    await axe(page, "object");
    await shot(page, "object");
    const a = `ConfigMap/${NS}/a`;
    if (ALICE) {
      const aPath = `/ui/apps/web/object?object=${encodeURIComponent(a)}`;
      await reloadUntil(page, aPath, field, `${field} .person`, "blame never showed the person behind alice's drift on a");
      const text = (await page.locator(`${field} li:has(.person)`).first().innerText()).replace(/\s+/g, " ");
      check((await page.locator(`${field} .person`).first().innerText()) === "alice" && text.includes("alice-edit"),
        `blame: the drift on a's /data/n is by alice, from the audit log, with her field manager: ${text}`);
      await shot(page, "object-person");
    } else {
      console.log("SKIPPED: the person in blame and drift (RECKON_UI_NO_AUDIT: no audit webhook on this cluster)");
    }

    // --- the Drift page: the range in the URL; alice's edit under her name, the admin's
    // unattributed, side by side, both put back, under their objects; keyboard to the blame
    const keep = `ConfigMap/${NS}/keep`;
    await open(page, "/ui/apps/web/drift?since=1h", `[data-side=unattributed] li >> text=${keep}`, "drift");
    check((await page.inputValue("input[name=since]")) === "1h", "drift: the range comes from the URL");
    const un = await page.locator(`[data-side=unattributed] li:has-text('${keep}')`).first().innerText();
    check(un.includes("/data/n") && un.includes("put back"), `drift: the admin's edit is listed unattributed, with its field, and put back: ${un.replace(/\s+/g, " ")}`);
    if (ALICE) {
      check(await page.locator(`[data-side=unattributed] [data-group=unmatched] li:has-text('${keep}')`).count() >= 1,
        "drift: the admin's edit is in the group no audit event matched");
      check(await page.locator(`[data-side=unattributed] li:has-text('${a}')`).count() === 0, "drift: alice's edit is not unattributed");
      const hers = page.locator(`[data-side=attributed] [data-person=alice]`);
      check(await hers.count() === 1, "drift: the attributed side has alice");
      const t = (await hers.innerText()).replace(/\s+/g, " ");
      check(t.includes(a) && t.includes("/data/n") && t.includes("put back") && !t.includes(keep),
        `drift: under alice, her edit of a, with its field, put back: ${t}`);
      const people = (await page.locator(`table.drift-objects tr[data-object='${a}'] td`).allTextContents()).map((x) => x.trim());
      check(people[1] === "alice" && people[2] === "0", `drift: by object, a's drift is alice's and none unattributed (${people})`);
    } else {
      check(await page.locator("[data-side=attributed] >> text=No drift in this range was matched").count() === 1, "drift: attributed and unattributed side by side (none attributed here)");
    }
    const objRow = page.locator(`table.drift-objects tr[data-object='${keep}'] td`);
    const counts = (await objRow.allTextContents()).map((t) => t.trim());
    check(Number(counts[0]) >= 1 && counts[3] === "0", `drift: by object, keep drifted and nothing is left open (${counts})`);
    await axe(page, "drift");
    await shot(page, "drift");
    // keyboard: from the range form, Tab reaches the object's link, Enter opens its blame
    await page.focus("input[name=until]");
    let reached = false;
    for (let i = 0; i < 60 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate((o) => document.activeElement?.closest("table.drift-objects tr")?.getAttribute("data-object") === o && document.activeElement.tagName === "A", keep);
    }
    check(reached, "drift: Tab reaches the object's link in the table");
    await page.keyboard.press("Enter");
    await page.waitForSelector("tr[data-field='/data/n']");
    check(page.url().includes("/object?object="), "drift: Enter on it opens the object's blame");
    // a range that ends before the edit: nothing
    await open(page, `/ui/apps/web/drift?since=1h&until=${encodeURIComponent(beforeDrift)}`, "#by-object", "drift (empty range)");
    check(await page.locator(`text=${keep}`).count() === 0, "drift: a range ending before the edit shows no drift");

    // --- a fourth commit (changes a, adds b), so the revision page has two revisions to pick from
    execFileSync("sh", ["-c", `cat > ${GIT}/app/a.yaml`], { input: cm("a", 2) });
    execFileSync("sh", ["-c", `cat > ${GIT}/app/b.yaml`], { input: cm("b", 1) });
    git("add", "-A");
    git("commit", "-qm", "Change a, add b");
    const fourth = git("rev-parse", "HEAD");
    for (const t1 = Date.now(); ;) {
      const s = await (await fetch(`${BASE}/api/v1/apps/web`, { headers: { Authorization: `Bearer ${READ}` } })).json();
      if (s.applied_revision === fourth) break;
      if (Date.now() - t1 > 60000) throw new Error(`FAILED: the agent never applied ${fourth}`);
      await new Promise((r) => setTimeout(r, 500));
    }

    // --- a read token: no rollback or resume buttons; the API refuses it (403)
    await open(page, `/ui/apps/web/revisions/${FIRST}`, "text=Change keep", "revision");
    // The side-by-side diff, by default against the applied revision (the fourth commit).
    const keepDiff = `.diff[data-object='ConfigMap/keep']`;
    await page.waitForSelector(`${keepDiff} tr.chg[data-field='/data/n']`);
    const cells = async (obj, field) => (await page.locator(`${obj} tr[data-field='${field}'] td`).allTextContents()).map((t) => t.trim());
    check(JSON.stringify(await cells(keepDiff, "/data/n")) === JSON.stringify(["3", "2"]),
      `revision diff: keep's /data/n side by side, highlighted: ${await cells(keepDiff, "/data/n")}`);
    check(await page.locator(`${keepDiff} tr[data-field='/metadata/name']:not(.chg)`).count() === 1, "revision diff: an unchanged field is shown, not highlighted");
    check(await page.locator(`.diff[data-object='ConfigMap/a'] tr.chg[data-field='/data/n']`).count() === 1, "revision diff: a's change against the fourth commit is highlighted");
    check(await page.locator(`.diff[data-object='ConfigMap/b'] >> text=only in ${fourth.slice(0, 10)}`).count() === 1, "revision diff: b exists only in the fourth commit");
    check((await page.inputValue("#against")) === fourth, "revision diff: compared with the applied revision by default");
    // Pick another revision: the URL carries it (a deep link) and the diff follows.
    await page.selectOption("#against", third);
    await page.waitForURL(new RegExp(`against=${third}`));
    await page.waitForFunction((sel) => !document.querySelector(sel), `.diff[data-object='ConfigMap/b']`);
    check(await page.locator(".diff").count() === 1 && await page.locator(`${keepDiff} tr.chg`).count() === 1,
      "revision diff: against the third commit only keep differs");
    await open(page, `/ui/apps/web/revisions/${FIRST}?against=${fourth}`, `${keepDiff} tr.chg`, "revision diff (deep link)");
    check((await page.inputValue("#against")) === fourth, "revision diff: ?against= in the URL picks the revision");
    check(await page.locator("button:text('Roll back')").count() === 0, "read token: no rollback button");
    const status = await page.evaluate(async ([tok, first]) => (await fetch("/api/v1/apps/web/rollback", {
      method: "POST", headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" },
      body: JSON.stringify({ to: first, reason: "read token" }) })).status, [READ, FIRST]);
    check(status === 403, `read token: the API answers a rollback with ${status}`);
    await axe(page, "revision");
    await shot(page, "revision");
    await page.evaluate(() => document.getElementById("compare-title").scrollIntoView());
    await shot(page, "revision-diff");

    // --- an admin token rolls back (confirmation with what will happen and a reason) and sees the
    // App pinned, then resumes
    await page.click("button:text('Sign out')");
    await signIn(page, ADMIN);
    await page.goto(`${BASE}/ui/apps/web/revisions/${FIRST}`);
    await page.click("button:text('Roll back to this revision')");
    await page.waitForSelector("dialog[open] >> text=pins");
    check(await page.locator("dialog[open] li").count() > 0, "rollback: the confirmation lists what will change");
    await axe(page, "rollback dialog");
    await shot(page, "rollback-dialog");
    await page.fill("#reason", "browser test: back to the previous revision");
    await page.click("dialog[open] button:text('Roll back')");
    await page.waitForURL(`${BASE}/ui/apps/web`);
    await page.waitForSelector(".card >> text=pinned");
    check(await page.isVisible(".card >> text=fuzzer"), "rollback: the App is pinned by the admin token's identity");
    await page.waitForSelector(".timeline li >> text=Rollback", { timeout: 20000 }).catch(() => {});
    await shot(page, "pinned");
    await page.click("button:text('Resume following Git')");
    await page.fill("#reason", "browser test: follow Git again");
    await page.click("dialog[open] button:text('Resume')");
    await page.waitForSelector(".card >> text=following Git");
    check(true, "resume: the App follows Git again");

    // --- a read token does not see resume on a pinned App
    const api = (tok, method, path, body) => page.evaluate(async ([tok, method, path, body]) => (await fetch(path, {
      method, headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" }, body })).status, [tok, method, path, body]);
    check(await api(ADMIN, "POST", "/api/v1/apps/web/rollback", JSON.stringify({ to: FIRST, reason: "pin for the read check" })) === 200, "admin API rollback: 200");
    await page.click("button:text('Sign out')");
    await signIn(page, READ);
    await page.goto(`${BASE}/ui/apps/web`);
    await page.waitForSelector(".card >> text=pinned");
    check(await page.locator("button:text('Resume')").count() === 0, "read token: no resume button on a pinned App");
    check(await api(READ, "POST", "/api/v1/apps/web/resume", "{}") === 403, "read token: the API refuses resume (403)");

    // --- narrow window and dark mode
    const narrow = await browser.newContext({ viewport: { width: 390, height: 800 }, colorScheme: "dark" });
    const p2 = await narrow.newPage();
    await p2.goto(`${BASE}/ui/signin`);
    await p2.fill("#token", READ);
    await p2.click("button[type=submit]");
    await p2.waitForSelector("table.fleet a:text('web')");
    const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `narrow window (390 px): no horizontal scrolling (${overflow})`);
    const bg = await p2.evaluate(() => getComputedStyle(document.body).backgroundColor);
    check(bg === "rgb(13, 17, 23)", `dark mode by prefers-color-scheme (${bg})`);
    await axe(p2, "fleet (narrow, dark)");
    await shot(p2, "fleet-narrow-dark");
    await p2.goto(`${BASE}/ui/apps/web`);
    await p2.waitForSelector(".timeline li");
    await axe(p2, "timeline (narrow, dark)");
    await shot(p2, "timeline-narrow-dark");
    await p2.goto(`${BASE}/ui/apps/web/drift?since=1h`);
    await p2.waitForSelector("table.drift-objects");
    const driftOverflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(driftOverflow <= 0, `drift (narrow): no horizontal scrolling (${driftOverflow})`);
    await axe(p2, "drift (narrow, dark)");
    await shot(p2, "drift-narrow-dark");
    await narrow.close();

  }
  check(failures === 0, "no script errors in the pages");
  console.log("page timings (navigation to first screen, ms): " + timings.map(([n, ms]) => `${n} ${ms}`).join(", "));
  console.log(`screenshots: ${SHOTS}`);
} catch (e) {
  if (current) {
    await current.screenshot({ path: `${SHOTS}/failure.png` }).catch(() => {});
    console.error(`at ${current.url()}:\n${(await current.locator("main").innerText().catch(() => "")).slice(0, 3000)}`);
  }
  throw e;
} finally {
  await browser.close();
}
