// The demo's model work, off the page's main thread: downloads (kept in Cache Storage, keyed by the
// manifest's sha256), tokenizing, onnxruntime-web sessions, poster decoding, prediction, poster
// Grad-CAM and the sentence explanation. demo.js only sends messages and draws what comes back.
import * as ort from "../vendor/ort.wasm.min.mjs";
import { Tokenizer } from "../vendor/tokenizers.min.mjs";

const CACHE = "mm-genre-models";
const MAX_RUNS = 48; // sentence re-scorings per explanation, at most
const SENTENCE = /[^.!?]+[.!?]*\s*/g; // pipeline/predict.py splits sentences with the same pattern

let base = null; // {models, vendor}
let spec = null, runtime = null, textPart = "text_encoder";
const loads = {}; // part -> Promise (session or tokenizer)
let poster = null; // {id, pixels, dims, embedding?, features?}
let posterJob = null; // Promise of the poster being decoded
let current = 0; // the prediction that may keep running; an older one stops at its next yield

const post = (m, transfer = []) => postMessage(m, transfer);
const pause = () => new Promise((r) => setTimeout(r, 0));

// ---- downloads, cached by content -------------------------------------------------------------

async function sha256(bytes) {
  if (!crypto.subtle) return null; // not a secure context: no check possible
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function download(url, name, total) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${name}: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const bytes = new Uint8Array(total || Number(res.headers.get("content-length")) || 0);
  let got = 0, chunks = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (got + value.length <= bytes.length) bytes.set(value, got); else chunks.push(value);
    got += value.length;
    post({ type: "progress", file: name, got, total });
  }
  if (got === bytes.length && !chunks.length) return bytes;
  const all = new Uint8Array(got); // the size differed from what we expected
  all.set(bytes.subarray(0, Math.min(got, bytes.length)));
  let at = Math.min(got, bytes.length);
  for (const c of chunks) { all.set(c, at); at += c.length; }
  return all;
}

// A file listed with {bytes, sha256}: from Cache Storage if this version is there, else downloaded,
// checked and stored (older versions of the same file are deleted).
async function file(dir, name, info) {
  const url = new URL(name, dir).href;
  const key = `${url}?sha256=${info.sha256}`;
  const cache = await caches.open(CACHE);
  const hit = await cache.match(key);
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    post({ type: "progress", file: name, got: bytes.length, total: bytes.length, cached: true });
    return bytes;
  }
  const bytes = await download(url, name, info.bytes);
  const digest = await sha256(bytes);
  if (digest && digest !== info.sha256) throw new Error(`${name} does not match the manifest (sha256); reload the page`);
  await cache.put(key, new Response(bytes));
  for (const req of await cache.keys()) if (req.url.startsWith(url + "?") && req.url !== key) await cache.delete(req);
  return bytes;
}

async function isCached(dir, name, info) {
  const cache = await caches.open(CACHE);
  return !!(await cache.match(`${new URL(name, dir).href}?sha256=${info.sha256}`));
}

// JSON that may change (manifest): the network first, the last copy when offline.
async function json(url) {
  const cache = await caches.open(CACHE);
  try {
    const res = await fetch(url, { cache: "no-cache" });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    await cache.put(url, res.clone());
    return await res.json();
  } catch (e) {
    const hit = await cache.match(url);
    if (!hit) throw e;
    return hit.json();
  }
}

// What each part needs: [directory, file name, {bytes, sha256}]
function needs(part) {
  const m = base.models, files = spec.files;
  const entry = (name) => [m, name, files[name]];
  switch (part) {
    case "runtime": return Object.entries(runtime).map(([name, info]) => [base.vendor, name, info]);
    case "text": return [entry(spec[textPart].file), entry(spec[textPart].tokenizer)];
    case "head": return [entry(spec.fusion_head.file)];
    case "poster": return [entry(spec.poster_encoder.file)];
    case "cam": return spec.poster_cam ? [entry(spec.poster_cam.file)] : [];
  }
  return [];
}

async function init({ models, vendor, text }) {
  base = { models, vendor };
  [spec, runtime] = await Promise.all([json(new URL("manifest.json", models).href), json(new URL("runtime.json", vendor).href)]);
  // ?text=teacher (or any NAME with a "NAME_text_encoder" entry) runs that encoder instead
  textPart = text && spec[`${text}_text_encoder`] ? `${text}_text_encoder` : "text_encoder";
  const parts = {};
  for (const part of ["runtime", "text", "head", "poster", "cam"]) {
    parts[part] = [];
    for (const [dir, name, info] of needs(part)) parts[part].push({ name, bytes: info.bytes, cached: await isCached(dir, name, info) });
  }
  post({ type: "spec", spec, textPart, parts });
}

