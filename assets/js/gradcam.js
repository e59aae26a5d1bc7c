// Where the poster model looked: Grad-CAM of each genre's fusion logit on the poster encoder's final
// feature maps F [D, h, w], from two outputs the other graphs already give (manifest "gradcam"): F, and
// the fusion head's J = d logits / d poster embedding [G, D]. The embedding is F's spatial mean, so the
// Grad-CAM weight of channel k is J[g, k] / (h·w) and cam_g = relu(Σ_k J[g, k] / (h·w) · F[k])
// (pipeline/poster_cam.py). Each shown map is scaled to 0..1 (as pytorch-grad-cam does), coloured,
// stretched over the whole poster (the model saw it whole, resized) and blended onto it, so the page
// only draws finished pixels.
const SHOWN = 6; // genres with a heatmap, at most
const JET = (v) => [1.5 - Math.abs(4 * v - 3), 1.5 - Math.abs(4 * v - 2), 1.5 - Math.abs(4 * v - 1)].map((c) => 255 * Math.min(1, Math.max(0, c)));

function cam(jacobian, g, features, d, hw) {
  const map = new Float64Array(hw), row = jacobian.subarray(g * d, (g + 1) * d);
  for (let k = 0; k < d; k++) {
    const w = row[k] / hw;
    if (w === 0) continue;
    for (let i = 0, at = k * hw; i < hw; i++) map[i] += w * features[at + i];
  }
  return Array.from(map, (v) => Math.max(0, v));
}

function overlay(poster, raw, h, w) {
  let lo = Infinity, hi = -Infinity;
  for (const v of raw) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const heat = new ImageData(w, h);
  raw.forEach((v, i) => heat.data.set([...JET((v - lo) / (1e-7 + hi - lo)), 255], 4 * i));
  const small = new OffscreenCanvas(w, h);
  small.getContext("2d").putImageData(heat, 0, 0);
  const [, , H, W] = poster.dims;
  const canvas = new OffscreenCanvas(W, H);
  const ctx = canvas.getContext("2d", { willReadFrequently: true }); // read back once per genre
  ctx.putImageData(new ImageData(poster.rgba.slice(), W, H), 0, 0);
  ctx.globalAlpha = 0.45;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, W, H);
  return ctx.getImageData(0, 0, W, H);
}

// jacobian: the head's image_jacobian data [1, G, D]; features: the poster encoder's output tensor
// [1, D, h, w]. Returns {genres, raw maps, dims [h, w], overlays (ImageData)} for the first SHOWN genres.
export function gradcam(jacobian, features, poster, genres) {
  const [, d, h, w] = features.dims;
  const shown = genres.slice(0, SHOWN);
  const raw = shown.map((g) => cam(jacobian, g, features.data, d, h * w));
  return { genres: shown, raw, dims: [h, w], overlays: raw.map((m) => overlay(poster, m, h, w)) };
}
