// A graph's int8 weights file (NAME.int8, written by pipeline/int8_weights.py, whose docstring has the
// layout) → the float32 bytes the graph reads as external data: every weight float32(q[r][c]) * scale[c],
// tensor after tensor. Rebuilt here rather than by onnxruntime (the graph's Cast + Mul, folded at session
// creation) because onnxruntime-web ran that folding in freshly compiled wasm on every visit (0.2-0.4 s);
// this loop is optimised JavaScript (~30 ms for the text encoder's 10.6 M weights).
// Returns {path, data}: one entry of onnxruntime-web's externalData session option.
export function floatWeights(blob) {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const magic = String.fromCharCode(...blob.subarray(0, 4));
  if (magic !== "I8W1") throw new Error("not an int8 weights file (no I8W1 header)");
  const header = JSON.parse(new TextDecoder().decode(blob.subarray(8, 8 + view.getUint32(4, true))));
  const total = header.tensors.reduce((n, t) => n + t.rows * t.cols, 0);
  const out = new Float32Array(total);
  // a fresh copy: the offsets are 4-byte aligned from the file's start, the Uint8Array may not be
  const bytes = blob.byteOffset % 4 ? blob.slice() : blob;
  let at = 0;
  for (const { rows, cols, q, scales } of header.tensors) {
    const values = new Int8Array(bytes.buffer, bytes.byteOffset + q, rows * cols);
    const scale = new Float32Array(bytes.buffer, bytes.byteOffset + scales, cols);
    for (let r = 0, i = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++, i++) out[at + i] = values[i] * scale[c]; // exact product, rounded once on store
    }
    at += rows * cols;
  }
  return { path: header.location, data: new Uint8Array(out.buffer) };
}
