"""pipeline/runtime/packed_weights.py and pipeline/export/packing.py: an 8-bit packed graph computes exactly
what the same integers dequantized in the graph (Cast + Mul, folded by onnxruntime) computed, for MatMul and
convolution weights; every format rebuilds one rounded product per weight; a graph fails loudly without its
weights file. The browser's copy of the rebuild is checked against this one in tests/test_browser.py
(test_browser_rebuilds_the_same_float_weights)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.export import packing, quantize
from pipeline.runtime import packed_weights


def cast_mul(path, plan):
    """The reference for the packed graph: each planned weight of `path` replaced, in the graph, by its
    integers (packing.quantize, as pack rounds them) and a Cast + Mul by its scales, which onnxruntime
    folds at load: float32(q) * scale, one rounding. (The poster encoder shipped this way until its weights
    moved to the packed format.)"""
    model = onnx.load(str(path))
    g = model.graph
    nodes = []
    for init in g.initializer:
        if init.name not in plan:
            continue
        bits, block, scale = plan[init.name]
        w = numpy_helper.to_array(init)
        q, s = packing.quantize(w.reshape(packing.matrix_shape(w.shape)), bits, block, scale)
        if block[0] == 1 and block[1] == q.shape[1]:  # a scale per row (a convolution's filter)
            s = s.astype(np.float32).reshape(-1, *[1] * (w.ndim - 1))
        elif block == (q.shape[0], 1) and w.ndim == 2:  # a scale per column
            s = s.astype(np.float32).reshape(1, -1)
        else:
            raise ValueError("cast_mul covers per-row and per-column scales")
        name = init.name
        init.CopyFrom(numpy_helper.from_array(q.reshape(w.shape), name + "_int8"))
        g.initializer.append(numpy_helper.from_array(s, name + "_scale"))
        nodes.append(helper.make_node("Cast", [name + "_int8"], [name + "_float"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [name + "_float", name + "_scale"], [name]))
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.save(model, str(path))


def two_matmuls(path, k: int, n: int, seed: int):
    """x [1, k] → MatMul [k, n] → Relu → MatMul [n, 3]: float weights large enough to be stored int8."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (k, n)).astype(np.float32) * rng.uniform(0.01, 3, n).astype(np.float32)
    w2 = rng.normal(0, 1, (n, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def plan_for(path, bits, block, scale):
    """Every MatMul weight of `path` in one format (block None: one scale per output column)."""
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    return {w: (bits, block or (inits[w].dims[0], 1), scale) for w in ("w1", "w2")}


FORMATS = {  # (bits, block, scale type): the 8-bit per-column format and the 4-bit blocked ones export uses
    "int8 per column": (8, None, "f32"),
    "int4 32-row blocks": (4, (32, 1), "f16"),
    "int4 row blocks of 64": (4, (1, 64), "f16"),
    "int4 3x5 blocks": (4, (3, 5), "f32"),  # blocks that do not divide the shape
}


@pytest.mark.parametrize("k,n", [(128, 256), (200, 131), (64, 1023)])  # odd widths: scales need padding to 4 bytes
def test_int8_packed_graph_gives_the_cast_mul_graphs_outputs_bit_for_bit(tmp_path, k, n):
    folded, packed = tmp_path / "folded.onnx", tmp_path / "packed.onnx"
    two_matmuls(folded, k, n, seed=k + n)
    packed.write_bytes(folded.read_bytes())
    plan = plan_for(packed, *FORMATS["int8 per column"])
    cast_mul(folded, plan)  # every weight int8 x per-column scale: Cast + Mul
    blob = packing.pack(packed, plan)
    assert blob == tmp_path / "packed.weights"
    ops = [node.op_type for node in packing.load_graph(packed).graph.node]
    assert ops == ["MatMul", "Relu", "MatMul"]  # no dequantizing node in the graph
    header = packed_weights.read_blob(blob.read_bytes())
    tensors = header["tensors"]
    assert header["location"] == "packed.float32" and [t["rows"] * t["cols"] for t in tensors] == [k * n, n * 3]
    assert all(t["scales"] % 4 == 0 for t in tensors)  # a Float32Array view of the scales needs it
    assert [t["at"] for t in tensors] == [0, 4 * k * n] and header["bytes"] == 4 * (k * n + n * 3)
    x = np.random.default_rng(0).normal(0, 1, (1, k)).astype(np.float32)
    want = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = quantize.session(packed).run(None, {"x": x})[0]
    assert np.array_equal(want, got)


def two_convs(path, seed: int):
    """image [1, 3, 9, 7] → Conv 3x3 (8 filters) → Relu → depthwise Conv 3x3 → Conv 1x1 (5 filters)."""
    rng = np.random.default_rng(seed)
    shapes = {"c1": (8, 3, 3, 3), "c2": (8, 1, 3, 3), "c3": (5, 8, 1, 1)}
    w = {k: (rng.normal(0, 1, v) * rng.uniform(0.01, 3, (v[0], 1, 1, 1))).astype(np.float32) for k, v in shapes.items()}
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["a"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "c2"], ["b"], name="depthwise", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Conv", ["b", "c3"], ["y"], name="pointwise"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 9, 7])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_packed_convolutions_give_the_cast_mul_graphs_outputs_bit_for_bit(tmp_path):
    """The poster encoder's format: each filter of a [M, C, kh, kw] weight 8-bit with its own float32 scale,
    packed as M rows of C * kh * kw values, the graph keeping the weight's own dimensions."""
    folded, packed = tmp_path / "folded.onnx", tmp_path / "packed.onnx"
    two_convs(folded, seed=3)
    packed.write_bytes(folded.read_bytes())
    plan = quantize.packing_plan(packed, conv=quantize.POSTER_WEIGHTS, min_size=0)
    assert plan == {"c1": (8, (1, 27), "f32"), "c2": (8, (1, 9), "f32"), "c3": (8, (1, 8), "f32")}
    cast_mul(folded, plan)
    packing.pack(packed, plan)
    inits = {i.name: i for i in packing.load_graph(packed).graph.initializer}
    assert [list(inits[k].dims) for k in ("c1", "c2", "c3")] == [[8, 3, 3, 3], [8, 1, 3, 3], [5, 8, 1, 1]]
    header = packed_weights.read_blob(packed_weights.blob_path(packed).read_bytes())
    assert [(t["rows"], t["cols"]) for t in header["tensors"]] == [(8, 27), (8, 9), (5, 8)]
    x = np.random.default_rng(0).normal(0, 50, (1, 3, 9, 7)).astype(np.float32)
    want = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = quantize.session(packed).run(None, {"x": x})[0]
    assert np.array_equal(want, got)


@pytest.mark.parametrize("fmt", FORMATS)
def test_float_weights_are_one_rounded_product_per_weight(tmp_path, fmt):
    """Each rebuilt weight is float32(q) * float32(its block's scale), q within the format's levels, and
    no block is rounded worse than with its largest |w| setting the scale."""
    path = tmp_path / "m.onnx"
    two_matmuls(path, 96, 40, seed=1)
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    bits, block, scale = FORMATS[fmt]
    packing.pack(path, plan_for(path, bits, block, scale))
    raw = packed_weights.blob_path(path).read_bytes()
    header, data = packed_weights.float_weights(raw)
    floats = np.frombuffer(data, "<f4")
    for t in header["tensors"]:
        q, s = packed_weights.tensor(raw, t)
        assert np.abs(q).max() <= packed_weights.LEVELS[bits] and s.dtype == np.dtype(packed_weights.SCALE_TYPES[scale])
        br, bc = t["block"]
        full = np.repeat(np.repeat(s.astype(np.float32), br, 0), bc, 1)[: t["rows"], : t["cols"]]
        got = floats[t["at"] // 4 : t["at"] // 4 + q.size].reshape(q.shape)
        assert got.tobytes() == (q.astype(np.float32) * full).astype("<f4").tobytes()
        # against plain rounding (each block's scale its largest |w| / levels, as 8 bits always uses): never a
        # larger squared error per block, since the clip search includes that scale
        w = original[t["name"]]
        blocks = packing.blocks_of
        plain = (blocks(np.abs(w), (br, bc)).max((1, 3)) / packed_weights.LEVELS[bits]).astype(s.dtype)
        plain[plain == 0] = 1
        pf = np.repeat(np.repeat(plain.astype(np.float32), br, 0), bc, 1)[: t["rows"], : t["cols"]]
        plain_w = np.clip(np.round(w / pf), -packed_weights.LEVELS[bits], packed_weights.LEVELS[bits]) * pf
        err, plain_err = (blocks((a - w) ** 2, (br, bc)).sum((1, 3)) for a in (got, plain_w))
        assert (err <= plain_err).all()
        if bits == 8:
            assert np.array_equal(s, plain)  # 8 bits: the largest |w| sets the scale, nothing clipped
        else:
            assert (err < plain_err).any()  # 4 bits: the search finds better scales (gaussian weights: it does)


def test_four_bit_values_are_stored_two_to_a_byte(tmp_path):
    q = np.array([[-7, 7, 0], [1, -1, 3], [-8, 5, 2]], np.int8)  # 9 values: an odd count pads the last byte
    assert packing.nibbles(q) == bytes([0x79, 0x10, 0x3F, 0x58, 0x02])
    assert packed_weights.unnibble(packing.nibbles(q), q.size).tolist() == q.ravel().tolist()


def test_a_packed_graph_without_its_weights_file_fails_loudly(tmp_path):
    path = tmp_path / "m.onnx"
    two_matmuls(path, 64, 64, seed=2)
    packing.pack(path, plan_for(path, *FORMATS["int4 32-row blocks"]))
    with pytest.raises(Exception, match="(?i)external"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no m.float32 file: not run on zeros
    blob = packed_weights.blob_path(path)
    blob.write_bytes(b"nope" + bytes(8))
    with pytest.raises(ValueError, match="PKW1"):
        packing.model_source(path)


@pytest.mark.parametrize("change", ["nothing", "location", "name", "offset", "extra tensor"])
def test_a_weights_file_that_does_not_match_its_graph_is_refused(tmp_path, change):
    """A stale or foreign NAME.weights (another export's) is never read as this graph's weights."""
    path = tmp_path / "m.onnx"
    two_matmuls(path, 64, 32, seed=4)
    blob = packing.pack(path, plan_for(path, *FORMATS["int8 per column"]))
    data = blob.read_bytes()
    header = packed_weights.read_blob(data)
    tensors = header.pop("tensors")
    chunks = [
        (data[t["q"] : t["q"] + t["rows"] * t["cols"]], data[t["scales"] : t["scales"] + 4 * t["cols"]])
        for t in tensors
    ]
    if change == "location":
        header["location"] = "other.float32"
    elif change == "name":
        tensors[0]["name"] = "someone_else"
    elif change == "offset":
        tensors[1]["at"] += 4
    elif change == "extra tensor":
        tensors.append(dict(tensors[1], name="spare"))
        chunks.append(chunks[1])
    packing.write_blob(blob, header, tensors, chunks)  # the same values, the header changed
    if change == "nothing":  # the rewrite alone is no reason to refuse
        assert isinstance(packing.model_source(path), bytes)
        return
    with pytest.raises(ValueError, match="export them together"):
        packing.model_source(path)


def test_predict_refuses_a_manifest_naming_another_weights_file(tmp_path):
    """Python finds NAME.weights beside NAME.onnx: a manifest naming another file would mean two truths."""
    import json

    from pipeline.runtime.manifest import ModelsMissing, check_models

    entry = {"file": "text_encoder.onnx", "weights_file": "text_encoder.weights"}
    (tmp_path / "manifest.json").write_text(json.dumps({"text_encoder": entry, "files": {}}))
    with pytest.raises(ModelsMissing, match="no rules"):  # past the weights check: the next one stops it
        check_models(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"text_encoder": {**entry, "weights_file": "w.weights"}, "files": {}})
    )
    with pytest.raises(ModelsMissing, match="must be text_encoder.weights"):
        check_models(tmp_path)


def gather_graph(path, rows: int, cols: int, seed: int):
    """ids [2, T] (int64) → Gather from a float table [rows, cols] → Relu: an embedding lookup."""
    table = np.random.default_rng(seed).normal(0, 1, (rows, cols)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="lookup"), helper.make_node("Relu", ["e"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "T", cols])],
        [numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("bits", [4, 8])
def test_a_gathered_table_gives_the_float_tables_rows_bit_for_bit(tmp_path, bits):
    """A table kept int8 in memory (rows scaled after the Gather) reads exactly the rows the rebuilt float
    table holds, and takes a byte per value in the rebuilt data instead of four."""
    as_float, gathered = tmp_path / "float.onnx", tmp_path / "gathered.onnx"
    for path in (as_float, gathered):
        gather_graph(path, 300, 128, seed=5)
    plan = {"table": (bits, (1, 64), "f16")}
    packing.pack(as_float, plan)
    packing.pack(gathered, plan, gathered={"table"})
    ids = np.random.default_rng(1).integers(0, 300, (2, 7)).astype(np.int64)
    want = quantize.session(as_float).run(None, {"ids": ids})[0]
    got = quantize.session(gathered).run(None, {"ids": ids})[0]
    assert np.array_equal(want, got)
    sizes = [packed_weights.read_blob(packed_weights.blob_path(p).read_bytes())["bytes"] for p in (as_float, gathered)]
    assert sizes == [4 * 300 * 128, 300 * 128 + 4 * 300 * 2]
