// A graph's int8 weights file (NAME.int8, written by pipeline/int8_weights.py, whose docstring has the
// layout) → the float32 bytes the graph reads as external data: each weight float32(q[r][c]) * scale[c]
// at the tensor's offset `at`. Rebuilt here rather than by onnxruntime (the graph's Cast + Mul, folded at
// session creation) because onnxruntime-web did that folding on every visit in wasm not yet optimised
// by the browser (return visit: text session 0.66 s with it, 0.35-0.38 s without; this loop, the
// "weights" phase, 0.04-0.07 s: bench/browser.py).
// Returns {path, data}: one entry of onnxruntime-web's externalData session option.
export function floatWeights(blob) {
  const magic = String.fromCharCode(...blob.subarray(0, 4));
  if (magic !== "I8W1") throw new Error("not an int8 weights file (no I8W1 header)");
  const length = new DataView(blob.buffer, blob.byteOffset + 4, 4).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(blob.subarray(8, 8 + length)));
  const out = new Float32Array(header.bytes / 4);
  // a fresh copy: the offsets are 4-byte aligned from the file's start, the Uint8Array may not be
  const bytes = blob.byteOffset % 4 ? blob.slice() : blob;
  for (const { rows, cols, q, scales, at } of header.tensors) {
    const values = new Int8Array(bytes.buffer, bytes.byteOffset + q, rows * cols);
    const scale = new Float32Array(bytes.buffer, bytes.byteOffset + scales, cols);
    const start = at / 4;
    for (let r = 0, i = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++, i++) out[start + i] = values[i] * scale[c]; // exact product, rounded once on store
    }
  }
  return { path: header.location, data: new Uint8Array(out.buffer) };
}