let ortReady = null;
function startRuntime() {
  ortReady ??= (async () => {
    const files = needs("runtime");
    const bytes = await Promise.all(files.map(([d, n, i]) => file(d, n, i)));
    const of = (ext) => bytes[files.findIndex(([, n]) => n.endsWith(ext))];
    const glue = of(".mjs"), binary = of(".wasm");
    const blob = (b, type) => URL.createObjectURL(new Blob([b], { type }));
    ort.env.wasm.wasmPaths = { mjs: blob(glue, "text/javascript") }; // kept: onnxruntime imports it
    ort.env.wasm.wasmBinary = binary;
    // threads only where the page is cross-origin isolated (GitHub Pages is not)
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  })();
  return ortReady;
}

function load(part) {
  loads[part] ??= (async () => {
    const files = needs(part);
    if (!files.length) return null;
    const bytes = await Promise.all(files.map(([d, n, i]) => file(d, n, i)));
    await startRuntime();
    if (part === "text") {
      const tokenizer = new Tokenizer(JSON.parse(new TextDecoder().decode(bytes[1])), {});
      return { session: await session(bytes[0]), tokenizer };
    }
    return session(bytes[0]);
  })().catch((e) => { delete loads[part]; throw e; });
  return loads[part];
}

const session = (bytes) => ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });

// one session run at a time (a new prediction may start while an explanation is between runs)
let queue = Promise.resolve();
function run(sess, feeds) {
  const next = queue.then(() => sess.run(feeds));
  queue = next.catch(() => {});
  return next;
}

// ---- text ---------------------------------------------------------------------------------------

// pipeline/text.py `encode`: the first max_chars characters, no padding; too long keeps the first
// max_len-1 tokens and [SEP]. (JS counts UTF-16 units, Python code points: they differ only past
// max_chars in text beyond the Basic Multilingual Plane, e.g. emoji.)
function encode(text, tok) {
  const { max_len: maxLen, max_chars: maxChars } = spec[textPart];
  let ids = tok.encode(text.slice(0, maxChars)).ids;
  if (ids.length > maxLen) ids = [...ids.slice(0, maxLen - 1), ids[ids.length - 1]];
  return ids;
}

// Embeddings of several texts. Dynamic int8 quantization computes one activation scale over the
// whole input, so padding or batching would change the outputs: one unpadded text per run unless
// the manifest says the encoder is batchable (fixed activation scales).
async function embedTexts(texts, text) {
  const { session: s, tokenizer } = text;
  const dim = spec[textPart].dim;
  const enc = texts.map((t) => encode(t, tokenizer));
  const batch = spec[textPart].batchable ? 8 : 1;
  const out = [];
  for (let at = 0; at < enc.length; at += batch) {
    const group = enc.slice(at, at + batch);
    const len = Math.max(...group.map((ids) => ids.length));
    const ids = new BigInt64Array(group.length * len), mask = new BigInt64Array(group.length * len);
    group.forEach((g, r) => g.forEach((id, c) => { ids[r * len + c] = BigInt(id); mask[r * len + c] = 1n; }));
    const shape = [group.length, len];
    const res = await run(s, { input_ids: new ort.Tensor("int64", ids, shape), attention_mask: new ort.Tensor("int64", mask, shape) });
    const e = res[spec[textPart].output].data;
    for (let r = 0; r < group.length; r++) out.push(e.slice(r * dim, (r + 1) * dim));
  }
  return out;
}

async function combine(head, textEmb, image) {
  const td = spec[textPart].dim, id = spec.poster_encoder.dim;
  const out = await run(head, {
    text: new ort.Tensor("float32", textEmb, [1, td]),
    image: new ort.Tensor("float32", image ?? new Float32Array(id), [1, id]),
    has_poster: new ort.Tensor("float32", Float32Array.of(image ? 1 : 0), [1, 1]),
  });
  return Float32Array.from(out[spec.fusion_head.output].data);
}

