// In-browser genre prediction: the exported ONNX models run in onnxruntime-web (wasm), tokenized
// with @huggingface/tokenizers from the same tokenizer.json that `python -m pipeline predict` uses.
// Everything is fetched from this site; nothing leaves the visitor's machine.
import * as ort from "../vendor/ort.wasm.min.mjs";
import { Tokenizer } from "../vendor/tokenizers.min.mjs";

const app = document.getElementById("demo-app");
const $ = (id) => document.getElementById(id);
const modelsUrl = new URL(app.dataset.models, location.href);
// An absolute URL: a relative one would resolve against the ort module, not this page.
ort.env.wasm.wasmPaths = new URL(app.dataset.vendor, location.href).href;
// GitHub Pages cannot send cross-origin isolation headers, so threads are only used where allowed.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

let models = null; // {spec, tokenizer, text, poster, head}
let loading = null;
let poster = null; // {data: Float32Array, dims}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function fetchWithProgress(name, done, total) {
  const res = await fetch(new URL(name, modelsUrl));
  if (!res.ok) throw new Error(`${name}: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    chunks.push(value);
    got += value.length;
    showProgress(done + got, total);
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

function showProgress(got, total) {
  const mb = (n) => (n / 1048576).toFixed(1);
  $("progress").value = total ? got / total : 0;
  $("progress-text").textContent = `Downloading models: ${mb(got)} of ${mb(total)} MB`;
}

async function loadModels() {
  const spec = await (await fetch(new URL("manifest.json", modelsUrl))).json();
  const parts = ["text_encoder", "poster_encoder", "fusion_head"];
  const total = parts.reduce((n, p) => n + spec.files[spec[p].file].bytes, 0);
  $("loading").hidden = false;
  const tokenizerJson = await (await fetch(new URL(spec.text_encoder.tokenizer, modelsUrl))).json();
  const sessions = {};
  let done = 0;
  for (const p of parts) {
    const bytes = await fetchWithProgress(spec[p].file, done, total);
    done += bytes.length;
    sessions[p] = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  }
  $("loading").hidden = true;
  return { spec, tokenizer: new Tokenizer(tokenizerJson, {}), text: sessions.text_encoder,
           poster: sessions.poster_encoder, head: sessions.fusion_head };
}

function ensureModels() {
  loading ??= loadModels().then((m) => (models = m)).catch((e) => {
    loading = null;
    $("loading").hidden = true;
    throw e;
  });
  return loading;
}

// Same rule as pipeline/text.py `encode`: the first max_chars characters, no padding; too long
// keeps the first max_len-1 tokens and [SEP]. (JS strings count UTF-16 units, Python code points:
// they differ only for text beyond the Basic Multilingual Plane, e.g. emoji, past max_chars.)
function encode(text) {
  const { max_len: maxLen, max_chars: maxChars } = models.spec.text_encoder;
  let ids = models.tokenizer.encode(text.slice(0, maxChars)).ids;
  if (ids.length > maxLen) ids = [...ids.slice(0, maxLen - 1), ids[ids.length - 1]];
  return ids;
}

async function embedPlot(text) {
  const ids = encode(text);
  const shape = [1, ids.length];
  const out = await models.text.run({
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), shape),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), shape),
  });
  return out.embedding.data;
}

async function embedPoster(p) {
  const out = await models.poster.run({ image: new ort.Tensor("float32", p.data, p.dims) });
  return out.embedding.data;
}

async function probabilities(textEmb, posterEmb) {
  const dim = models.spec.text_encoder.dim;
  const out = await models.head.run({
    text: new ort.Tensor("float32", textEmb, [1, dim]),
    image: new ort.Tensor("float32", posterEmb ?? new Float32Array(1280), [1, 1280]),
    has_poster: new ort.Tensor("float32", Float32Array.of(posterEmb ? 1 : 0), [1, 1]),
  });
  return Array.from(out.probabilities.data);
}

// Decoded RGB pixels, channels first, 0..255, as pipeline/image.py `load_image` gives them.
async function readPoster(file) {
  const pre = models?.spec.poster_encoder.preprocessing ?? { max_bytes: 20 * 1048576, max_side: 1024 };
  if (!file.type.startsWith("image/")) throw new Error(`"${file.name}" is not an image file.`);
  if (file.size > pre.max_bytes) throw new Error(`The image is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${pre.max_bytes / 1048576} MB.`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`"${file.name}" could not be decoded as an image.`);
  }
  const scale = Math.min(1, pre.max_side / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(1, Math.round(bitmap.width * scale)), h = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const data = new Float32Array(3 * w * h);
  for (let i = 0, n = w * h; i < n; i++) {
    data[i] = rgba[4 * i];
    data[n + i] = rgba[4 * i + 1];
    data[2 * n + i] = rgba[4 * i + 2];
  }
  return { data, dims: [1, 3, h, w], resized: scale < 1, width: bitmap.width, height: bitmap.height };
}

function row(label, p, pass) {
  const li = document.createElement("li");
  li.dataset.genre = label;
  li.dataset.prob = String(p);
  li.classList.toggle("pass", pass);
  li.innerHTML = `<span class="name"></span><span class="bar" aria-hidden="true"><i></i></span><span class="p"></span>`;
  li.querySelector(".name").textContent = label;
  li.querySelector(".bar i").style.width = `${(100 * p).toFixed(1)}%`;
  li.querySelector(".p").textContent = `${(100 * p).toFixed(1)}%`;
  return li;
}

function render(probs) {
  const { labels, thresholds } = models.spec;
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]);
  $("top3").replaceChildren(...order.slice(0, 3).map((i) => row(labels[i], probs[i], probs[i] >= thresholds[i])));
  $("all-genres").replaceChildren(...order.map((i) => row(labels[i], probs[i], probs[i] >= thresholds[i])));
  $("demo-results").hidden = false;
}

// Leave-one-sentence-out occlusion, as pipeline/predict.py `sentence_importance`: how far each top
// genre's probability falls when one sentence is left out. Same splitting pattern as Python.
const SENTENCE = /[^.!?]+[.!?]*\s*/g;

async function explain(plot, posterEmb, probs, top) {
  const parts = plot.match(SENTENCE) ?? [plot];
  const drops = [];
  for (let i = 0; i < parts.length; i++) {
    const rest = [...parts.slice(0, i), ...parts.slice(i + 1)].join("").trim();
    if (parts.length < 2 || !rest) { drops.push(top.map(() => 0)); continue; }
    const without = await probabilities(await embedPlot(rest), posterEmb);
    drops.push(top.map((g) => probs[g] - without[g]));
  }
  return { parts, drops };
}

function showWhy(why, top, k) {
  const { labels } = models.spec;
  const max = Math.max(1e-6, ...why.drops.map((d) => d[k]));
  const text = $("why-text");
  text.replaceChildren(...why.parts.map((part, i) => {
    const d = why.drops[i][k];
    const el = document.createElement(d > 0 ? "mark" : "span");
    el.textContent = part;
    el.dataset.drop = String(d);
    if (d > 0) {
      el.className = "why";
      el.style.backgroundColor = `rgba(36, 84, 166, ${(0.12 + 0.5 * d / max).toFixed(3)})`;
      el.title = `without this sentence, ${labels[top[k]]} falls by ${(100 * d).toFixed(1)} points`;
    }
    return el;
  }));
  for (const [j, b] of [...$("why-genres").children].entries()) b.setAttribute("aria-pressed", String(j === k));
}

async function renderWhy(plot, posterEmb, probs) {
  const top = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]).slice(0, 3);
  $("why").hidden = true;
  const why = await explain(plot, posterEmb, probs, top);
  if (why.parts.length < 2) return;
  app.dataset.why = JSON.stringify({ sentences: why.parts, genres: top.map((g) => models.spec.labels[g]), drops: why.drops });
  $("why-genres").replaceChildren(...top.map((g, k) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary";
    b.textContent = models.spec.labels[g];
    b.addEventListener("click", () => showWhy(why, top, k));
    return b;
  }));
  showWhy(why, top, 0);
  $("why").hidden = false;
}

async function predict() {
  const plot = $("plot").value.trim();
  if (!plot) {
    status("Please paste a plot first: a sentence or more about the movie.", true);
    $("plot").focus();
    return;
  }
  $("predict").disabled = true;
  try {
    status(models ? "Predicting…" : "Loading the models (once per visit)…");
    await ensureModels();
    status("Predicting…");
    const t0 = performance.now();
    const textEmb = await embedPlot(plot);
    const posterEmb = poster ? await embedPoster(poster) : null;
    const probs = await probabilities(textEmb, posterEmb);
    const ms = performance.now() - t0;
    render(probs);
    app.dataset.lastMs = ms.toFixed(2);
    $("timing").textContent = `Inference took ${ms.toFixed(0)} ms in your browser${poster ? " (plot + poster)" : " (plot only)"}.`;
    status("");
    await renderWhy(plot, posterEmb, probs);
  } catch (e) {
    status(`Something went wrong: ${e.message}`, true);
  } finally {
    $("predict").disabled = false;
  }
}

async function setPoster(file) {
  clearPoster();
  if (!file) return;
  try {
    poster = await readPoster(file);
    $("poster-preview").src = URL.createObjectURL(file);
    $("poster-preview").hidden = false;
    $("clear-poster").hidden = false;
    status(poster.resized ? `Large image (${poster.width}×${poster.height}) downscaled before inference.` : "");
  } catch (e) {
    $("poster").value = "";
    status(e.message, true);
  }
}

function clearPoster() {
  poster = null;
  $("poster-preview").hidden = true;
  $("clear-poster").hidden = true;
}

$("predict").addEventListener("click", predict);
$("plot").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict(); });
$("plot").addEventListener("focus", () => ensureModels().catch(() => {}), { once: true });
for (const b of document.querySelectorAll("button.example")) {
  b.addEventListener("click", () => { $("plot").value = b.dataset.plot; $("plot").focus(); });
}
$("poster").addEventListener("change", (e) => setPoster(e.target.files[0]));
$("clear-poster").addEventListener("click", () => { $("poster").value = ""; clearPoster(); status(""); });
const zone = $("dropzone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  setPoster(e.dataTransfer.files[0]);
});
app.dataset.ready = "1";
