"""A graph's large weights stored as 8- or 4-bit integers beside it, turned back into float before onnxruntime.

`pack(path, plan)` moves the float initializers the plan names out of the ONNX graph: each becomes float
external data at LOCATION (named in the file; no such file exists, so a runtime given the graph alone
fails loudly), and NAME.weights beside the graph holds their integers and scales. Why not let onnxruntime
dequantize (Cast + Mul or DequantizeLinear in the graph): onnxruntime-web folded those on every visit,
in wasm code not yet optimised by the browser (return visit, bench.browser idle: text session 0.66 s
with the folding, 0.35-0.38 s with float weights handed in as external data, rebuilt by JavaScript in
0.04-0.07 s, the "weights" phase).

  b"PKW1", header length (uint32, little-endian), header JSON, zero padding to a multiple of 4, data
  header {"location": "NAME.float32", "bytes": float file size,
          "tensors": [{"name", "rows", "cols", "bits", "block", "scale", "q", "scales", "at"}, ...]}
    bits 8: rows x cols int8 values (row-major) at byte offset q
    bits 4: the same values two to a byte, element i in byte i // 2, low nibble first, two's complement
    block [br, bc]: one scale per br rows x bc columns; scales at byte offset `scales`, ceil(rows / br) x
      ceil(cols / bc) of them, row-major, as "f32" or "f16" (IEEE half, little-endian)
    at: byte offset of the tensor's float32 values in the float file (the offset the graph names)
    gathered (optional, true): an embedding table kept int8 in memory: at `at` the float file holds its
      int8 values, at `scales_at` its scales as float32 [rows, cols / bc]; the graph scales the rows it
      gathers (gather_then_scale)

The float file holds each weight float32(q[r, c]) * float32(scale[r // br, c // bc]) at its `at`: one
correctly rounded float32 product (the integer has at most 8 bits, the scale 24: exact in float64, so
JavaScript's one rounding on store is numpy's), bit-identical in numpy and JavaScript. `model_source`
rebuilds it here (predict, serve, the export's checks, benchmarks) and checks it against the graph's
external entries (names, offsets, lengths); assets/js/weights.js rebuilds it in the browser.
"""

import json
import struct
from pathlib import Path

import numpy as np

MAGIC = b"PKW1"


SUFFIX = ".weights"


LEVELS = {8: 127, 4: 7}  # symmetric: q in [-LEVELS, LEVELS]


SCALE_TYPES = {"f32": "<f4", "f16": "<f2"}


def blob_path(path: Path) -> Path:
    return Path(path).with_suffix(SUFFIX)


def grid(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """How many blocks (scales) cover a [rows, cols] weight: ceil(rows / br) x ceil(cols / bc)."""
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


def per_weight(s: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Block scales [ceil(rows/br), ceil(cols/bc)] as float32, one per weight [rows, cols]."""
    return np.repeat(np.repeat(s.astype(np.float32), block[0], 0), block[1], 1)[: shape[0], : shape[1]]


def dequantize(q: np.ndarray, s: np.ndarray, block: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """float32(q) * float32(its block's scale), one rounding per weight, [rows, cols] (into `out` when given).
    Whole blocks broadcast the scales instead of repeating them (the same products, no [rows, cols] scale copy)."""
    (rows, cols), (br, bc) = q.shape, block
    out = np.empty(q.shape, np.float32) if out is None else out
    if rows % br or cols % bc:  # edge blocks: the scales repeated to the weights' shape
        return np.multiply(q, per_weight(s, block, q.shape), out=out, dtype=np.float32)
    blocks = (rows // br, br, cols // bc, bc)
    np.multiply(q.reshape(blocks), s.astype(np.float32)[:, None, :, None], out=out.reshape(blocks), dtype=np.float32)
    return out


def unnibble(data: bytes, n: int) -> np.ndarray:
    """n int8 values from two's-complement nibbles, low nibble first (sign-extended by arithmetic shifts)."""
    b = np.frombuffer(data, np.uint8, (n + 1) // 2)
    out = np.empty((len(b), 2), np.int8)
    np.right_shift(np.left_shift(b, 4).view(np.int8), 4, out=out[:, 0])
    np.right_shift(b.view(np.int8), 4, out=out[:, 1])
    return out.reshape(-1)[:n]


def read_blob(blob: bytes) -> dict:
    """The header: {"location", "bytes", "tensors"}."""
    if blob[:4] != MAGIC:
        raise ValueError("not a packed weights file (no PKW1 header)")
    (n,) = struct.unpack("<I", blob[4:8])
    return json.loads(blob[8 : 8 + n])


def tensor(blob: bytes, t: dict) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [rows, cols], scales) of one header entry."""
    n, (br, bc) = t["rows"] * t["cols"], t["block"]
    q = np.frombuffer(blob, np.int8, n, t["q"]) if t["bits"] == 8 else unnibble(memoryview(blob)[t["q"] :], n)
    shape = grid((t["rows"], t["cols"]), (br, bc))
    s = np.frombuffer(blob, SCALE_TYPES[t["scale"]], shape[0] * shape[1], t["scales"]).reshape(shape)
    return q.reshape(t["rows"], t["cols"]), s


def float_weights(blob: bytes) -> tuple[dict, bytearray]:
    """(the header, the bytes the graph reads at its location: float32 weights; a gathered table's int8
    values and float32 scales)."""
    header = read_blob(blob)
    out = bytearray(header["bytes"])
    for t in header["tensors"]:  # each written in place, through a view of `out` (no temporary copies)
        q, s = tensor(blob, t)
        if t.get("gathered"):
            np.frombuffer(out, np.int8, q.size, t["at"])[:] = q.reshape(-1)
            np.frombuffer(out, "<f4", s.size, t["scales_at"])[:] = s.reshape(-1)
        else:
            dequantize(q, s, t["block"], np.frombuffer(out, "<f4", q.size, t["at"]).reshape(q.shape))
    return header, out


def places(header: dict) -> dict[str, tuple[int, int]]:
    """Every external tensor the file provides: name → (offset, length) in the rebuilt bytes."""
    out = {}
    for t in header["tensors"]:
        n = t["rows"] * t["cols"]
        if t.get("gathered"):
            out[t["name"]] = (t["at"], n)
            out[t["name"] + "_scale"] = (t["scales_at"], 4 * t["rows"] * (t["cols"] // t["block"][1]))
        else:
            out[t["name"]] = (t["at"], 4 * n)
    return out


def shipped_files(path: Path) -> list[Path]:
    """The graph and, when it has one, its weights file: what is shipped and sized together."""
    return [Path(path)] + ([blob_path(path)] if blob_path(path).exists() else [])


def external_data(blob: bytes) -> tuple[str, np.ndarray]:
    """(the float file's name the graph refers to, its bytes rebuilt from a NAME.weights file's bytes), for
    onnxruntime's in-memory external data, as the browser hands them over (externalData). onnxruntime copies
    them into the session: the array may go once the session exists. The graph is not parsed here (no onnx
    import): export checked that the two agree (pipeline/export/packing.model_source) and the manifest's
    sha256 pins the pair (pipeline/runtime/manifest.py)."""
    header, data = float_weights(blob)
    return header["location"], np.frombuffer(data, np.uint8)


def in_memory(path: Path) -> tuple[str, np.ndarray] | None:
    """external_data of the weights file beside the graph at `path`; None without one."""
    blob = blob_path(Path(path))
    return external_data(blob.read_bytes()) if blob.exists() else None
