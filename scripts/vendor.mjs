// Copies the browser runtime the demo needs from node_modules into assets/vendor/ (git-ignored),
// so the site serves every script and wasm file itself: no CDN. Writes assets/vendor/runtime.json
// ({file: {bytes, sha256}} for the onnxruntime-web files the demo's worker downloads and caches), so
// the page can state the real download and the cache is keyed by content.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
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