// The manifest's decision rule (same as `predict`): genres at or over their threshold for this input
// mode, else the single most probable. "thresholds" is a list (one for both modes) in older manifests.
function decide(probs, mode) {
  const t = Array.isArray(spec.thresholds) ? spec.thresholds : spec.thresholds[mode];
  const chosen = probs.map((p, i) => i).filter((i) => probs[i] >= t[i]);
  if (!chosen.length) chosen.push(probs.indexOf(Math.max(...probs)));
  return chosen.sort((a, b) => probs[b] - probs[a]);
}

// Not a plot? Fewer words than curation kept, or mostly words the vocabulary does not hold whole.
function caution(plot, tokenizer) {
  const words = plot.split(/\s+/).filter(Boolean);
  const minWords = spec.min_words ?? 6;
  if (words.length < minWords) return { kind: "short", words: words.length, min: minWords };
  const sample = words.slice(0, 400).map((w) => w.toLowerCase().replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, "")).filter(Boolean);
  if (!sample.length) return { kind: "oov", share: 1 };
  const unknown = sample.filter((w) => {
    const pieces = tokenizer.tokenize(w, { add_special_tokens: false });
    return pieces.length !== 1 || pieces[0] === "[UNK]";
  }).length;
  const share = unknown / sample.length;
  return share > 0.5 ? { kind: "oov", share } : null;
}

// ---- posters ------------------------------------------------------------------------------------

// Width and height from the file header, before anything is decoded (PNG, GIF, WebP, JPEG, BMP).
async function headerSize(blob) {
  const head = new DataView(await blob.slice(0, 65536).arrayBuffer());
  const u8 = (i) => head.getUint8(i);
  const ascii = (i, n) => String.fromCharCode(...Array.from({ length: n }, (_, k) => u8(i + k)));
  if (head.byteLength >= 24 && u8(0) === 0x89 && ascii(1, 3) === "PNG") return [head.getUint32(16), head.getUint32(20)];
  if (head.byteLength >= 10 && ascii(0, 3) === "GIF") return [head.getUint16(6, true), head.getUint16(8, true)];
  if (head.byteLength >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
    const kind = ascii(12, 4);
    if (kind === "VP8 ") return [head.getUint16(26, true) & 0x3fff, head.getUint16(28, true) & 0x3fff];
    if (kind === "VP8L") { const b = head.getUint32(21, true); return [(b & 0x3fff) + 1, ((b >> 14) & 0x3fff) + 1]; }
    if (kind === "VP8X") return [1 + (u8(24) | (u8(25) << 8) | (u8(26) << 16)), 1 + (u8(27) | (u8(28) << 8) | (u8(29) << 16))];
  }
  if (head.byteLength >= 26 && ascii(0, 2) === "BM") return [Math.abs(head.getInt32(18, true)), Math.abs(head.getInt32(22, true))];
  if (head.byteLength >= 4 && u8(0) === 0xff && u8(1) === 0xd8) {
    // walk the JPEG segments to a start-of-frame marker (the whole file if large metadata comes first)
    const all = blob.size > 65536 ? new DataView(await blob.arrayBuffer()) : head;
    for (let i = 2; i + 9 < all.byteLength;) {
      if (all.getUint8(i) !== 0xff) { i++; continue; }
      const marker = all.getUint8(i + 1);
      if (marker === 0xff) { i++; continue; }
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [all.getUint16(i + 7), all.getUint16(i + 5)];
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      i += 2 + all.getUint16(i + 2);
    }
  }
  throw new Error("this is not a JPEG, PNG, WebP, GIF or BMP image, or its header is damaged");
}

