// One prediction, as `python -m pipeline predict` makes it: the plot embedding, the poster embedding
// when a poster was given, the fusion head, the manifest's decision rule for that input mode; then the
// poster heatmap and the sentence explanation, which a newer prediction interrupts.
// The poster is decoded and encoded in its own worker (poster-worker.js) from the moment it is given,
// so its encoder runs beside this worker's text encoder; a prediction names the poster by its id.
import * as models from "./models.js";
import { now, ort, phases, run, shared, timed } from "./runtime.js";
import { caution, embed } from "./text.js";
import { gradcam } from "./gradcam.js";
import { explain } from "./explain.js";
import * as rules from "./rules.js";

let current = 0; // the prediction that may keep running; an older one stops at its next yield
let waiting = 0; // predictions waiting for their models (a return visit's warm-up run then is not needed)
let port = null; // to the poster's worker (poster-worker.js), which the page starts and connects
let loadAsked = false;
let toPage = () => {};

function deferred() {
  let resolve, reject;
  const promise = new Promise((a, b) => { resolve = a; reject = b; });
  promise.catch(() => {}); // awaited by whoever needs it; never an unhandled rejection
  return { promise, resolve, reject };
}
// poster id -> {decoded: deferred of {rgba, dims} or null (not an image), encoded: deferred of {embedding, features, ms}}
const posters = new Map();
function job(id) {
  if (!posters.has(id)) {
    for (const old of [...posters.keys()].filter((k) => k < id - 1)) posters.delete(old); // the page shows one poster
    posters.set(id, { decoded: deferred(), encoded: deferred() });
  }
  return posters.get(id);
}

// The page's MessageChannel to the poster's worker: that worker gets this worker's manifest and runtime.
export function connectPoster({ port: p }, send) {
  toPage = send;
  port = p;
  port.onmessage = ({ data: m }) => {
    switch (m.type) {
      case "phases":
        for (const [k, v] of Object.entries(m.phases)) phases[k === "runtime compile" ? "poster runtime" : k] ??= v;
        break;
      case "decoded": job(m.id).decoded.resolve({ rgba: m.rgba, dims: m.dims }); break;
      case "encoded": job(m.id).encoded.resolve({ embedding: m.embedding, features: m.features, ms: m.ms }); break;
      case "failed":
        if (m.during === "decode") job(m.id).decoded.resolve(null);
        job(m.id).encoded.reject(new Error(m.message));
        break;
    }
  };
  port.postMessage({ type: "init", ...models.handover() });
  // the runtime this worker compiles (it always starts one: the plot's models need it)
  shared.then((r) => port.postMessage({ type: "runtime", ...r }));
  if (loadAsked) port.postMessage({ type: "load" });
}

// The poster model, loaded in the poster's worker (a warm request from the page).
export function warmPoster(send) {
  toPage = send;
  loadAsked = true;
  port?.postMessage({ type: "load" });
}

// The fusion head: probabilities, and with `jacobian` also its d logits / d poster embedding (Grad-CAM).
async function head(session, textEmb, image, jacobian = false) {
  const { spec } = models;
  const feeds = {
    text: new ort.Tensor("float32", textEmb, [1, spec.text_encoder.dim]),
    image: new ort.Tensor("float32", image ?? new Float32Array(spec.poster_encoder.dim), [1, spec.poster_encoder.dim]),
    has_poster: new ort.Tensor("float32", Float32Array.of(image ? 1 : 0), [1, 1]),
  };
  const wanted = [spec.fusion_head.output, ...(jacobian ? [spec.gradcam.jacobian.output] : [])];
  const out = await run(session, feeds, wanted);
  return { probs: Float32Array.from(out[spec.fusion_head.output].data), jacobian: jacobian ? out[spec.gradcam.jacobian.output].data : null };
}
const combine = async (session, textEmb, image) => (await head(session, textEmb, image)).probs;

// The predicted genres (indices), most probable first.
function genresOf(probs, mode) {
  const chosen = rules.decide(probs, models.spec.thresholds[mode], models.rules.decision);
  return probs.map((_, i) => i).filter((i) => chosen[i]).sort((a, b) => probs[b] - probs[a]);
}

// A return visit: the plot's sessions are created and run once on a few words while the visitor types,
// so the first real prediction finds the runtime's code compiled and its memory grown. A prediction
// already waiting for the sessions makes that run itself: the warm-up is then skipped.
export async function prepare() {
  const [text, fusion] = await Promise.all([models.load("text"), models.load("head")]);
  // Creating a session blocks this thread, so a click made meanwhile is still a queued message when the
  // sessions resolve (and this continuation, a microtask, runs first): a posted message of our own lets
  // it through before deciding (the warm-up otherwise ran ahead of it: 0.05-0.24 s, bench.browser, 2026-12-04)
  await afterQueuedMessages();
  if (waiting || current) return;
  const { spec } = models;
  const warmUp = async () => combine(fusion, (await embed(["A movie."], text, spec.text_encoder, models.rules))[0], null);
  await timed("warm-up run", warmUp());
}

// Resolves after the messages already queued for this thread, as Chromium orders them (both are posted-
// message tasks; tests/test_browser.py checks it). The HTML spec gives each port its own queue, so another
// engine may answer this first: the warm-up then runs ahead of the click, as it did before.
export function afterQueuedMessages() {
  return new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.onmessage = () => { port1.close(); resolve(); };
    port2.postMessage(null);
  });
}

const since = (t) => performance.now() - t;

export async function predict({ id, plot, posterId }, send) {
  current = id;
  toPage = send;
  const t0 = performance.now();
  const given = posterId ? job(posterId) : null;
  const decoded = given ? await given.decoded.promise : null; // a poster still decoding is waited for
  const p = decoded ? { ...decoded, encoded: given.encoded.promise } : null;
  const mode = p ? "plot+poster" : "plot";
  const { spec } = models;
  const enc = spec.text_encoder;
  waiting++;
  let text, fusion;
  try {
    [text, fusion] = await Promise.all([models.load("text"), models.load("head")]);
  } finally {
    waiting--;
  }
  const tReady = performance.now(), at = now();
  send({ type: "stage", id, text: "Predicting…" });
  // the text encoder here, the poster encoder (already running since the poster was read) in its worker
  const [textEmb, image] = await Promise.all([embed([plot], text, enc, models.rules).then(([e]) => [e, since(tReady)]), p?.encoded]);
  const tHead = performance.now();
  const withCam = !!image?.features;
  const scored = await head(fusion, textEmb[0], image?.embedding ?? null, withCam);
  const probs = Array.from(scored.probs);
  const genres = genresOf(probs, mode);
  const runMs = since(tReady);
  // each model's own run time (the poster's measured in its worker), for bench/browser.py
  const parts = { text: textEmb[1], head: since(tHead), ...(image ? { poster: image.ms } : {}) };
  phases["first run"] ??= { at, ms: runMs };
  send({ type: "genres", id, mode, probs, genres, caution: caution(plot, text.tokenizer, spec.min_words), loadMs: tReady - t0, runMs, parts, phases });
  if (current !== id) return;
  if (withCam) {
    const maps = gradcam(scored.jacobian, image.features, p, genres);
    send({ type: "cam", id, ...maps }, maps.overlays.map((o) => o.data.buffer));
  }
  const score = (emb) => combine(fusion, emb, image?.embedding ?? null);
  await explain({ id, plot, text, enc, rulebook: models.rules, probs, score, send, current: () => current === id });
}
