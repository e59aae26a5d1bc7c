// The demo's model work, off the page's main thread; demo.js only sends messages and draws the answers.
//   downloads.js  fetch + Cache Storage, keyed and checked by sha256   sha256.js  the check without crypto.subtle
//   runtime.js    onnxruntime-web: streamed wasm, sessions, one run at a time
//   models.js     the manifest's parts (runtime, text, head, poster), each loaded once per visit
//   rules.js      the shared rules from the manifest (decision, sentences, text windows)
//   text.js       tokenizer, ids, windows, embeddings      poster.js  poster file → pixels
//   weights.js    a graph's packed weights file → the weights onnxruntime is handed
//   bag.js        the bag of words: a text's TF-IDF genre logits, blended into the head's probabilities
//   predict.js    one prediction                    gradcam.js poster heatmaps      explain.js  sentence drops
//   poster-worker.js  the poster's own thread (decode + poster encoder), started by the page, connected
//                     to this worker by a MessageChannel (poster-port)
// Messages in: init, warm, poster-port, predict {id, plot, posterId}. Out: spec, restart, progress, stage,
// genres, cam, why-start, why, why-done, error.
import * as models from "./models.js";
import { connectPoster, predict, prepare, warmPoster } from "./predict.js";
import { now, phases, timed } from "./runtime.js";

const started = now();
const send = (m, transfer = []) => postMessage(m, transfer);
let initialized, failed;
// every other message waits for the manifest: nothing runs on a copy the network has not confirmed
const ready = new Promise((resolve, reject) => { initialized = resolve; failed = reject; });
ready.catch(() => {});

const handlers = {
  init: async (m) => {
    phases["worker start"] = { at: m.pageStart, ms: started - m.pageStart }; // page asked → this module ran
    const progress = (p) => send({ type: "progress", ...p });
    let got;
    try {
      got = await timed("manifest", models.init(m, progress, (text) => send({ type: "stage", text })));
    } catch (e) {
      failed(e);
      throw e;
    }
    if (got.restart) { send({ type: "restart" }); return; } // a new runtime: the page starts a new worker
    send({ type: "spec", ...got });
    initialized();
    // a return visit: what a plot needs is stored, so its sessions are prepared now, while the visitor types
    if (models.PLOT.every((p) => got.parts[p].every((f) => f.cached))) prepare().catch(() => {});
  },
  warm: async ({ parts }) => { await Promise.all(parts.map((p) => (p === "poster" ? warmPoster(send) : models.load(p)))); },
  "poster-port": (m) => connectPoster(m, send),
  predict: (m) => predict(m, send),
};

self.onmessage = async ({ data }) => {
  try {
    if (data.type !== "init") await ready;
    await handlers[data.type](data);
  } catch (e) {
    send({ type: "error", id: data.id, during: data.type, message: e.message ?? String(e) });
  }
};
