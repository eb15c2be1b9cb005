// Unit tests of ui/src/drift.ts (no browser, no agent): how the Drift page joins the drift
// category's events. Run by scripts/build-ui.sh: node --test ui/tests/drift.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const dir = mkdtempSync(join(tmpdir(), "reckon-ui-test-"));
const out = join(dir, "drift.mjs");
await build({ entryPoints: [join(dirname(fileURLToPath(import.meta.url)), "../src/drift.ts")], bundle: true, format: "esm", outfile: out, logLevel: "error" });
const { joinDrifts } = await import(pathToFileURL(out).href);
rmSync(dir, { recursive: true });

const row = (seq, object, event) => ({ seq, time: `2026-12-07T00:00:${String(seq).padStart(2, "0")}Z`, app: "web", actor: null, kind: Object.keys(event)[0], category: "drift", object, revision: null, summary: "", event, hash: "" });
const detected = (seq, object, path = "/data/n") => row(seq, object, { DriftDetected: { object: {}, diffs: [{ path, expected: "1", actual: "2" }], managers: [{ manager: "kubectl-edit", operation: "Update", fields: [path], time: null }] } });
const attributed = (seq, object, drift_seq, users) => row(seq, object, { DriftAttributed: { object: {}, drift_seq, writers: users.map((username) => ({ username })), unexplained: [] } });

test("attributions join their detection by drift_seq; no attribution is null, none matched is []", () => {
  const ds = joinDrifts([
    attributed(4, "ConfigMap/ns/a", 1, ["ann", "ann", "bob"]),
    detected(1, "ConfigMap/ns/a"),
    detected(2, "ConfigMap/ns/b"),
    detected(3, "ConfigMap/ns/c"),
    attributed(5, "ConfigMap/ns/c", 3, []),
  ]);
  assert.deepEqual(ds.map((d) => [d.seq, d.writers]), [[3, []], [2, null], [1, ["ann", "bob"]]]);
  assert.deepEqual(ds[2].managers, ["kubectl-edit (Update)"]);
});

test("a correction ends the earlier detections of its object only; a supersession says so", () => {
  const ds = joinDrifts([
    detected(1, "ConfigMap/ns/a"),
    detected(2, "ConfigMap/ns/b"),
    row(3, "ConfigMap/ns/a", { DriftCorrected: { revision: "r", object: {}, fields: ["/data/n"] } }),
    detected(4, "ConfigMap/ns/a"),
    row(5, "ConfigMap/ns/b", { DriftSuperseded: { revision: "r", object: {}, fields: ["/data/n"] } }),
  ]);
  assert.deepEqual(ds.map((d) => [d.seq, d.ended]), [[4, null], [2, "superseded"], [1, "put back"]]);
});

test("a write known only from the audit log (no drift_seq) is a drift of its own, attributed", () => {
  const ds = joinDrifts([attributed(7, "ConfigMap/ns/made-by-hand", null, ["carol"])]);
  assert.equal(ds.length, 1);
  assert.deepEqual([ds[0].object, ds[0].writers, ds[0].fields], ["ConfigMap/ns/made-by-hand", ["carol"], []]);
});

test("an attribution of a detection outside the range read is dropped, not invented", () => {
  assert.deepEqual(joinDrifts([attributed(9, "ConfigMap/ns/a", 3, ["ann"])]), []);
});
