// The poster's own thread, started by the page (demo.js) once the manifest is in: it decodes a poster
// (poster.js) and runs the poster encoder on it as soon as it is read, while worker.js runs the text
// encoder. The encoder's graph and its packed weights file (weights.js rebuilds the float weights) are
// loaded by models.load("poster"), as worker.js loads the text encoder's. Without cross-origin isolation (GitHub Pages) onnxruntime-web runs one thread per worker, so
// a second worker is what lets the two encoders run at the same time: a prediction with a poster waits
// for the longer, not the sum. The preview goes straight to the page, so a busy worker.js never delays it.
// The runtime is the one worker.js compiled (runtime.shared): instantiated here, never fetched again.
// From the page: connect {port} (a MessageChannel to worker.js), poster {id, blob, rules}, clear.
//   To the page: poster, poster-error, progress, stage.
// From worker.js (port): init (models.handover), runtime (runtime.shared), load.
//   To worker.js (port): decoded {id, rgba, dims}, encoded {id, embedding, features, ms}, failed {id, during, message}, phases.
import * as models from "./models.js";
import { decode } from "./poster.js";
import { ort, phases, run } from "./runtime.js";

const toPage = (m, transfer = []) => postMessage(m, transfer);
let port = null;
const toWorker = (m, transfer = []) => port.postMessage(m, transfer);
let gotRuntime = null, gotInit = null;
models.runtimeFrom(new Promise((resolve) => { gotRuntime = resolve; }));
const inited = new Promise((resolve) => { gotInit = resolve; });
let latest = null; // the poster the page shows; an older one is not encoded

function load() {
  const job = inited.then(() => models.load("poster"));
  job.then(() => toWorker({ type: "phases", phases: { ...phases } }), () => {});
  return job;
}

async function encode(p) {
  const session = await load();
  const t0 = performance.now();
  const out = await run(session, { image: new ort.Tensor("float32", p.pixels, p.dims) });
  const { spec } = models;
  const embedding = Float32Array.from(out[spec.poster_encoder.output].data);
  const f = spec.gradcam ? out[spec.gradcam.features.output] : null;
  return { embedding, features: f ? { data: Float32Array.from(f.data), dims: f.dims } : null, ms: performance.now() - t0 };
}

async function poster({ id, blob, rules }) {
  latest = id;
  let p;
  try {
    p = await decode(blob, rules);
  } catch (e) {
    toPage({ type: "poster-error", id, message: e.message });
    toWorker({ type: "failed", id, during: "decode", message: e.message });
    return;
  }
  const preview = new ImageData(p.rgba.slice(), p.dims[3], p.dims[2]);
  const { width, height, dims, reduced, rgba } = p;
  toPage({ type: "poster", id, width, height, w: dims[3], h: dims[2], reduced, preview }, [preview.data.buffer]);
  toWorker({ type: "decoded", id, dims, rgba }, [rgba.buffer]);
  if (latest !== id) return;
  try {
    const e = await encode(p);
    toWorker({ type: "encoded", id, ...e }, [e.embedding.buffer, ...(e.features ? [e.features.data.buffer] : [])]);
  } catch (e) {
    toWorker({ type: "failed", id, during: "encode", message: e.message ?? String(e) });
  }
}

function fromWorker({ data: m }) {
  switch (m.type) {
    case "init":
      models.adopt(m, (p) => toPage({ type: "progress", ...p }), (text) => toPage({ type: "stage", text }));
      gotInit();
      break;
    case "runtime": gotRuntime(m); break;
    case "load": load().catch(() => {}); break; // a failure is reported by the encode that needs it
  }
}

self.onmessage = ({ data: m }) => {
  switch (m.type) {
    case "connect": port = m.port; port.onmessage = fromWorker; break;
    case "poster": poster(m); break;
    case "clear": latest = null; break;
  }
};
