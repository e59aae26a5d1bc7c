// Copies the browser runtime the demo needs from node_modules into assets/vendor/ (git-ignored),
// so the site serves every script and wasm file itself: no CDN. Writes
//  - assets/vendor/runtime.json: {file: {bytes, sha256}} for the onnxruntime-web files the demo's
//    worker downloads and caches, so the page can state the real download and the cache is keyed by content;
//  - assets/vendor/shell.js: the files sw.js keeps for offline use and a version made from their content
//    and the sources of the page, so a deploy that changes any of them installs a new service worker
//    (browsers compare imported scripts byte for byte) and drops the old shell.
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

// The shell: what the page needs offline besides the models (downloads.js keeps those).
const shell = [
  "./", "assets/css/site.css", "assets/images/favicon.svg", "assets/models/manifest.json",
  "assets/vendor/ort.wasm.min.mjs", "assets/vendor/tokenizers.min.mjs", "assets/vendor/runtime.json",
  ...readdirSync(join(root, "assets/js")).filter((f) => f.endsWith(".js")).sort().map((f) => `assets/js/${f}`),
];
const sources = (dir) => readdirSync(join(root, dir)).sort().flatMap((f) => {
  const path = join(dir, f);
  return statSync(join(root, path)).isDirectory() ? sources(path) : [path];
});
const hash = createHash("sha256");
for (const path of [...shell.slice(1), "index.md", "_config.yml", ...["_layouts", "_includes", "_data"].flatMap(sources)]) {
  hash.update(`${path}\0`).update(readFileSync(join(root, path)));
}
const version = hash.digest("hex").slice(0, 16);
writeFileSync(join(out, "shell.js"), `// written by scripts/vendor.mjs\nself.SHELL = ${JSON.stringify({ version, files: shell })};\n`);
console.log(`vendor: wrote assets/vendor/shell.js (shell ${version})`);
