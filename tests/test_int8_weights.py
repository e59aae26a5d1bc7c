"""pipeline/int8_weights.py: the packed graph computes exactly what the Cast + Mul graph computed, and
fails loudly without its weights file. The browser's copy of the rebuild is checked against this one in
tests/test_browser.py (test_browser_rebuilds_the_same_float_weights)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import int8_weights, quantize


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


@pytest.mark.parametrize("k,n", [(128, 256), (200, 131), (64, 1023)])  # odd widths: scales need padding to 4 bytes
def test_packed_graph_gives_the_cast_mul_graphs_outputs_bit_for_bit(tmp_path, k, n):
    folded, packed = tmp_path / "folded.onnx", tmp_path / "packed.onnx"
    two_matmuls(folded, k, n, seed=k + n)
    quantize.weights_only_int8(folded, min_size=1)  # every weight int8 x per-column scale: Cast + Mul
    packed.write_bytes(folded.read_bytes())
    blob = int8_weights.pack(packed)
    assert blob == tmp_path / "packed.int8"
    ops = [node.op_type for node in int8_weights.load_graph(packed).graph.node]
    assert ops == ["MatMul", "Relu", "MatMul"]  # the Cast + Mul pairs are gone from the graph
    header = int8_weights.read_blob(blob.read_bytes())
    tensors = header["tensors"]
    assert header["location"] == "packed.float32" and [t["rows"] * t["cols"] for t in tensors] == [k * n, n * 3]
    assert all(t["scales"] % 4 == 0 for t in tensors)  # a Float32Array view of the scales needs it
    assert [t["at"] for t in tensors] == [0, 4 * k * n] and header["bytes"] == 4 * (k * n + n * 3)
    x = np.random.default_rng(0).normal(0, 1, (1, k)).astype(np.float32)
    want = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = quantize.session(packed).run(None, {"x": x})[0]
    assert np.array_equal(want, got)


def test_float_weights_are_one_rounded_product_per_weight(tmp_path):
    path = tmp_path / "m.onnx"
    two_matmuls(path, 96, 40, seed=1)
    quantize.weights_only_int8(path, min_size=1)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    int8_weights.pack(path)
    _, data = int8_weights.float_weights(int8_weights.blob_path(path).read_bytes())
    want = np.concatenate([(inits[f"{w}_int8"].astype(np.float32) * inits[f"{w}_scale"]).ravel() for w in ("w1", "w2")])
    assert np.frombuffer(data, "<f4").tobytes() == want.astype("<f4").tobytes()


def test_a_packed_graph_without_its_weights_file_fails_loudly(tmp_path):
    path = tmp_path / "m.onnx"
    two_matmuls(path, 64, 64, seed=2)
    quantize.weights_only_int8(path, min_size=1)
    int8_weights.pack(path)
    with pytest.raises(Exception, match="(?i)external"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no m.float32 file: not run on zeros
    blob = int8_weights.blob_path(path)
    blob.write_bytes(b"nope" + bytes(8))
    with pytest.raises(ValueError, match="I8W1"):
        int8_weights.model_source(path)


@pytest.mark.parametrize("change", ["nothing", "location", "name", "offset", "extra tensor"])
def test_a_weights_file_that_does_not_match_its_graph_is_refused(tmp_path, change):
    """A stale or foreign NAME.int8 (another export's) is never read as this graph's weights."""
    path = tmp_path / "m.onnx"
    two_matmuls(path, 64, 32, seed=4)
    quantize.weights_only_int8(path, min_size=1)
    blob = int8_weights.pack(path)
    data = blob.read_bytes()
    header = int8_weights.read_blob(data)
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
    int8_weights.write_blob(blob, header, tensors, chunks)  # the same values, the header changed
    if change == "nothing":  # the rewrite alone is no reason to refuse
        assert isinstance(int8_weights.model_source(path), bytes)
        return
    with pytest.raises(ValueError, match="export them together"):
        int8_weights.model_source(path)


def test_a_graph_with_nothing_to_pack_keeps_no_weights_file(tmp_path):
    path = tmp_path / "m.onnx"
    two_matmuls(path, 32, 32, seed=3)  # float weights, no Cast + Mul
    int8_weights.blob_path(path).write_bytes(b"stale")
    assert int8_weights.pack(path) is None
    assert not int8_weights.blob_path(path).exists() and int8_weights.model_source(path) == str(path)


def test_predict_refuses_a_manifest_naming_another_weights_file(tmp_path):
    """Python finds NAME.int8 beside NAME.onnx: a manifest naming another file would mean two truths."""
    import json

    from pipeline.manifest import ModelsMissing, check_models

    entry = {"file": "text_encoder.onnx", "weights_file": "text_encoder.int8"}
    (tmp_path / "manifest.json").write_text(json.dumps({"text_encoder": entry, "files": {}}))
    with pytest.raises(ModelsMissing, match="no rules"):  # past the weights check: the next one stops it
        check_models(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"text_encoder": {**entry, "weights_file": "w.int8"}, "files": {}})
    )
    with pytest.raises(ModelsMissing, match="must be text_encoder.int8"):
        check_models(tmp_path)
