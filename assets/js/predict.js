// One prediction, as `python -m pipeline predict` makes it: the plot read in windows (rules.windows), the
// poster embedding when a poster was given, the fusion head on the windows pooled by the manifest's rule,
// blended with the bag of words' reading of the plot (bag.js, at the input mode's weight), the manifest's
// decision rule for that input mode; then the poster heatmap and the sentence explanation, which a newer
// prediction interrupts.
// The poster is decoded and encoded in its own worker (poster-worker.js) from the moment it is given,
// so its encoder runs beside this worker's text encoder; a prediction names the poster by its id.
import * as models from "./models.js";
import { now, ort, phases, run, shared, timed } from "./runtime.js";
import { caution, embed, encode } from "./text.js";
import { gradcam } from "./gradcam.js";
import { explain } from "./explain.js";
import { blend } from "./bag.js";
import * as rules from "./rules.js";

let current = 0; // the prediction that may keep running; an older one stops before its next window or passage
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

// The fusion head on rows of text embeddings (each with the same poster, or none): each row's
// probabilities, and with `jacobian` also its d logits / d poster embedding (Grad-CAM).
async function head(session, rows, image, jacobian = false) {
  const { spec } = models;
  const n = rows.length, tdim = spec.text_encoder.dim, idim = spec.poster_encoder.dim;
  const text = new Float32Array(n * tdim), img = new Float32Array(n * idim);
  rows.forEach((r, i) => { text.set(r, i * tdim); if (image) img.set(image, i * idim); });
  const feeds = {
    text: new ort.Tensor("float32", text, [n, tdim]),
    image: new ort.Tensor("float32", img, [n, idim]),
    has_poster: new ort.Tensor("float32", new Float32Array(n).fill(image ? 1 : 0), [n, 1]),
  };
  const wanted = [spec.fusion_head.output, ...(jacobian ? [spec.gradcam.jacobian.output] : [])];
  const out = await run(session, feeds, wanted);
  const split = (data) => Array.from({ length: n }, (_, i) => data.slice((i * data.length) / n, ((i + 1) * data.length) / n));
  return { probs: split(out[spec.fusion_head.output].data), jacobians: jacobian ? split(out[spec.gradcam.jacobian.output].data) : null };
}

// rules.windows.pool on the windows' embeddings: the head once on their mean ("embedding"), or on each
// window, then the mean or maximum of the probabilities ("probability"). Returns {probs, jacobian (the
// pooled probabilities' d logits / d poster, when asked), score}: score(replaced) gives the probabilities
// with some windows' embeddings replaced ({window index: embedding}), the others' reused (the explanation).
async function pooledHead(session, embeddings, image, how, jacobian = false) {
  if (rules.pooled(how) === "embedding") {
    const score = async (replaced = {}) => {
      const mean = rules.pool(embeddings.map((e, k) => replaced[k] ?? e), how);
      return (await head(session, [mean], image)).probs[0];
    };
    const first = await head(session, [rules.pool(embeddings, how)], image, jacobian);
    return { probs: first.probs[0], jacobian: first.jacobians?.[0] ?? null, score };
  }
  const each = await head(session, embeddings, image, jacobian);
  const score = async (replaced = {}) => {
    const keys = Object.keys(replaced).map(Number);
    const fresh = keys.length ? (await head(session, keys.map((k) => replaced[k]), image)).probs : [];
    const rows = [...each.probs];
    keys.forEach((k, j) => { rows[k] = fresh[j]; });
    return rules.pool(rows, how);
  };
  return { probs: rules.pool(each.probs, how), jacobian: each.jacobians && poolJacobian(each, how), score };
}

// A genre's Grad-CAM gradient of pooled probabilities: the mean of the windows' (d of the mean logit), or
// that of the window whose probability is the maximum (its subgradient).
function poolJacobian({ probs, jacobians }, how) {
  if (how.startsWith("mean")) return rules.pool(jacobians, how);
  const genres = probs[0].length, per = jacobians[0].length / genres;
  const out = new Float32Array(jacobians[0].length);
  for (let g = 0; g < genres; g++) {
    let best = 0;
    for (let k = 1; k < probs.length; k++) if (probs[k][g] > probs[best][g]) best = k;
    out.set(jacobians[best].subarray(g * per, (g + 1) * per), g * per);
  }
  return out;
}

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
  const { spec } = models, tok = text.tokenizer;
  const warmUp = async () => head(fusion, await embed([encode("A movie.", tok, models.rules)], text, spec.text_encoder), null);
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

// Thrown into an older prediction's window loop once a newer one started (a poster changed while a long plot
// was read): the window in flight finishes, the rest are never run, and nothing more is sent for it.
class Superseded extends Error {}

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
  const rule = models.rules.windows;
  const ids = encode(plot, text.tokenizer, models.rules), windows = rules.windows(ids, rule);
  // the status line counts the windows as they run: one window per run, so each is counted as it starts
  // (five 256-token windows in one run took 4 % less time than one by one, 285 against 298 ms a window,
  // 2026-12-06, machine under load: not worth a status line that stops counting)
  const before = async (k, n) => {
    if (k > 0) await afterQueuedMessages(); // a newer prediction's message gets in (a window's run never yields)
    if (current !== id) throw new Superseded();
    send({ type: "stage", id, text: n > 1 ? `Reading the plot: window ${k + 1} of ${n}…` : "Predicting…" });
  };
  // the text encoder here, the poster encoder (already running since the poster was read) in its worker
  const reading = embed(windows, text, enc, { before }).then((e) => [e, since(tReady)]);
  let embeddings, textMs, image;
  try {
    [[embeddings, textMs], image] = await Promise.all([reading, p?.encoded]);
  } catch (e) {
    if (e instanceof Superseded) return;
    throw e;
  }
  if (current !== id) return; // superseded during its last window: its genres would be withdrawn unseen
  const tHead = performance.now();
  const withCam = !!image?.features;
  const scored = await pooledHead(fusion, embeddings, image?.embedding ?? null, rule.pool, withCam);
  // the windows' pooled probabilities blended with the bag's logits of `words`: the plot, or (the
  // explanation) the plot without a passage
  const withBag = (pooled, words) => Array.from(blend(pooled, text.bag.logits(words), spec.bag_of_words.blend[mode], models.rules.bag.clip));
  const probs = withBag(scored.probs, plot);
  const genres = genresOf(probs, mode);
  const runMs = since(tReady);
  // each model's own run time (the poster's measured in its worker), for bench/browser.py
  const parts = { text: textMs, head: since(tHead), ...(image ? { poster: image.ms } : {}) };
  phases["first run"] ??= { at, ms: runMs };
  send({ type: "genres", id, mode, probs, genres, windows: windows.length, caution: caution(plot, text.tokenizer, spec.min_words), loadMs: tReady - t0, runMs, parts, phases });
  if (current !== id) return;
  if (withCam) {
    const maps = gradcam(scored.jacobian, image.features, p, genres);
    send({ type: "cam", id, ...maps }, maps.overlays.map((o) => o.data.buffer));
  }
  await explain({
    id, plot, ids, windowMs: textMs / windows.length, text, enc, rulebook: models.rules, probs,
    score: async (replaced, words) => withBag(await scored.score(replaced), words), send,
    current: () => current === id, pause: afterQueuedMessages,
  });
}
