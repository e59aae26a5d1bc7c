// What the manifest ships, part by part, and each part loaded once per visit: the files it needs
// (downloads.js), then its onnxruntime session (runtime.js) or tokenizer (text.js).
//   runtime  onnxruntime's wasm and its JS glue (assets/vendor/runtime.json)
//   text     the text encoder, its tokenizer and its packed weights file
//   head     the fusion head (and its packed weights file, when it has one) (probabilities; also the Jacobian Grad-CAM needs);  poster  the poster encoder
// worker.js reads the manifest (init); the poster's worker (poster-worker.js) is handed the same copy
// (adopt), so both threads load what one manifest names.
import * as downloads from "./downloads.js";
import * as runtime from "./runtime.js";
import { tokenizer } from "./text.js";
import { floatWeights } from "./weights.js";

export let spec = null; // the manifest
export let rules = null; // spec.rules: the decision rule, sentence pattern, truncation, poster preprocessing
export let vendorFiles = null; // assets/vendor/runtime.json
let base = null, sessionOptions = {};
const loads = {}; // part -> Promise
let onProgress = () => {}, onStage = () => {};
const LABELS = { text: "the text model", head: "the fusion head", poster: "the poster model" };

// progress({file, got, total, cached?}) per file; stage(text) when a part's session is being prepared.
// Returns {spec, parts: {part: [{name, bytes, cached}]}, plot: PLOT}, or {restart: true} (below); the
// versions a redeploy replaced are deleted meanwhile (never a file this manifest names: nothing waits).
//
// A return visit starts early: the manifest and runtime list kept from the last visit name the plot's
// files, and when each is stored, the runtime, the plot's sessions and the tokenizer start from them at
// once, while the network copies are fetched (revalidated). Stored keys name their content
// (URL?sha256=), so what started early is kept only where the fresh manifest names the same files; a
// part it names differently is dropped and loaded again from the fresh manifest. A different runtime
// cannot be swapped inside a started worker: init then answers {restart: true} and the page starts a
// new worker with early: false.
export async function init(m, progress, stage) {
  const urls = [new URL("manifest.json", m.models).href, new URL("runtime.json", m.vendor).href];
  const fresh = Promise.all(urls.map(downloads.json));
  fresh.catch(() => {}); // awaited below
  const early = m.early !== false && (await startEarly(m, urls, progress, stage));
  const [manifest, runtimeFiles] = await fresh;
  if (!manifest.rules) throw new Error("the manifest has no rules block: re-run `python -m pipeline export`");
  const before = early ? Object.fromEntries(PLOT.map((part) => [part, filesOf(part)])) : null;
  adopt({ ...m, spec: manifest, vendorFiles: runtimeFiles }, progress, stage);
  if (early) {
    if (!same(before.runtime, filesOf("runtime"))) return { restart: true };
    for (const part of MODEL_PARTS) if (!same(before[part], filesOf(part))) drop(part);
  }
  const all = [...Object.entries(vendorFiles).map(([n, i]) => [new URL(n, m.vendor).href, i]),
    ...Object.entries(spec.files).map(([n, i]) => [new URL(n, m.models).href, i])];
  downloads.evictAllBut(all).catch(() => {}); // versions a redeploy replaced, files it dropped
  const parts = {};
  await Promise.all(["runtime", "text", "head", "poster"].map(async (part) => {
    parts[part] = await Promise.all(needs(part).map(async ({ url, name, info }) => ({ name, bytes: info.bytes, cached: await downloads.isStored(url, info) })));
  }));
  return { spec, parts, plot: PLOT };
}

export const PLOT = ["runtime", "text", "head"]; // the parts a plot-only prediction needs
const MODEL_PARTS = PLOT.filter((p) => p !== "runtime"); // of them, those with a session
const filesOf = (part) => needs(part).map(({ url, info }) => [url, info.bytes, info.sha256]);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// True when the plot's parts started from the copies kept last visit (all their files stored).
async function startEarly(m, urls, progress, stage) {
  const [manifest, runtimeFiles] = await Promise.all(urls.map(downloads.stored));
  if (!manifest?.rules || !runtimeFiles) return false;
  adopt({ ...m, spec: manifest, vendorFiles: runtimeFiles }, progress, stage);
  const files = PLOT.flatMap(needs);
  const stored = await Promise.all(files.map(({ url, info }) => downloads.isStored(url, info)));
  if (!stored.every(Boolean)) return false;
  for (const part of MODEL_PARTS) load(part).catch(() => {}); // a failure is met again by whoever needs the part
  return true;
}

