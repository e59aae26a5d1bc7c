// onnxruntime-web: the wasm runtime started once per visit, one session per model, one run at a time.
// The wasm is not handed over as bytes: it is compiled while it streams from its Response
// (WebAssembly.compileStreaming), so Chromium keeps the compiled code beside the stored response and a
// return visit skips most of the compile. That Response is downloads.js's checked copy in Cache Storage
// (application/wasm), so the runtime works offline too.
// The compiled module and the glue are then shared with the poster's worker (poster-worker.js), which
// instantiates the same module: nothing downloaded or compiled twice.
import * as ort from "../vendor/ort.wasm.min.mjs";

export { ort };
// name -> {at, ms}: when it started (ms since the epoch, performance.timeOrigin + now, comparable with
// the page's clock) and how long it took; for the page's data-phases and bench/browser.py
export const phases = {};
export const now = () => performance.timeOrigin + performance.now();

let options = {}; // session options a benchmark may override (graphOptimizationLevel, freeDimensionOverrides, ...)
let started = null;
let shareWith = null;
// {glue: ArrayBuffer, module: WebAssembly.Module, url}: what another worker needs to start the same runtime
export const shared = new Promise((resolve) => { shareWith = resolve; });

export async function timed(name, job) {
  const at = now();
  try {
    return await job;
  } finally {
    phases[name] ??= { at, ms: now() - at };
  }
}

// Starts the runtime: `glue` the Response of ort-wasm-simd-threaded.mjs, `wasm` {url, response()} of its
// .wasm ({url} alone with `module`); or, given `module` (a compiled WebAssembly.Module from another worker), instantiates that.
// The compile starts here, streamed from the stored response (Chromium's code cache is keyed on it),
// not when onnxruntime first asks for the wasm (after a model's bytes are read): onnxruntime's own
// fetch + instantiateStreaming is answered with this module, so the wasm is read once.
let compiled = null;
export function start({ glue, wasm, module = null, sessionOptions = {} }) {
  started ??= (async () => {
    options = sessionOptions;
    compiled = module ? Promise.resolve(module) : timed("runtime compile", WebAssembly.compileStreaming(wasm.response()));
    compiled.catch(() => {}); // awaited by session()
    const glueBytes = await (await glue).arrayBuffer();
    compiled.then((m) => shareWith({ glue: glueBytes, module: m, url: wasm.url }), () => {});
    const glueUrl = URL.createObjectURL(new Blob([glueBytes], { type: "text/javascript" }));
    const plainFetch = self.fetch.bind(self);
    const unread = () => Promise.resolve(new Response(new Uint8Array(0), { headers: { "content-type": "application/wasm" } }));
    self.fetch = (input, init) => (String(input?.url ?? input) === wasm.url ? unread() : plainFetch(input, init));
    WebAssembly.instantiateStreaming = async (source, imports) => {
      const [m] = await Promise.all([compiled, source]);
      return { module: m, instance: await WebAssembly.instantiate(m, imports) };
    };
    ort.env.logLevel = "error"; // onnxruntime warns about every initializer it folds (dozens per model)
    ort.env.wasm.wasmPaths = { mjs: glueUrl, wasm: wasm.url };
    // threads only where the page is cross-origin isolated (GitHub Pages is not)
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  })().catch((e) => { started = null; throw e; });
  return started;
}

// A queue that starts each job once the one before it settled (resolved or failed).
function oneAtATime() {
  let tail = Promise.resolve();
  return (job) => {
    const next = tail.then(job);
    tail = next.catch(() => {});
    return next;
  };
}

// A session; its phase starts once the runtime is compiled (the first one also instantiates the runtime
// and starts onnxruntime inside it). One at a time: onnxruntime creates them one after the other anyway,
// so each phase is that session's own time.
const creating = oneAtATime();
// externalData: [{path, data}], the float weights a graph names outside itself (weights.js); level: the
// graph optimization level the manifest gives the model (pipeline/export/web_session.py says why)
export const session = (name, model, { externalData, level = "basic" } = {}) => creating(() => create(name, model, externalData, level));

async function create(name, model, externalData, level) {
  await started;
  await compiled;
  const at = now();
  const s = await ort.InferenceSession.create(model, {
    executionProviders: ["wasm"],
    logSeverityLevel: 3, // errors only
    graphOptimizationLevel: level,
    ...(externalData ? { externalData } : {}),
    ...options,
  });
  phases[`session ${name}`] ??= { at, ms: now() - at };
  return s;
}

// One session run at a time (a new prediction may start while an explanation is between runs).
const running = oneAtATime();
export const run = (sess, feeds, outputs) => running(() => (outputs ? sess.run(feeds, outputs) : sess.run(feeds)));
