// A graph's packed weights file (NAME.weights: the text encoder's, the poster encoder's, the head's; written
// by pipeline/export/packing.py, layout in pipeline/runtime/packed_weights.py's docstring) → the bytes the
// graph reads as external data: each weight float32(q[r][c]) * scale[r / br][c / bc] at the tensor's offset
// `at`, with 8- or 4-bit q and float32 or float16 scales (a convolution's [M, C, kh, kw] weight is its M rows
// of C * kh * kw values); a gathered table's int8 values and float32 scales as they are. Rebuilt here rather
// than by onnxruntime (a Cast + Mul in the graph, folded at session creation) because onnxruntime-web did
// that folding on every visit in wasm not yet optimised by the browser (return visit: text session 0.66 s
// with it, 0.35-0.38 s without; this loop, the "weights" phase: bench/browser.py).
// Returns {path, data}: one entry of onnxruntime-web's externalData session option.

// IEEE half → float, exactly (every half is a float32)
function half(h) {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

// a byte's two 4-bit two's-complement values: low nibble first
const lo = (v) => (v << 28) >> 28, hi = (v) => (v << 24) >> 28;
const nibble = (values, i) => (i & 1 ? hi(values[i >> 1]) : lo(values[i >> 1]));

function scalesOf(bytes, { rows, cols, block: [br, bc], scale, scales }) {
  const n = Math.ceil(rows / br) * Math.ceil(cols / bc);
  if (scale === "f32") return new Float32Array(bytes.buffer, bytes.byteOffset + scales, n);
  if (scale !== "f16") throw new Error(`unknown scale type ${scale}`);
  const raw = new Uint16Array(bytes.buffer, bytes.byteOffset + scales, n);
  const out = new Float32Array(n), bits = new Uint32Array(out.buffer);
  // a normal half's bits, moved into float32's wider exponent (node, the shipped file's 477,258 scales:
  // ~1 ms, against 53 ms through half())
  for (let i = 0; i < n; i++) {
    const h = raw[i], e = h & 0x7c00;
    if (e === 0 || e === 0x7c00) out[i] = half(h);
    else bits[i] = ((h & 0x8000) << 16) | (((h & 0x7fff) + 0x1c000) << 13);
  }
  return out;
}

export function floatWeights(blob) {
  const magic = String.fromCharCode(...blob.subarray(0, 4));
  if (magic !== "PKW1") throw new Error("not a packed weights file (no PKW1 header)");
  const length = new DataView(blob.buffer, blob.byteOffset + 4, 4).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(blob.subarray(8, 8 + length)));
  const out = new Float32Array(header.bytes / 4);
  // a fresh copy: the offsets are 4-byte aligned from the file's start, the Uint8Array may not be
  const bytes = blob.byteOffset % 4 ? blob.slice() : blob;
  for (const t of header.tensors) {
    const { rows, cols, bits, block: [br, bc], q, at } = t;
    if (bits !== 8 && bits !== 4) throw new Error(`unknown weight width ${bits}`);
    const n = rows * cols, scale = scalesOf(bytes, t);
    const values = bits === 8 ? new Int8Array(bytes.buffer, bytes.byteOffset + q, n)
      : new Uint8Array(bytes.buffer, bytes.byteOffset + q, Math.ceil(n / 2));
    if (t.gathered) { // an embedding table: its int8 values and float32 scales; the graph scales the rows it reads
      const table = new Int8Array(out.buffer, at, n);
      if (bits === 8) table.set(values);
      else {
        for (let j = 0; j < n >> 1; j++) { table[2 * j] = lo(values[j]); table[2 * j + 1] = hi(values[j]); }
        if (n & 1) table[n - 1] = nibble(values, n - 1);
      }
      out.set(scale, t.scales_at / 4);
      continue;
    }
    const w = out.subarray(at / 4, at / 4 + n);
    const perRow = Math.ceil(cols / bc);
    const pairs = bits === 4 && cols % 2 === 0 && (bc === 1 || bc % 2 === 0); // whole bytes per row and block
    for (let r = 0, i = 0; r < rows; r++) {
      const first = ((r / br) | 0) * perRow;
      if (bc === 1 && bits === 8) { // a scale per column
        for (let c = first; i < (r + 1) * cols; i++, c++) w[i] = values[i] * scale[c];
        continue;
      }
      if (bc === 1 && pairs) { // a scale per column: two columns per byte
        for (let c = first; i < (r + 1) * cols; i += 2, c += 2) {
          const v = values[i >> 1];
          w[i] = lo(v) * scale[c];
          w[i + 1] = hi(v) * scale[c + 1];
        }
        continue;
      }
      for (let b = 0; b < perRow; b++) {
        const s = scale[first + b], end = i + Math.min(bc, cols - b * bc);
        if (bits === 8) for (; i < end; i++) w[i] = values[i] * s;
        else if (pairs) {
          for (; i < end; i += 2) { const v = values[i >> 1]; w[i] = lo(v) * s; w[i + 1] = hi(v) * s; }
        } else for (; i < end; i++) w[i] = nibble(values, i) * s;
      }
    }
  }
  return { path: header.location, data: new Uint8Array(out.buffer) };
}