// A part started from files the fresh manifest no longer names: forgotten, its session released.
function drop(part) {
  const job = loads[part];
  delete loads[part];
  job?.then((s) => (s?.session ?? s)?.release?.(), () => {});
}

// A manifest (and runtime list) already read, by worker.js: the poster's worker uses the same copy.
export function adopt({ models, vendor, ort = {}, spec: manifest, vendorFiles: runtimeFiles }, progress, stage) {
  onProgress = progress;
  onStage = stage;
  base = { models, vendor };
  sessionOptions = ort;
  spec = manifest;
  vendorFiles = runtimeFiles;
  rules = spec.rules;
}

// A model part's manifest entry.
const entryOf = (part) => ({ text: spec.text_encoder, head: spec.fusion_head, poster: spec.poster_encoder })[part];

// The files of a part: [{url, name, info: {bytes, sha256}, role}], role "graph", "tokenizer" or "weights"
// (a model entry's file, tokenizer and weights_file, those it has)
function needs(part) {
  if (part === "runtime") return Object.entries(vendorFiles).map(([name, info]) => ({ url: new URL(name, base.vendor).href, name, info }));
  const entry = entryOf(part);
  if (!entry) return [];
  const roles = { graph: entry.file, tokenizer: entry.tokenizer, weights: entry.weights_file };
  return Object.entries(roles).filter(([, name]) => name).map(([role, name]) => ({ url: new URL(name, base.models).href, name, info: spec.files[name], role }));
}

// What the poster's worker is handed: the same manifest, runtime list and session options.
export const handover = () => ({ models: base.models, vendor: base.vendor, ort: sessionOptions, spec, vendorFiles });

let runtimeStarted = null;
let given = null; // the poster's worker: a promise of the runtime worker.js compiled (runtime.shared)
// The poster's worker never fetches or compiles the runtime: it instantiates the module it is given.
// Its model's bytes are read meanwhile (load).
export function runtimeFrom(promise) {
  given = promise;
}

function instantiate({ glue, module, url }) {
  // given the compiled module, runtime.start never reads the wasm: the URL alone names it to onnxruntime
  return runtime.start({ glue: new Response(glue), wasm: { url }, module, sessionOptions });
}

function startRuntime() {
  runtimeStarted ??= (given ? given.then(instantiate) : startingRuntime()).catch((e) => { runtimeStarted = null; throw e; });
  return runtimeStarted;
}

function startingRuntime() {
  const files = needs("runtime");
  const glue = files.find((f) => f.name.endsWith(".mjs")), wasm = files.find((f) => f.name.endsWith(".wasm"));
  const wasmUrl = `${wasm.url}?sha256=${wasm.info.sha256}`; // the URL onnxruntime fetches: it names the content
  const open = () => downloads.open(wasm.url, wasm.name, wasm.info, onProgress, "application/wasm");
  let first = open(); // downloading (or opening the stored copy) starts now, beside the models
  return runtime.start({
    glue: downloads.open(glue.url, glue.name, glue.info, onProgress, "text/javascript"),
    wasm: { url: wasmUrl, response: () => { const r = first ?? open(); first = null; return r; } },
    sessionOptions,
  });
}

// A part, loaded once: a session ({session, tokenizer} for text), or null when the manifest has no such
// part; "runtime" starts the runtime.
export function load(part) {
  if (part === "runtime") return startRuntime();
  loads[part] ??= (async () => {
    const files = needs(part);
    if (!files.length) return null;
    const got = Object.fromEntries(files.map(({ url, name, info, role }) => [role, downloads.bytes(url, name, info, onProgress)]));
    // the tokenizer is built as soon as its file is read: the thread is otherwise idle while the wasm
    // compiles (off-thread) and the model's bytes are read
    const tok = got.tokenizer?.then(tokenizer) ?? null;
    // the float weights are rebuilt as soon as their file is read, like the tokenizer
    // (a microtask, so that the phase's clock starts before the rebuild runs)
    const rebuild = (blob) => runtime.timed(`weights ${part}`, Promise.resolve().then(() => [floatWeights(blob)]));
    const external = got.weights?.then(rebuild) ?? null;
    for (const p of [...Object.values(got), tok, external]) p?.catch(() => {}); // each is awaited below; no rejection is left unhandled meanwhile
    await startRuntime();
    const model = await got.graph;
    onStage(`Preparing ${LABELS[part]}…`);
    // the graph optimization level export chose for this graph (pipeline/web_session.py)
    const level = entryOf(part).web_optimization ?? "basic";
    const session = await runtime.session(part, model, { externalData: (await external) ?? undefined, level });
    return tok ? { session, tokenizer: await tok } : session;
  })().catch((e) => { delete loads[part]; throw e; });
  return loads[part];
}
