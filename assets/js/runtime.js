// onnxruntime-web: the wasm runtime started once per visit, one session per model, one run at a time.
// The wasm is not handed over as bytes: onnxruntime fetches it from its URL and compiles it while it
// streams (WebAssembly.instantiateStreaming), so Chromium keeps the compiled code beside the stored
// response and a return visit skips the compile. That fetch is answered from downloads.js (the checked
// copy in Cache Storage, application/wasm), so the runtime works offline too.
import * as ort from "../vendor/ort.wasm.min.mjs";

export { ort };
// name -> {at, ms}: when it started (ms since the epoch, performance.timeOrigin + now, comparable with
// the page's clock) and how long it took; for the page's data-phases and bench/browser.py
export const phases = {};
export const now = () => performance.timeOrigin + performance.now();

let options = {}; // session options a benchmark may override (graphOptimizationLevel, freeDimensionOverrides, ...)
let started = null;

export async function timed(name, job) {
  const at = now();
  try {
    return await job;
  } finally {
    phases[name] ??= { at, ms: now() - at };
  }
}

// Starts the runtime: `glue` the Response of ort-wasm-simd-threaded.mjs, `wasm` {url, response()} of its .wasm.
export function start({ glue, wasm, sessionOptions = {} }) {
  started ??= (async () => {
    options = sessionOptions;
    const glueUrl = URL.createObjectURL(new Blob([await (await glue).arrayBuffer()], { type: "text/javascript" }));
    const plainFetch = self.fetch.bind(self);
    self.fetch = (input, init) => (String(input?.url ?? input) === wasm.url ? wasm.response() : plainFetch(input, init));
    const streaming = WebAssembly.instantiateStreaming; // timed, to report the compile on its own
    WebAssembly.instantiateStreaming = (source, imports) => timed("runtime compile", streaming(source, imports));
    ort.env.logLevel = "error"; // onnxruntime warns about every initializer it folds (dozens per model)
    ort.env.wasm.wasmPaths = { mjs: glueUrl, wasm: wasm.url };
    // threads only where the page is cross-origin isolated (GitHub Pages is not)
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  })().catch((e) => { started = null; throw e; });
  return started;
}

export async function session(name, model) {
  await started;
  const create = ort.InferenceSession.create(model, {
    executionProviders: ["wasm"],
    logSeverityLevel: 3, // errors only
    // bench/browser.py, return visit, plot only: basic 1.56 s (sessions 0.76 s, warm 68 ms) against all
    // 2.40 s (1.17 s, 72 ms) and disabled 2.74 s (0.98 s, 84 ms)
    graphOptimizationLevel: "basic",
    ...options,
  });
  const at = now(), compiling = !phases["runtime compile"];
  const s = await create;
  // the first session also waits for the runtime compile: that is reported on its own
  const compile = compiling ? phases["runtime compile"]?.ms ?? 0 : 0;
  phases[`session ${name}`] ??= { at: at + compile, ms: now() - at - compile };
  return s;
}

let queue = Promise.resolve();
// One session run at a time (a new prediction may start while an explanation is between runs).
export function run(sess, feeds, outputs) {
  const next = queue.then(() => (outputs ? sess.run(feeds, outputs) : sess.run(feeds)));
  queue = next.catch(() => {});
  return next;
}
