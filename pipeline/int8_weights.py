"""int8-stored MatMul weights packed beside their ONNX graph, turned back into float before onnxruntime.

quantize.weights_only_int8 stores each large MatMul weight as int8 times a float32 scale per output
column (Cast + Mul in the graph, folded by onnxruntime when a session is created). onnxruntime-web
did that folding on every visit, in wasm code not yet optimised by the browser: on a return visit
(bench.browser, idle) the text encoder's session took 0.66 s with it and 0.35-0.38 s with the same
float weights handed in as external data, which JavaScript rebuilt in 0.04-0.07 s ("weights" phase).

So `pack` rewrites such a graph: the Cast + Mul pairs go, each weight becomes float external data at
LOCATION (named in the blob; no such file exists, so a runtime given the graph alone fails loudly), and
NAME.int8 beside the graph holds the int8 values and scales:

  b"I8W1", header length (uint32, little-endian), header JSON, zero padding to a multiple of 4, data
  header {"location": "NAME.float32", "bytes": float file size,
          "tensors": [{"name", "rows", "cols", "q", "scales", "at"}, ...]}
    q: byte offset of rows x cols int8 values (row-major); scales: byte offset of cols float32 (LE);
    at: byte offset of the tensor's float32 values in the float file (the offset the graph names)

The float file holds each tensor's float32(q[r, c]) * scales[c] at its `at`: one correctly rounded
float32 product, bit-identical in numpy, JavaScript and onnxruntime's Mul. `model_source` rebuilds it
here (predict, serve, the export's checks, benchmarks) and checks it against the graph's external
entries (names, offsets, lengths); assets/js/weights.js rebuilds it in the browser.
"""

import json
import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MAGIC = b"I8W1"
SUFFIX = ".int8"


def blob_path(path: Path) -> Path:
    return Path(path).with_suffix(SUFFIX)


def pack(path: Path) -> Path | None:
    """Rewrite the graph at `path` (Cast(int8 initializer) -> Mul(scale initializer) feeding each packed
    weight) and write its NAME.int8; returns that path. A graph with no such pair is left as it is."""
    path = Path(path)
    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    location = path.with_suffix(".float32").name
    tensors, chunks, drop_nodes, drop_inits = [], [], set(), set()
    at = 0  # float bytes so far
    for cast in g.node:
        q_init = inits.get(cast.input[0]) if cast.op_type == "Cast" else None
        uses = consumers.get(cast.output[0], [])
        if q_init is None or q_init.data_type != onnx.TensorProto.INT8 or len(uses) != 1 or uses[0].op_type != "Mul":
            continue
        if next(a.i for a in cast.attribute if a.name == "to") != onnx.TensorProto.FLOAT:
            continue
        mul = uses[0]
        s_init = inits.get(mul.input[1])
        if len(q_init.dims) != 2 or s_init is None or s_init.data_type != onnx.TensorProto.FLOAT:
            continue
        rows, cols = q_init.dims
        if list(s_init.dims) not in ([1, cols], [cols]):  # one scale per output column, nothing else
            continue
        q, scales = numpy_helper.to_array(q_init), numpy_helper.to_array(s_init).astype("<f4").reshape(-1)
        weight = onnx.TensorProto(name=mul.output[0], data_type=onnx.TensorProto.FLOAT, dims=[rows, cols])
        weight.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(at)), ("length", str(4 * rows * cols))):
            weight.external_data.add(key=key, value=value)
        g.initializer.append(weight)
        tensors.append({"name": weight.name, "rows": rows, "cols": cols, "at": at})
        chunks.append((q.astype(np.int8).tobytes(), scales.tobytes()))
        drop_nodes.update((id(cast), id(mul)))
        drop_inits.update((q_init.name, s_init.name))
        at += 4 * rows * cols
    if not tensors:
        blob_path(path).unlink(missing_ok=True)
        return None
    kept = [n for n in g.node if id(n) not in drop_nodes]
    del g.node[:]
    g.node.extend(kept)
    kept_inits = [i for i in g.initializer if i.name not in drop_inits]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
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
    out.write_bytes(bytes(body))
    return out


def read_blob(blob: bytes) -> dict:
    """The header: {"location", "bytes", "tensors"}."""
    if blob[:4] != MAGIC:
        raise ValueError("not an int8 weights file (no I8W1 header)")
    (n,) = struct.unpack("<I", blob[4:8])
    return json.loads(blob[8 : 8 + n])


def float_weights(blob: bytes) -> tuple[dict, bytearray]:
    """(the header, the float32 bytes the graph reads at its location)."""
    header = read_blob(blob)
    out = bytearray(header["bytes"])
    for t in header["tensors"]:
        q = np.frombuffer(blob, np.int8, t["rows"] * t["cols"], t["q"]).reshape(t["rows"], t["cols"])
        s = np.frombuffer(blob, "<f4", t["cols"], t["scales"])
        out[t["at"] : t["at"] + 4 * q.size] = (q.astype(np.float32) * s).astype("<f4").tobytes()
    return header, out


def model_source(path: Path) -> str | bytes:
    """What onnxruntime.InferenceSession takes for the graph at `path`: its path, or, when NAME.int8 is
    beside it, the graph with the rebuilt float weights inside (bytes)."""
    path = Path(path)
    if not blob_path(path).exists():
        return str(path)
    model = load_graph(path)
    header, data = float_weights(blob_path(path).read_bytes())
    # the graph's external weights and the file's tensors must be the same list: a stale or foreign
    # weights file is refused, never read as weights
    wanted = {t["name"]: (t["at"], 4 * t["rows"] * t["cols"]) for t in header["tensors"]}
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        place = (int(info.get("offset", 0)), int(info["length"]))
        if info["location"] != header["location"] or wanted.pop(init.name, None) != place:
            raise ValueError(
                f"{blob_path(path).name} does not hold {path.name}'s weight {init.name}: export them together"
            )
        init.raw_data = bytes(data[place[0] : place[0] + place[1]])
        del init.external_data[:]
        init.data_location = onnx.TensorProto.DEFAULT
    if wanted:
        raise ValueError(f"{blob_path(path).name} holds weights {path.name} does not name: export them together")
    return model.SerializeToString()


def load_graph(path: Path) -> onnx.ModelProto:
    """The ONNX model without its external weights (they are not read)."""
    return onnx.load(str(path), load_external_data=False)


def shipped_files(path: Path) -> list[Path]:
    """The graph and, when it has one, its weights file: what is shipped and sized together."""
    return [Path(path)] + ([blob_path(path)] if blob_path(path).exists() else [])
