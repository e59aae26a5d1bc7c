// What the manifest ships, part by part, and each part loaded once per visit: the files it needs
// (downloads.js), then its onnxruntime session (runtime.js) or tokenizer (text.js).
//   runtime  onnxruntime's wasm and its JS glue (assets/vendor/runtime.json)
//   text     the text encoder, its tokenizer and its packed weights file; the bag of words' two files
//            (bag.js), read with the plot like the encoder
//   head     the fusion head (and its packed weights file, when it has one) (probabilities; also the Jacobian Grad-CAM needs);  poster  the poster encoder
// worker.js reads the manifest (init); the poster's worker (poster-worker.js) is handed the same copy
// (adopt), so both threads load what one manifest names. A manifest is used only when it passes
// manifest_schema.json, the one description of it that export and Python's reader use too
// (manifestProblem below; pipeline/runtime/manifest.py is the same code, with the same messages).
import * as downloads from "./downloads.js";
import * as runtime from "./runtime.js";
import { tokenizer } from "./text.js";
import { Bag } from "./bag.js";
import { floatWeights } from "./weights.js";
import { windows_problem } from "./rules.js";
import manifestSchema from "./manifest_schema.json" with { type: "json" };

export let spec = null; // the manifest
export let rules = null; // spec.rules: the decision rule, sentence pattern, text windows, poster preprocessing
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
  const problem = unusable(manifest);
  if (problem) throw new Error(`the models' manifest.json: ${problem}; re-run \`python -m pipeline export\``);
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

// The schema's first problem, then windows the runtime cannot apply as written (Python's check_models reads
// a manifest the same way: problem, then check_windows): a manifest's reason to be refused, or null.
const unusable = (m) => manifestProblem(m) ?? windows_problem(m.rules.windows, m.text_encoder.max_len);

export const PLOT = ["runtime", "text", "head"]; // the parts a plot-only prediction needs
const MODEL_PARTS = PLOT.filter((p) => p !== "runtime"); // of them, those with a session
const filesOf = (part) => needs(part).map(({ url, info }) => [url, info.bytes, info.sha256]);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// True when the plot's parts started from the copies kept last visit (all their files stored).
async function startEarly(m, urls, progress, stage) {
  const [manifest, runtimeFiles] = await Promise.all(urls.map(downloads.stored));
  if (!manifest || unusable(manifest) || !runtimeFiles) return false;
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
// (a model entry's file, tokenizer and weights_file, those it has); the text part also "bag" and
// "bagWeights" (bag_of_words' file and weights_file)
function needs(part) {
  if (part === "runtime") return Object.entries(vendorFiles).map(([name, info]) => ({ url: new URL(name, base.vendor).href, name, info }));
  const entry = entryOf(part);
  if (!entry) return [];
  const roles = { graph: entry.file, tokenizer: entry.tokenizer, weights: entry.weights_file };
  if (part === "text") Object.assign(roles, { bag: spec.bag_of_words.file, bagWeights: spec.bag_of_words.weights_file });
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

// A part, loaded once: a session ({session, tokenizer, bag} for text), or null when the manifest has no such
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
    // the bag of words likewise, once both its files are read
    const readBag = ([json, weights]) => new Bag(JSON.parse(new TextDecoder().decode(json)), weights, rules, spec.labels);
    const bag = got.bag ? Promise.all([got.bag, got.bagWeights]).then(readBag) : null;
    // the float weights are rebuilt as soon as their file is read, like the tokenizer
    // (a microtask, so that the phase's clock starts before the rebuild runs)
    const rebuild = (blob) => runtime.timed(`weights ${part}`, Promise.resolve().then(() => [floatWeights(blob)]));
    const external = got.weights?.then(rebuild) ?? null;
    for (const p of [...Object.values(got), tok, bag, external]) p?.catch(() => {}); // each is awaited below; no rejection is left unhandled meanwhile
    await startRuntime();
    const model = await got.graph;
    onStage(`Preparing ${LABELS[part]}…`);
    // the graph optimization level export chose for this graph (pipeline/web_session.py)
    const level = entryOf(part).web_optimization ?? "basic";
    const session = await runtime.session(part, model, { externalData: (await external) ?? undefined, level });
    return tok ? { session, tokenizer: await tok, bag: await bag } : session;
  })().catch((e) => { delete loads[part]; throw e; });
  return loads[part];
}

// ---------------------------------------------------------------------------------------------
// The manifest's schema (manifest_schema.json), in the subset pipeline/runtime/manifest.py reads too:
// the first problem, in the schema's order, or null. The messages are Python's, word for word
// (tests/test_runtime.py compares them on the same manifests).
export const schema = manifestSchema;

const TYPE_NAMES = { object: "an object", array: "an array", string: "a string", integer: "an integer", number: "a number", boolean: "a boolean", null: "null" };

function isType(value, kind) {
  if (kind === "object") return value !== null && typeof value === "object" && !Array.isArray(value);
  if (kind === "array") return Array.isArray(value);
  if (kind === "string") return typeof value === "string";
  if (kind === "boolean") return typeof value === "boolean";
  if (kind === "null") return value === null;
  if (typeof value !== "number" || !Number.isFinite(value)) return false;
  return kind === "number" || Number.isInteger(value);
}