// pipeline/image.py `load_image`, in the browser: EXIF orientation, alpha over white (the canvas's
// source-over onto white is round(c·a/255) + 255 − a), integer k×k block mean for large images.
// Pixels are read in bands, so memory stays near the decoded bitmap's size.
async function decodePoster(blob) {
  const pre = spec.poster_encoder.preprocessing;
  const [w0, h0] = await headerSize(blob);
  const maxPixels = pre.max_pixels ?? 40e6;
  if (w0 * h0 > maxPixels) throw new Error(`The image is ${w0}×${h0} (${(w0 * h0 / 1e6).toFixed(1)} megapixels); the limit is ${maxPixels / 1e6} megapixels.`);
  let bmp;
  try {
    bmp = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error("The image could not be decoded.");
  }
  const W = bmp.width, H = bmp.height;
  const k = Math.max(1, Math.ceil(Math.max(W, H) / pre.max_side));
  const w = Math.ceil(W / k), h = Math.ceil(H / k);
  const sums = new Float64Array(3 * w * h);
  const band = k * Math.max(1, Math.floor(2 ** 20 / (W * k)));
  const canvas = new OffscreenCanvas(W, Math.min(band, H));
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = false;
  for (let y0 = 0; y0 < H; y0 += band) {
    const rows = Math.min(band, H - y0);
    ctx.globalCompositeOperation = "copy";
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, W, rows);
    ctx.globalCompositeOperation = "source-over";
    ctx.drawImage(bmp, 0, y0, W, rows, 0, 0, W, rows);
    const rgba = ctx.getImageData(0, 0, W, rows).data;
    for (let y = 0; y < rows; y++) {
      const row = Math.floor((y0 + y) / k) * w;
      for (let x = 0; x < W; x++) {
        const s = 3 * (row + Math.floor(x / k)), p = 4 * (y * W + x);
        sums[s] += rgba[p]; sums[s + 1] += rgba[p + 1]; sums[s + 2] += rgba[p + 2];
      }
    }
  }
  bmp.close();
  const n = w * h, pixels = new Float32Array(3 * n), rgba = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    const y = Math.floor(i / w), x = i % w;
    const count = Math.min(k, H - y * k) * Math.min(k, W - x * k);
    for (let c = 0; c < 3; c++) {
      const v = Math.floor((2 * sums[3 * i + c] + count) / (2 * count)); // rounded half up, as image.py
      pixels[c * n + i] = v;
      rgba[4 * i + c] = v;
    }
    rgba[4 * i + 3] = 255;
  }
  return { pixels, rgba, dims: [1, 3, h, w], width: W, height: H, reduced: k > 1 };
}

async function setPoster({ id, blob }) {
  poster = null;
  const job = (async () => {
    try {
      const p = await decodePoster(blob);
      if (posterJob !== job) return;
      poster = { id, pixels: p.pixels, rgba: p.rgba, dims: p.dims };
      const preview = new ImageData(p.rgba.slice(), p.dims[3], p.dims[2]);
      post({ type: "poster", id, width: p.width, height: p.height, w: p.dims[3], h: p.dims[2], reduced: p.reduced, preview }, [preview.data.buffer]);
    } catch (e) {
      if (posterJob === job) post({ type: "poster-error", id, message: e.message });
    }
  })();
  posterJob = job;
  load("poster").catch(() => {}); // the poster model only when a poster is given
  await job;
}

function clearPoster() {
  poster = null;
  posterJob = null;
}

async function posterOutputs() {
  if (!poster) return null;
  if (!poster.embedding) {
    const s = await load("poster");
    const out = await run(s, { image: new ort.Tensor("float32", poster.pixels, poster.dims) });
    poster.embedding = Float32Array.from(out[spec.poster_encoder.output].data);
    poster.features = out.features ?? null;
  }
  return poster;
}

// ---- prediction ---------------------------------------------------------------------------------

async function predict({ id, plot, withPoster }) {
  current = id;
  const t0 = performance.now();
  if (withPoster && posterJob) await posterJob; // a poster still decoding is waited for
  const usePoster = withPoster && !!poster;
  const mode = usePoster ? "plot+poster" : "plot";
  const [text, head] = await Promise.all([load("text"), load("head"), usePoster ? load("poster") : null]);
  const tReady = performance.now();
  const [textEmb] = await embedTexts([plot], text);
  const p = usePoster ? await posterOutputs() : null;
  const probs = await combine(head, textEmb, p?.embedding ?? null);
  const genres = decide(Array.from(probs), mode);
  post({ type: "genres", id, mode, probs: Array.from(probs), genres, caution: caution(plot, text.tokenizer), loadMs: tReady - t0, runMs: performance.now() - tReady, textPart });
  if (current !== id) return;
  if (usePoster && p.features && spec.poster_cam) await cam(id, p, textEmb, genres);
  await explain(id, plot, text, head, textEmb, p?.embedding ?? null, probs);
}

const JET = (v) => [1.5 - Math.abs(4 * v - 3), 1.5 - Math.abs(4 * v - 2), 1.5 - Math.abs(4 * v - 1)].map((c) => 255 * Math.min(1, Math.max(0, c)));

