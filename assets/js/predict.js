// One prediction, as `python -m pipeline predict` makes it: the plot embedding, the poster embedding
// when a poster was given, the fusion head, the manifest's decision rule for that input mode; then the
// poster heatmap and the sentence explanation, which a newer prediction interrupts.
import * as models from "./models.js";
import { now, ort, phases, run, timed } from "./runtime.js";
import { caution, embed } from "./text.js";
import { decode } from "./poster.js";
import { gradcam } from "./gradcam.js";
import { explain } from "./explain.js";
import * as rules from "./rules.js";

let poster = null; // {id, pixels, rgba, dims, embedding?, features?}
let posterJob = null; // the poster being decoded
let current = 0; // the prediction that may keep running; an older one stops at its next yield

export async function setPoster({ id, blob }, send) {
  poster = null;
  const job = (async () => {
    try {
      const p = await decode(blob, models.rules.poster);
      if (posterJob !== job) return;
      poster = { id, pixels: p.pixels, rgba: p.rgba, dims: p.dims };
      const preview = new ImageData(p.rgba.slice(), p.dims[3], p.dims[2]);
      send({ type: "poster", id, width: p.width, height: p.height, w: p.dims[3], h: p.dims[2], reduced: p.reduced, preview }, [preview.data.buffer]);
    } catch (e) {
      if (posterJob === job) send({ type: "poster-error", id, message: e.message });
    }
  })();
  posterJob = job;
  models.load("poster").catch(() => {}); // the poster model only once a poster is given
  await job;
}

export function clearPoster() {
  poster = null;
  posterJob = null;
}

async function posterOutputs() {
  if (!poster.embedding) {
    const out = await run(await models.load("poster"), { image: new ort.Tensor("float32", poster.pixels, poster.dims) });
    poster.embedding = Float32Array.from(out[models.spec.poster_encoder.output].data);
    poster.features = models.spec.gradcam ? out[models.spec.gradcam.features.output] : null;
  }
  return poster;
}

// The fusion head: probabilities, and with `jacobian` also its d logits / d poster embedding (Grad-CAM).
async function head(session, textEmb, image, jacobian = false) {
  const { spec, textPart } = models;
  const feeds = {
    text: new ort.Tensor("float32", textEmb, [1, spec[textPart].dim]),
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
// so the first real prediction finds the runtime's code compiled and its memory grown.
export async function prepare() {
  const [text, fusion] = await Promise.all([models.load("text"), models.load("head")]);
  const { spec, textPart } = models;
  const warmUp = async () => combine(fusion, (await embed(["A movie."], text, spec[textPart], models.rules))[0], null);
  await timed("warm-up run", warmUp());
}

export async function predict({ id, plot, withPoster }, send) {
  current = id;
  const t0 = performance.now();
  if (withPoster && posterJob) await posterJob; // a poster still decoding is waited for
  const usePoster = withPoster && !!poster;
  const mode = usePoster ? "plot+poster" : "plot";
  const { spec, textPart } = models;
  const enc = spec[textPart];
  const [text, fusion] = await Promise.all([models.load("text"), models.load("head"), usePoster ? models.load("poster") : null]);
  const tReady = performance.now(), at = now();
  send({ type: "stage", id, text: "Predicting…" });
  const [textEmb] = await embed([plot], text, enc, models.rules);
  const p = usePoster ? await posterOutputs() : null;
  const withCam = usePoster && !!p.features;
  const scored = await head(fusion, textEmb, p?.embedding ?? null, withCam);
  const probs = Array.from(scored.probs);
  const genres = genresOf(probs, mode);
  const runMs = performance.now() - tReady;
  phases["first run"] ??= { at, ms: runMs };
  send({ type: "genres", id, mode, probs, genres, caution: caution(plot, text.tokenizer, spec.min_words), loadMs: tReady - t0, runMs, textPart, phases });
  if (current !== id) return;
  if (withCam) {
    const maps = gradcam(scored.jacobian, p.features, p, genres);
    send({ type: "cam", id, ...maps }, maps.overlays.map((o) => o.data.buffer));
  }
  const score = (emb) => combine(fusion, emb, p?.embedding ?? null);
  await explain({ id, plot, text, enc, rulebook: models.rules, probs, score, send, current: () => current === id });
}