// A location as the messages write it: keys joined by dots, list items as [i].
function where(path) {
  let out = "";
  for (const key of path) out += typeof key === "number" ? `[${key}]` : out ? `.${key}` : key;
  return out || "the manifest";
}

const plural = (n, thing) => `${n} ${thing}` + (n === 1 ? "" : "s");
const has = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

function resolve(ref) {
  if (!ref.startsWith("#/")) throw new Error(`schema: only local references are read, not ${ref}`);
  return ref.slice(2).split("/").reduce((node, part) => node[part], schema);
}

function validate(value, node, path) {
  if (node.$ref) {
    const found = validate(value, resolve(node.$ref), path);
    if (found) return found;
  }
  for (const part of node.allOf ?? []) {
    const found = validate(value, part, path);
    if (found) return found;
  }
  const about = has(node, "description") ? ` (${node.description})` : "";
  if (has(node, "type")) {
    const kinds = Array.isArray(node.type) ? node.type : [node.type];
    if (!kinds.some((k) => isType(value, k))) return `${where(path)} must be ${kinds.map((k) => TYPE_NAMES[k]).join(" or ")}${about}`;
  }
  if (has(node, "enum") && !node.enum.some((e) => e === value)) {
    return `${where(path)} must be one of ${node.enum.map((e) => JSON.stringify(e)).join(", ")}`;
  }
  if (isType(value, "object")) {
    for (const key of node.required ?? []) {
      if (!has(value, key)) {
        const wanted = node.properties?.[key] ?? {};
        return `has no ${where([...path, key])}` + (has(wanted, "description") ? ` (${wanted.description})` : "");
      }
    }
    if (node.propertyNames) {
      for (const key of Object.keys(value)) {
        const found = validate(key, node.propertyNames, [...path, key]);
        if (found) return found;
      }
    }
    const properties = node.properties ?? {};
    for (const [key, sub] of Object.entries(properties)) {
      if (has(value, key)) {
        const found = validate(value[key], sub, [...path, key]);
        if (found) return found;
      }
    }
    const extra = node.additionalProperties ?? true;
    for (const key of Object.keys(value)) {
      if (has(properties, key) || extra === true) continue;
      if (extra === false) return `${where([...path, key])} is not expected here`;
      const found = validate(value[key], extra, [...path, key]);
      if (found) return found;
    }
  }
  if (Array.isArray(value)) {
    if (value.length < (node.minItems ?? 0)) return `${where(path)} must have at least ${plural(node.minItems, "item")}`;
    if (node.items) {
      for (let i = 0; i < value.length; i++) {
        const found = validate(value[i], node.items, [...path, i]);
        if (found) return found;
      }
    }
  }
  if (typeof value === "string") {
    if ([...value].length < (node.minLength ?? 0)) return `${where(path)} must have at least ${plural(node.minLength, "character")}`;
    if (has(node, "pattern") && !new RegExp(node.pattern, "u").test(value)) return `${where(path)} must match ${node.pattern}`;
  }
  if (isType(value, "number") && has(node, "minimum") && value < node.minimum) return `${where(path)} must be at least ${node.minimum}`;
  if (isType(value, "number") && has(node, "maximum") && value > node.maximum) return `${where(path)} must be at most ${node.maximum}`;
  return null;
}

const MISSING = Symbol("missing");

// The value at a JSON pointer, or MISSING.
function at(spec, pointer) {
  let node = spec;
  for (let part of pointer.split("/").slice(1)) {
    part = part.replaceAll("~1", "/").replaceAll("~0", "~");
    if (!isType(node, "object") || !has(node, part)) return MISSING;
    node = node[part];
  }
  return node;
}

// NAME.weights for NAME.onnx (Python's Path.with_suffix).
function weightsName(graph, suffix) {
  const dot = graph.lastIndexOf(".");
  return (dot > 0 ? graph.slice(0, dot) : graph) + suffix;
}

// x-checks.weights_beside_graph, on whatever entries are there (it runs before the schema).
function weightsProblem(spec) {
  const rule = schema["x-checks"].weights_beside_graph;
  for (const pointer of rule.pointers) {
    const entry = at(spec, pointer);
    if (isType(entry, "object") && typeof entry.file === "string" && typeof entry.weights_file === "string") {
      const want = weightsName(entry.file, rule.suffix);
      if (entry.weights_file !== want) return `the weights file of ${entry.file} must be ${want}, not ${entry.weights_file}`;
    }
  }
  return null;
}

// What is wrong with a manifest (the first thing, in the schema's order), or null: the schema, then its x-checks.
export function manifestProblem(spec) {
  const found = weightsProblem(spec) ?? validate(spec, schema, []);
  if (found) return found;
  const checks = schema["x-checks"];
  for (const pointer of checks.listed_in_files.pointers) {
    const name = at(spec, pointer);
    if (typeof name === "string" && !has(spec.files, name)) return `${where(pointer.split("/").slice(1))} names ${name}, which files does not list`;
  }
  for (const pointer of checks.one_per_label.pointers) {
    const values = at(spec, pointer);
    if (values !== MISSING && values.length !== spec.labels.length) {
      return `${where(pointer.split("/").slice(1))} has ${values.length} values for ${spec.labels.length} labels (${checks.one_per_label.description})`;
    }
  }
  return null;
}
