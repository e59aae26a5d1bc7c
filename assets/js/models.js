// What the manifest ships, part by part, and each part loaded once per visit: the files it needs
// (downloads.js), then its onnxruntime session (runtime.js) or tokenizer (text.js).
//   runtime  onnxruntime's wasm and its JS glue (assets/vendor/runtime.json)
//   text     the text encoder and its tokenizer (?text=NAME picks "NAME_text_encoder")
//   head     the fusion head (probabilities; also the Jacobian Grad-CAM needs);  poster  the poster encoder
import * as downloads from "./downloads.js";
import * as runtime from "./runtime.js";
import { tokenizer } from "./text.js";

export let spec = null; // the manifest
export let rules = null; // spec.rules: the decision rule, sentence pattern, truncation, poster preprocessing
export let textPart = "text_encoder";
let base = null, vendorFiles = null, sessionOptions = {};
const loads = {}; // part -> Promise
let onProgress = () => {}, onStage = () => {};
const LABELS = { text: "the text model", head: "the fusion head", poster: "the poster model" };

// progress({file, got, total, cached?}) per file; stage(text) when a part's session is being prepared
export async function init({ models, vendor, text, ort = {} }, progress, stage) {
  onProgress = progress;
  onStage = stage;
  base = { models, vendor };
  sessionOptions = ort;
  [spec, vendorFiles] = await Promise.all([
    downloads.json(new URL("manifest.json", models).href),
    downloads.json(new URL("runtime.json", vendor).href),
  ]);
  if (!spec.rules) throw new Error("the manifest has no rules block: re-run `python -m pipeline export`");
  rules = spec.rules;
  textPart = text && spec[`${text}_text_encoder`] ? `${text}_text_encoder` : "text_encoder";
  const all = [...Object.entries(vendorFiles).map(([n, i]) => [new URL(n, vendor).href, i]),
    ...Object.entries(spec.files).map(([n, i]) => [new URL(n, models).href, i])];
  await downloads.evictAllBut(all); // versions a redeploy replaced, files it dropped
  const parts = {};
  for (const part of ["runtime", "text", "head", "poster"]) {
    parts[part] = await Promise.all(needs(part).map(async ({ url, name, info }) => ({ name, bytes: info.bytes, cached: await downloads.isStored(url, info) })));
  }
  return { spec, textPart, parts };
}

// The files of a part: [{url, name, info: {bytes, sha256}}]
function needs(part) {
  const model = (name) => ({ url: new URL(name, base.models).href, name, info: spec.files[name] });
  switch (part) {
    case "runtime": return Object.entries(vendorFiles).map(([name, info]) => ({ url: new URL(name, base.vendor).href, name, info }));
    case "text": return [model(spec[textPart].file), model(spec[textPart].tokenizer)];
    case "head": return [model(spec.fusion_head.file)];
    case "poster": return [model(spec.poster_encoder.file)];
  }
  return [];
}

let runtimeStarted = null;
function startRuntime() {
  runtimeStarted ??= startingRuntime().catch((e) => { runtimeStarted = null; throw e; });
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

// A part, loaded once: a session ({session, tokenizer} for text), or null when the manifest has no such part.
export function load(part) {
  loads[part] ??= (async () => {
    const files = needs(part);
    if (!files.length) return null;
    const got = Promise.all(files.map(({ url, name, info }) => downloads.bytes(url, name, info, onProgress)));
    await startRuntime();
    const [model, tokenizerFile] = await got;
    onStage(`Preparing ${LABELS[part]}…`);
    const session = await runtime.session(part, model);
    return part === "text" ? { session, tokenizer: tokenizer(tokenizerFile) } : session;
  })().catch((e) => { delete loads[part]; throw e; });
  return loads[part];
}