// Each map scaled to 0..1 (as pytorch-grad-cam does), coloured and stretched over the whole poster
// (the model saw the whole poster resized), blended onto it: finished pixels for the page to show.
function overlay(p, raw, h, w) {
  const lo = Math.min(...raw), hi = Math.max(...raw) - lo;
  const small = new OffscreenCanvas(w, h);
  const heat = new ImageData(w, h);
  raw.forEach((v, i) => heat.data.set([...JET((v - lo) / (1e-7 + hi)), 255], 4 * i));
  small.getContext("2d").putImageData(heat, 0, 0);
  const [, , H, W] = p.dims;
  const canvas = new OffscreenCanvas(W, H);
  const ctx = canvas.getContext("2d");
  ctx.putImageData(new ImageData(p.rgba.slice(), W, H), 0, 0);
  ctx.globalAlpha = 0.45;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, W, H);
  return ctx.getImageData(0, 0, W, H);
}

async function cam(id, p, textEmb, genres) {
  try {
    const s = await load("cam");
    const out = await run(s, { features: p.features, text: new ort.Tensor("float32", textEmb, [1, spec[textPart].dim]) });
    const maps = out[spec.poster_cam.output], [, , h, w] = maps.dims;
    const shown = genres.slice(0, 6);
    const raw = shown.map((g) => Array.from(maps.data.subarray(g * h * w, (g + 1) * h * w)));
    const overlays = raw.map((m) => overlay(p, m, h, w));
    post({ type: "cam", id, genres: shown, raw, dims: [h, w], overlays }, overlays.map((o) => o.data.buffer));
  } catch (e) {
    post({ type: "cam", id, error: e.message });
  }
}

// Leave-one-sentence-out, as pipeline/predict.py `sentence_importance`. A sentence that starts past
// the encoder's window (max_len tokens, max_chars characters) cannot change the input the encoder
// sees, so its drop is exactly 0 without a run. The rest run one at a time with a yield in
// between, progressively, at most MAX_RUNS.
async function explain(id, plot, text, head, textEmb, image, probs) {
  const parts = plot.match(SENTENCE) ?? [plot];
  const t0 = performance.now();
  if (parts.length < 2) { post({ type: "why-done", id, parts, runs: 0, ms: 0 }); return; }
  const { max_len: maxLen, max_chars: maxChars } = spec[textPart];
  const prefixTokens = (i) => text.tokenizer.encode(parts.slice(0, i).join(""), { add_special_tokens: false }).ids.length;
  let lo = 1, hi = parts.length; // first i whose prefix already fills the window
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const prefix = parts.slice(0, mid).join("");
    if (prefix.length >= maxChars || prefixTokens(mid) >= maxLen - 2) hi = mid; else lo = mid + 1;
  }
  const inWindow = Math.min(lo, MAX_RUNS);
  post({ type: "why-start", id, parts, toRun: inWindow, window: lo });
  // sentences from `lo` on are past the window: their drops are exact zeros, sent once (why-start)
  const batch = spec[textPart].batchable ? 8 : 1;
  for (let i = 0; i < lo; i += batch) {
    await pause();
    if (current !== id) return;
    const group = Array.from({ length: Math.min(batch, lo - i) }, (_, j) => i + j);
    const rests = group.map((s) => [...parts.slice(0, s), ...parts.slice(s + 1)].join("").trim());
    const todo = group.filter((s, j) => s < inWindow && rests[j]);
    const embs = todo.length ? await embedTexts(todo.map((s) => rests[group.indexOf(s)]), text) : [];
    if (current !== id) return;
    for (const s of group) {
      let drops = new Array(probs.length).fill(0); // nothing left without this sentence
      if (s >= inWindow) drops = null; // over the cap: not computed
      const at = todo.indexOf(s);
      if (at >= 0) {
        const without = await combine(head, embs[at], image);
        drops = Array.from(probs, (p, g) => p - without[g]);
      }
      post({ type: "why", id, i: s, drops });
    }
  }
  post({ type: "why-done", id, parts, runs: inWindow, ms: performance.now() - t0 });
}

const handlers = {
  init,
  warm: async ({ parts }) => { await Promise.all(parts.map(load)); },
  poster: setPoster,
  "clear-poster": clearPoster,
  predict,
};

self.onmessage = async ({ data }) => {
  try {
    await handlers[data.type](data);
  } catch (e) {
    post({ type: "error", id: data.id, during: data.type, message: e.message ?? String(e) });
  }
};
