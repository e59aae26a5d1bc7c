// Copies the browser runtime the demo needs from node_modules into assets/vendor/ (git-ignored),
// so the site serves every script and wasm file itself: no CDN. Writes
//  - assets/vendor/runtime.json: {file: {bytes, sha256}} for the onnxruntime-web files the demo's
//    worker downloads and caches, so the page can state the real download and the cache is keyed by content;
//  - assets/vendor/shell.js: what sw.js keeps for offline reading (the shell: the pages, css, js, the
//    site's figures and images, the models' manifest; never a model or the wasm runtime, which
//    downloads.js keeps), each file's sha256 (Subresource Integrity: a version's shell holds that version's
//    bytes or is not installed) and a version made from the shell's content and the sources of the pages,
//    so a deploy that changes any of them installs a new service worker (browsers compare imported
//    scripts byte for byte) and drops the old shell.
// Run before `jekyll build` (make site / serve, CI's build job, tests/site.py).
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "assets", "vendor");
const files = {
  "onnxruntime-web/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
  "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
  "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
  "@huggingface/tokenizers/dist/tokenizers.min.mjs": "tokenizers.min.mjs",
  "plotly.js-dist-min/plotly.min.js": "plotly.min.js", // the interactive topic map
};
mkdirSync(out, { recursive: true });
for (const [from, to] of Object.entries(files)) {
  copyFileSync(join(root, "node_modules", from), join(out, to));
  console.log(`vendor: ${from} -> assets/vendor/${to}`);
}
const runtime = {};
for (const name of ["ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) {
  const bytes = readFileSync(join(out, name));
  runtime[name] = { bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
}
writeFileSync(join(out, "runtime.json"), JSON.stringify(runtime, null, 1) + "\n");
console.log("vendor: wrote assets/vendor/runtime.json");

// The shell: what a reader needs offline besides the models (downloads.js keeps those).
const walk = (dir) => readdirSync(join(root, dir)).sort().flatMap((f) => {
  const path = `${dir}/${f}`;
  return statSync(join(root, path)).isDirectory() ? walk(path) : [path];
});

// The site's pages: Markdown or HTML files with front matter (Jekyll renders those and copies the rest
// as is) at the root or one folder down, minus what _config.yml excludes. A page's URL (relative to
// the site's base): its permalink, else its folder for an index, else NAME.html.
function pages() {
  const config = readFileSync(join(root, "_config.yml"), "utf8").split("\n");
  const at = config.findIndex((l) => /^exclude:\s*$/.test(l));
  const excluded = new Set();
  for (let i = at + 1; at >= 0 && i < config.length && /^\s+-\s/.test(config[i]); i++) {
    excluded.add(config[i].replace(/^\s+-\s+/, "").replace(/^["']|["']\s*$/g, "").trim().replace(/\/$/, ""));
  }
  const skip = (name) => name.startsWith("_") || name.startsWith(".") || excluded.has(name) || ["assets", "node_modules"].includes(name);
  const candidates = [];
  for (const name of readdirSync(root).sort()) {
    if (skip(name)) continue;
    if (statSync(join(root, name)).isDirectory()) {
      for (const f of readdirSync(join(root, name)).sort()) if (!skip(f) && !excluded.has(`${name}/${f}`)) candidates.push(`${name}/${f}`);
    } else candidates.push(name);
  }
  const found = [];
  for (const source of candidates) {
    if (!/\.(md|markdown|html)$/.test(source) || statSync(join(root, source)).isDirectory()) continue;
    const text = readFileSync(join(root, source), "utf8");
    const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text);
    if (!front) continue;
    const permalink = /^permalink:\s*["']?([^"'\n]+?)["']?\s*$/m.exec(front[1])?.[1];
    const dir = source.includes("/") ? source.slice(0, source.lastIndexOf("/") + 1) : "";
    const stem = source.slice(dir.length).replace(/\.[^.]+$/, "");
    const url = permalink ? permalink.replace(/^\//, "") : stem === "index" ? dir : `${dir}${stem}.html`;
    found.push({ source, url: url || "./" });
  }
  return found.sort((a, b) => (a.url === "./" ? -1 : b.url === "./" ? 1 : a.url.localeCompare(b.url)));
}

const site = pages();
// figures: every file of assets/figures but the interactive pages (topics_map.html needs plotly.min.js,
// 4.8 MB: kept out of every reader's shell; its static figure topic_map.png is in it)
const figures = walk("assets/figures").filter((f) => !f.endsWith(".html"));
const kept = [
  ...walk("assets/css"), ...walk("assets/images"), ...figures,
  ...walk("assets/js").filter((f) => /\.(m?js|json)$/.test(f)), // the scripts and what they import (manifest_schema.json)
  "assets/vendor/ort.wasm.min.mjs", "assets/vendor/tokenizers.min.mjs", "assets/vendor/runtime.json",
  "assets/models/manifest.json", // what the demo reads to know its files, offline too: no model's bytes
];
const never = /^assets\/models\/(?!manifest\.json$)|\.(onnx|wasm|weights)$/;
const leaked = kept.filter((f) => never.test(f));
if (leaked.length) throw new Error(`the shell must not hold models or the wasm runtime: ${leaked.join(", ")}`);
const integrity = {};
for (const f of kept) integrity[f] = `sha256-${createHash("sha256").update(readFileSync(join(root, f))).digest("base64")}`;
const hash = createHash("sha256");
const sources = [...kept, ...site.map((p) => p.source), "_config.yml", ...["_layouts", "_includes", "_data"].flatMap(walk)];
for (const path of sources) hash.update(`${path}\0`).update(readFileSync(join(root, path)));
const version = hash.digest("hex").slice(0, 16);
// pages first: they are rendered by Jekyll after this runs, so they carry no digest
const shell = { version, files: [...site.map((p) => p.url), ...kept], integrity };
writeFileSync(join(out, "shell.js"), `// written by scripts/vendor.mjs\nself.SHELL = ${JSON.stringify(shell)};\n`);
console.log(`vendor: wrote assets/vendor/shell.js (shell ${version}: ${site.length} pages, ${kept.length} files)`);
