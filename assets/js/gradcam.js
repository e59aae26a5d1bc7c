// Where the poster model looked: the manifest's poster_cam graph turns the poster encoder's feature
// maps (and the plot embedding) into one Grad-CAM map per genre; each shown map is scaled to 0..1 (as
// pytorch-grad-cam does), coloured, stretched over the whole poster (the model saw it whole, resized)
// and blended onto it, so the page only draws finished pixels.
import { ort, run } from "./runtime.js";

const SHOWN = 6; // genres with a heatmap, at most
const JET = (v) => [1.5 - Math.abs(4 * v - 3), 1.5 - Math.abs(4 * v - 2), 1.5 - Math.abs(4 * v - 1)].map((c) => 255 * Math.min(1, Math.max(0, c)));

function overlay(poster, raw, h, w) {
  let lo = Infinity, hi = -Infinity;
  for (const v of raw) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const heat = new ImageData(w, h);
  raw.forEach((v, i) => heat.data.set([...JET((v - lo) / (1e-7 + hi - lo)), 255], 4 * i));
  const small = new OffscreenCanvas(w, h);
  small.getContext("2d").putImageData(heat, 0, 0);
  const [, , H, W] = poster.dims;
  const canvas = new OffscreenCanvas(W, H);
  const ctx = canvas.getContext("2d");
  ctx.putImageData(new ImageData(poster.rgba.slice(), W, H), 0, 0);
  ctx.globalAlpha = 0.45;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, W, H);
  return ctx.getImageData(0, 0, W, H);
}

// {genres, raw maps, dims [h, w], overlays (ImageData)} for the first SHOWN predicted genres.
export async function gradcam(session, camSpec, poster, textEmb, textDim, genres) {
  const out = await run(session, { features: poster.features, text: new ort.Tensor("float32", textEmb, [1, textDim]) });
  const maps = out[camSpec.output], [, , h, w] = maps.dims;
  const shown = genres.slice(0, SHOWN);
  const raw = shown.map((g) => Array.from(maps.data.subarray(g * h * w, (g + 1) * h * w)));
  return { genres: shown, raw, dims: [h, w], overlays: raw.map((m) => overlay(poster, m, h, w)) };
}
