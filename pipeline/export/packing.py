"""Writing the packed weights format (pipeline/runtime/packed_weights.py describes it): rounding weights to
8- or 4-bit blocks and moving them out of an ONNX graph into NAME.weights; `model_source` rebuilds a graph with
its float weights inside and checks the two agree (export checks, tests). A weight of more than two dimensions
(a convolution's [M, C, kh, kw]) is packed as the matrix of its row-major values, [M, C * kh * kw]
(matrix_shape): the float32 bytes the graph reads are the same, and the graph keeps its own dimensions."""

import json
import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.runtime.packed_weights import (
    LEVELS,
    MAGIC,
    SCALE_TYPES,
    blob_path,
    float_weights,
    grid,
    per_weight,
    places,
    read_blob,
)

CLIPS = {8: (1.0,), 4: (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)}  # a block's scale: its largest |w| x clip / LEVELS


def matrix_shape(dims) -> tuple[int, int]:
    """The [rows, cols] a weight of dimensions `dims` (2 or more) is packed as: its first dimension by the rest."""
    return int(dims[0]), int(np.prod(dims[1:], dtype=np.int64))


def blocks_of(a: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """`a` zero-padded to whole blocks, as [row blocks, br, column blocks, bc]."""
    (row_blocks, col_blocks), (br, bc) = grid(a.shape, block), block
    pad = np.zeros((row_blocks * br, col_blocks * bc), np.float32)
    rows, cols = a.shape
    pad[:rows, :cols] = a
    return pad.reshape(pad.shape[0] // br, br, pad.shape[1] // bc, bc)


def levels(w: np.ndarray, s: np.ndarray, bits: int) -> np.ndarray:
    """w / s rounded to the nearest of the symmetric levels -LEVELS[bits]..LEVELS[bits] (as floats)."""
    return np.clip(np.round(w / s), -LEVELS[bits], LEVELS[bits])


def quantize(w: np.ndarray, bits: int, block: tuple[int, int], scale: str) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [rows, cols], scales [ceil(rows/br), ceil(cols/bc)]): symmetric; each block's scale, stored
    as `scale` type, is its largest |w| x clip / LEVELS[bits] with the clip of CLIPS[bits] whose rounding
    leaves the block the smallest squared error (8 bits: no clipping; 4 bits: clipping the largest values
    lets the many small ones keep more levels). q is rounded against the stored scale."""
    w = np.asarray(w, np.float32)
    rows, cols = w.shape
    wb = blocks_of(w, block)
    peak = np.abs(wb).max((1, 3))
    best_err, best = None, None
    for clip in CLIPS[bits]:
        s = (peak * np.float32(clip) / LEVELS[bits]).astype(SCALE_TYPES[scale])
        s[s == 0] = 1
        sf = s.astype(np.float32)[:, None, :, None]
        err = ((levels(wb, sf, bits) * sf - wb) ** 2).sum((1, 3))
        if best is None:
            best_err, best = err, s
        else:
            better = err < best_err
            best_err, best = np.where(better, err, best_err), np.where(better, s, best)
    q = levels(w, per_weight(best, block, w.shape), bits).astype(np.int8)
    return q, best


def nibbles(q: np.ndarray) -> bytes:
    flat = (q.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if len(flat) % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def external(name: str, data_type: int, dims: list[int], location: str, at: int, length: int) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=data_type, dims=dims)
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(at)), ("length", str(length))):
        t.external_data.add(key=key, value=value)
    return t


def gather_then_scale(g: onnx.GraphProto, table: str, blocks: int, width: int):
    """Each Gather reading the int8 `table` [rows, blocks * width] gets its rows' scales (TABLE_scale
    [rows, blocks], gathered with the same indices) applied after it: float32(q) * scale, the products
    the float table would hold, for the gathered rows only."""
    from onnx import helper

    nodes = []
    for n in g.node:
        if n.op_type != "Gather" or n.input[0] != table:
            nodes.append(n)
            continue
        if any(a.name == "axis" and a.i != 0 for a in n.attribute):
            raise ValueError(f"{table} is gathered along an axis other than rows")
        out = n.output[0]
        p = f"{n.name or out}/scaled"
        n.output[0] = f"{p}/q"
        const = {
            f"{p}/blocks": np.array([blocks, width], np.int64),
            f"{p}/row": np.array([blocks * width], np.int64),
            f"{p}/last": np.array([-1], np.int64),
        }
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in const.items())
        nodes += [
            n,
            helper.make_node("Cast", [f"{p}/q"], [f"{p}/f"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Shape", [n.input[1]], [f"{p}/idx_shape"]),
            helper.make_node("Concat", [f"{p}/idx_shape", f"{p}/blocks"], [f"{p}/blocked_shape"], axis=0),
            helper.make_node("Concat", [f"{p}/idx_shape", f"{p}/row"], [f"{p}/row_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}/f", f"{p}/blocked_shape"], [f"{p}/blocked"]),
            helper.make_node("Gather", [table + "_scale", n.input[1]], [f"{p}/s"]),
            helper.make_node("Unsqueeze", [f"{p}/s", f"{p}/last"], [f"{p}/s1"]),
            helper.make_node("Mul", [f"{p}/blocked", f"{p}/s1"], [f"{p}/scaled"]),
            helper.make_node("Reshape", [f"{p}/scaled", f"{p}/row_shape"], [out]),
        ]
    del g.node[:]
    g.node.extend(nodes)


def pack(path: Path, plan: dict[str, tuple[int, tuple[int, int], str]], gathered=(), quantized=None) -> Path:
    """Move the float initializers `plan` names ({name: (bits, (br, bc), scale type)}) out of the graph
    at `path` into NAME.weights; returns that path. Every planned name must be a float initializer of 2 or more
    dimensions (packed as its matrix_shape). Each is rounded by `quantize`, unless `quantized` ({name: (q,
    scales)}, e.g. pipeline/export/gptq.py's, in `quantize`'s layout for its plan entry) gives its integers and
    scales.
    A name in `gathered` (a table only Gather reads, block (1, bc)) is rebuilt as int8 values plus float32
    scales, not as floats: its Gathers scale the rows they read (gather_then_scale), and the table
    takes a byte per value in memory instead of four."""
    path = Path(path)
    quantized = quantized or {}
    if set(quantized) - set(plan):
        raise ValueError(f"integers given for weights the plan does not name: {sorted(set(quantized) - set(plan))}")
    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    location = path.with_suffix(".float32").name
    tensors, chunks, at = [], [], 0
    for name, (bits, block, scale) in plan.items():
        init = inits[name]
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2:
            raise ValueError(f"{name} is not a float initializer of 2 or more dimensions")
        dims, shape = list(init.dims), matrix_shape(init.dims)
        if name in quantized:
            q, s = quantized[name]
        else:
            q, s = quantize(numpy_helper.to_array(init).reshape(shape), bits, block, scale)
        rows, cols = q.shape
        fits = (rows, cols) == shape and s.shape == grid(q.shape, block) and s.dtype == SCALE_TYPES[scale]
        fits = fits and bool(np.isfinite(s).all())  # no NaN or infinite scale: the rebuilds agree on finite ones
        if not fits or q.dtype != np.int8 or q.min() < -LEVELS[bits] or q.max() > LEVELS[bits]:
            raise ValueError(f"{name}: integers or scales not in the plan's layout")
        values = q.tobytes() if bits == 8 else nibbles(q)
        chunks.append((values, s.tobytes()))
        entry = {"name": name, "rows": rows, "cols": cols, "bits": bits, "block": list(block), "scale": scale, "at": at}
        if name in gathered:
            if block[0] != 1 or cols % block[1] or len(dims) != 2:
                raise ValueError(f"{name}: a gathered table needs whole-row blocks that divide its width")
            entry["gathered"] = True
            entry["scales_at"] = at + rows * cols + (-(rows * cols) % 4)
            init.CopyFrom(external(name, onnx.TensorProto.INT8, [rows, cols], location, at, rows * cols))
            n_scales = rows * (cols // block[1])
            g.initializer.append(
                external(
                    name + "_scale",
                    onnx.TensorProto.FLOAT,
                    [rows, cols // block[1]],
                    location,
                    entry["scales_at"],
                    4 * n_scales,
                )
            )
            gather_then_scale(g, name, cols // block[1], block[1])
            at = entry["scales_at"] + 4 * n_scales
        else:
            init.CopyFrom(external(name, onnx.TensorProto.FLOAT, dims, location, at, 4 * rows * cols))
            at += 4 * rows * cols
        tensors.append(entry)
    onnx.save(model, str(path))  # no tensor is loaded from LOCATION: the external entries are written as they are
    return write_blob(blob_path(path), {"location": location, "bytes": at}, tensors, chunks)


def write_blob(out: Path, about: dict, tensors: list[dict], chunks: list[tuple[bytes, bytes]]) -> Path:
    def header_bytes(offset_of_data: int) -> bytes:
        at = offset_of_data
        for t, (q, s) in zip(tensors, chunks):
            t["q"] = at
            at += len(q)
            at += -at % 4  # scales on a 4-byte boundary: a Float32Array view needs it
            t["scales"] = at
            at += len(s)
            at += -at % 4
        return json.dumps({**about, "tensors": tensors}, separators=(",", ":")).encode()

    # the header's offsets depend on its own length: settle it (a few digits more can move the data once)
    start = 0
    while True:
        head = header_bytes(start)
        data_start = 8 + len(head) + (-(8 + len(head)) % 4)
        if data_start == start:
            break
        start = data_start
    body = bytearray(MAGIC + struct.pack("<I", len(head)) + head)
    body += b"\0" * (data_start - len(body))
    for t, (q, s) in zip(tensors, chunks):
        body += q
        body += b"\0" * (t["scales"] - len(body))
        body += s
    body += b"\0" * (-len(body) % 4)
    out.write_bytes(bytes(body))
    return out


def model_source(path: Path) -> str | bytes:
    """What onnxruntime.InferenceSession takes for the graph at `path`: its path, or, when NAME.weights is
    beside it, the graph with the rebuilt float weights inside (bytes)."""
    path = Path(path)
    if not blob_path(path).exists():
        return str(path)
    model = load_graph(path)
    blob = blob_path(path).read_bytes()
    header = read_blob(blob)
    # the graph's external weights and the file's tensors must be the same list (checked before anything is
    # rebuilt): a stale or foreign weights file is refused, never read as weights
    wanted, external = places(header), {}
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        place = (int(info.get("offset", 0)), int(info["length"]))
        if info["location"] != header["location"] or wanted.pop(init.name, None) != place:
            raise ValueError(
                f"{blob_path(path).name} does not hold {path.name}'s weight {init.name}: export them together"
            )
        external[init.name] = (init, place)
    if wanted:
        raise ValueError(f"{blob_path(path).name} holds weights {path.name} does not name: export them together")
    _, data = float_weights(blob)
    for init, (at, length) in external.values():
        init.raw_data = bytes(data[at : at + length])
        del init.external_data[:]
        init.data_location = onnx.TensorProto.DEFAULT
    return model.SerializeToString()


def load_graph(path: Path) -> onnx.ModelProto:
    """The ONNX model without its external weights (they are not read)."""
    return onnx.load(str(path), load_external_data=False)
