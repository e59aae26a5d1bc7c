// A poster file → the pixels the poster encoder takes, as pipeline/runtime/image_io.py `load_image` makes them
// (the manifest's rules.poster): size read from the header before decoding, EXIF orientation, alpha
// over white, integer block mean for large images. Pixels are read in bands, so memory stays near the
// decoded bitmap's size.

// Width and height from the file header, before anything is decoded (PNG, GIF, WebP, JPEG, BMP).
async function headerSize(blob) {
  const head = new DataView(await blob.slice(0, 65536).arrayBuffer());
  const u8 = (i) => head.getUint8(i);
  const ascii = (i, n) => String.fromCharCode(...Array.from({ length: n }, (_, k) => u8(i + k)));
  if (head.byteLength >= 24 && u8(0) === 0x89 && ascii(1, 3) === "PNG") return [head.getUint32(16), head.getUint32(20)];
  if (head.byteLength >= 10 && ascii(0, 3) === "GIF") return [head.getUint16(6, true), head.getUint16(8, true)];
  if (head.byteLength >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
    const kind = ascii(12, 4);
    if (kind === "VP8 ") return [head.getUint16(26, true) & 0x3fff, head.getUint16(28, true) & 0x3fff];
    if (kind === "VP8L") { const b = head.getUint32(21, true); return [(b & 0x3fff) + 1, ((b >> 14) & 0x3fff) + 1]; }
    if (kind === "VP8X") return [1 + (u8(24) | (u8(25) << 8) | (u8(26) << 16)), 1 + (u8(27) | (u8(28) << 8) | (u8(29) << 16))];
  }
  if (head.byteLength >= 26 && ascii(0, 2) === "BM") return [Math.abs(head.getInt32(18, true)), Math.abs(head.getInt32(22, true))];
  if (head.byteLength >= 4 && u8(0) === 0xff && u8(1) === 0xd8) {
    // walk the JPEG segments to a start-of-frame marker (the whole file if large metadata comes first)
    const all = blob.size > 65536 ? new DataView(await blob.arrayBuffer()) : head;
    for (let i = 2; i + 9 < all.byteLength;) {
      if (all.getUint8(i) !== 0xff) { i++; continue; }
      const marker = all.getUint8(i + 1);
      if (marker === 0xff) { i++; continue; }
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [all.getUint16(i + 7), all.getUint16(i + 5)];
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      i += 2 + all.getUint16(i + 2);
    }
  }
  throw new Error("this is not a JPEG, PNG, WebP, GIF or BMP image, or its header is damaged");
}

// The canvas's source-over onto white is round(c·a/255) + 255 − a, rules.poster's alpha rule.
// Returns {pixels (CHW float), rgba, dims [1, 3, h, w], width, height, reduced}.
export async function decode(blob, pre) {
  const [w0, h0] = await headerSize(blob);
  const maxPixels = pre.max_pixels;
  if (w0 * h0 > maxPixels) throw new Error(`The image is ${w0}×${h0} (${(w0 * h0 / 1e6).toFixed(1)} megapixels); the limit is ${maxPixels / 1e6} megapixels.`);
  let bmp;
  try {
    bmp = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error("The image could not be decoded.");
  }
  const W = bmp.width, H = bmp.height;
  const k = Math.max(1, Math.ceil(Math.max(W, H) / pre.max_side));
  const w = Math.ceil(W / k), h = Math.ceil(H / k);
  const sums = new Float64Array(3 * w * h);
  const band = k * Math.max(1, Math.floor(2 ** 20 / (W * k)));
  const canvas = new OffscreenCanvas(W, Math.min(band, H));
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = false;
  for (let y0 = 0; y0 < H; y0 += band) {
    const rows = Math.min(band, H - y0);
    ctx.globalCompositeOperation = "copy";
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, W, rows);
    ctx.globalCompositeOperation = "source-over";
    ctx.drawImage(bmp, 0, y0, W, rows, 0, 0, W, rows);
    const rgba = ctx.getImageData(0, 0, W, rows).data;
    for (let y = 0; y < rows; y++) {
      const row = Math.floor((y0 + y) / k) * w;
      for (let x = 0; x < W; x++) {
        const s = 3 * (row + Math.floor(x / k)), p = 4 * (y * W + x);
        sums[s] += rgba[p]; sums[s + 1] += rgba[p + 1]; sums[s + 2] += rgba[p + 2];
      }
    }
  }
  bmp.close();
  const n = w * h, pixels = new Float32Array(3 * n), rgba = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    const y = Math.floor(i / w), x = i % w;
    const count = Math.min(k, H - y * k) * Math.min(k, W - x * k);
    for (let c = 0; c < 3; c++) {
      const v = Math.floor((2 * sums[3 * i + c] + count) / (2 * count)); // rounded half up, as image_io.py
      pixels[c * n + i] = v;
      rgba[4 * i + c] = v;
    }
    rgba[4 * i + 3] = 255;
  }
  return { pixels, rgba, dims: [1, 3, h, w], width: W, height: H, reduced: k > 1 };
}
