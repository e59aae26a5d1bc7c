// The demo's model work, off the page's main thread; demo.js only sends messages and draws the answers.
//   downloads.js  fetch + Cache Storage, keyed and checked by sha256   sha256.js  the check without crypto.subtle
//   runtime.js    onnxruntime-web: streamed wasm, sessions, one run at a time
//   models.js     the manifest's parts (runtime, text, head, poster), each loaded once per visit
//   rules.js      the shared rules from the manifest (decision, sentences, truncation)
//   text.js       tokenizer, ids, embeddings        poster.js  poster file → pixels
//   predict.js    one prediction                    gradcam.js poster heatmaps      explain.js  sentence drops
// Messages in: init, warm, poster, clear-poster, predict. Out: spec, progress, stage, poster, poster-error,
// genres, cam, why-start, why, why-done, error.
import * as models from "./models.js";
import { clearPoster, predict, prepare, setPoster } from "./predict.js";
import { now, phases, timed } from "./runtime.js";

const started = now();
const send = (m, transfer = []) => postMessage(m, transfer);

const handlers = {
  init: async (m) => {
    phases["worker start"] = { at: m.pageStart, ms: started - m.pageStart }; // page asked → this module ran
    const progress = (p) => send({ type: "progress", ...p });
    const ready = await timed("manifest", models.init(m, progress, (text) => send({ type: "stage", text })));
    send({ type: "spec", ...ready });
    // a return visit: what a plot needs is stored, so its sessions are prepared now, while the visitor types
    if (["runtime", "text", "head"].every((p) => ready.parts[p].every((f) => f.cached))) prepare().catch(() => {});
  },
  warm: async ({ parts }) => { await Promise.all(parts.map(models.load)); },
  poster: (m) => setPoster(m, send),
  "clear-poster": clearPoster,
  predict: (m) => predict(m, send),
};

self.onmessage = async ({ data }) => {
  try {
    await handlers[data.type](data);
  } catch (e) {
    send({ type: "error", id: data.id, during: data.type, message: e.message ?? String(e) });
  }
};
