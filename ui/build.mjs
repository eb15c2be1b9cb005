// Builds the UI into dist/ (committed, embedded in the agent by src/ui.rs). Deterministic:
// one bundle, fixed names, no timestamps or absolute paths, so the same sources and lockfile
// give the same bytes (scripts/build-ui.sh --check compares them).
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = process.argv[2] ?? "dist";
mkdirSync(`${out}/assets`, { recursive: true });
await esbuild.build({
  entryPoints: { app: "src/main.tsx" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: `${out}/assets`,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
esbuild.buildSync({
  entryPoints: ["src/app.css"],
  bundle: true,
  minify: true,
  outfile: `${out}/assets/app.css`,
  logLevel: "warning",
});
copyFileSync("src/index.html", `${out}/index.html`);
