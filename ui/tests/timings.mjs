// Page timings on a large store (issue 21: "every page renders its first screen within 300 ms
// of the API answering"): the system's headless Chromium, driven by playwright-core, loads each
// view of the UI served by an agent over the store (tests/bench/ui.rs starts it) several times,
// and reads the page's own clock (Performance API) for
//   api     from the first request to /api/v1 until the last answer before the first screen
//           (several requests, in parallel or one after another, as the view makes them),
//   render  from that last answer to the first animation frame in which the view's first
//           screen is in the document (JSON parsing, the join in the browser, rendering),
//   total   from navigation start to that frame (page, script, API and render).
// Prints one line per view (median and worst of the runs) and a JSON summary; exits non-zero
// when a view's worst render exceeds UI_RENDER_BUDGET_MS (default 300).
import { chromium } from "playwright-core";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const BASE = env("UI_BASE"), TOKEN = env("UI_TOKEN"), APP = env("UI_APP");
const RUNS = Number(process.env.UI_RUNS ?? 5);
const BUDGET = Number(process.env.UI_RENDER_BUDGET_MS ?? 300);
// UI_VIEWS: a comma-separated subset of the views below, by name (default: all).
const ONLY = process.env.UI_VIEWS ? new Set(process.env.UI_VIEWS.split(",").map((v) => v.trim())) : null;

async function get(path) {
  const res = await fetch(`${BASE}/api/v1${path}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

// What the views name: an object of the App with the most drift history there is, two recorded
// revisions (the applied one and an older one), the range that holds the App's drifts.
const status = await get(`/apps/${encodeURIComponent(APP)}`);
const revs = (await get(`/apps/${encodeURIComponent(APP)}/revisions?limit=200`)).revisions.filter((r) => r.digest);
const drift = (await get(`/events?app=${encodeURIComponent(APP)}&kind=drift&limit=1`)).events[0];
if (!drift || revs.length < 2 || !status.applied_revision) throw new Error(`the store has too little history for ${APP}`);
const object = drift.object;
const older = revs.find((r) => r.sha !== status.applied_revision).sha;
const enc = encodeURIComponent(APP);
const views = [
  ["fleet", "/ui/", "table.fleet tbody tr"],
  ["timeline", `/ui/apps/${enc}`, ".timeline li"],
  ["timeline ?kind=drift", `/ui/apps/${enc}?kind=drift`, ".timeline li"],
  ["revisions", `/ui/apps/${enc}/revisions`, "main table tbody tr"],
  ["revision", `/ui/apps/${enc}/revisions/${status.applied_revision}`, "dl.kv"],
  ["revision diff", `/ui/apps/${enc}/revisions/${status.applied_revision}?against=${older}`, ".card.diff"],
  ["object (blame)", `/ui/apps/${enc}/object?object=${encodeURIComponent(object)}`, "tr[data-field]"],
  ["drift (30 days)", `/ui/apps/${enc}/drift?since=30d`, "table.drift-objects tbody tr"],
  ["integrity", "/ui/integrity", "[data-section=verify]"],
];

const browser = await chromium.launch({
  executablePath: process.env.UI_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const results = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  await page.goto(`${BASE}/ui/signin`);
  await page.fill("#token", TOKEN);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui/`);

  for (const [name, path, selector] of views.filter(([n]) => !ONLY || ONLY.has(n))) {
    const runs = [];
    // One more than measured: the first load warms the browser's and the agent's caches alike.
    for (let i = 0; i <= RUNS; i++) {
      await page.goto(`${BASE}${path}`, { waitUntil: "commit" });
      const handle = await page.waitForFunction((sel) => (document.querySelector(sel) ? performance.now() : false),
        selector, { polling: "raf", timeout: 120000 });
      const screen = await handle.jsonValue();
      const calls = await page.evaluate(() => performance.getEntriesByType("resource")
        .filter((e) => new URL(e.name).pathname.startsWith("/api/v1/"))
        .map((e) => ({ url: e.name, start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize })));
      const before = calls.filter((c) => c.end <= screen);
      if (before.length === 0) throw new Error(`${name}: no API answer before the first screen`);
      const first = Math.min(...before.map((c) => c.start)), last = Math.max(...before.map((c) => c.end));
      if (i > 0) runs.push({ api: last - first, render: screen - last, total: screen, calls: before.length, bytes: before.reduce((n, c) => n + c.bytes, 0) });
    }
    const med = (k) => { const v = runs.map((r) => r[k]).sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
    const max = (k) => Math.max(...runs.map((r) => r[k]));
    const r = { view: name, path, api_ms: med("api"), api_max_ms: max("api"), render_ms: med("render"), render_max_ms: max("render"),
      total_ms: med("total"), calls: runs[0].calls, kib: Math.round(runs[0].bytes / 1024) };
    results.push(r);
    console.log(`${name.padEnd(22)} api ${r.api_ms.toFixed(0).padStart(5)} ms (max ${r.api_max_ms.toFixed(0)})  render after api ${r.render_ms.toFixed(0).padStart(4)} ms (max ${r.render_max_ms.toFixed(0)})  total ${r.total_ms.toFixed(0).padStart(5)} ms  ${r.calls} call(s), ${r.kib} KiB`);
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ app: APP, runs: RUNS, budget_ms: BUDGET, views: results }));
const over = results.filter((r) => r.render_max_ms > BUDGET);
if (over.length) {
  console.error(`over the ${BUDGET} ms render budget: ${over.map((r) => `${r.view} (${r.render_max_ms.toFixed(0)} ms)`).join(", ")}`);
  process.exit(1);
}
