"""pipeline/export/web_session.py: the graph optimization level the browser uses for each shipped model."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.export import packing, web_session
from tests.conftest import ROOT
from tests.test_packed_weights import cast_mul, two_matmuls


def dequantized(path):
    """x @ DequantizeLinear(int8 weight): the weight is dequantized from stored values alone."""
    q = np.random.default_rng(0).integers(-127, 127, (16, 8)).astype(np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(np.float32(0.1), "s")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def with_identity(path):
    """A float graph whose weight passes through Identity (as the exported head's do)."""
    two_matmuls(path, 16, 16, seed=5)
    model = onnx.load(str(path))
    g = model.graph
    g.node.insert(0, helper.make_node("Identity", ["w1"], ["w1_copy"]))
    g.node[1].input[1] = "w1_copy"
    onnx.save(model, str(path))


@pytest.mark.parametrize(
    "build, level",
    [
        (lambda p: two_matmuls(p, 32, 32, seed=1), "disabled"),  # float weights used as they are
        (with_identity, "disabled"),
        (lambda p: (two_matmuls(p, 32, 32, seed=2), cast_mul(p, {"w1": (8, (32, 1), "f32")})), "basic"),
        (
            lambda p: (
                two_matmuls(p, 32, 32, seed=3),
                packing.pack(p, {w: (4, (32, 1), "f16") for w in ("w1", "w2")}),
            ),
            "disabled",
        ),
        (dequantized, "basic"),
    ],
    ids=["float", "identity", "cast-mul", "packed", "dequantize-linear"],
)
def test_a_graph_is_left_unoptimized_only_when_nothing_folds(tmp_path, build, level):
    path = tmp_path / "m.onnx"
    build(path)
    assert web_session.optimization_level(path) == level, web_session.foldable_ops(path)


def test_the_manifest_gives_every_shipped_graph_its_level():
    models = ROOT / "assets/models"
    spec = json.loads((models / "manifest.json").read_text())
    entries = [spec[k] for k in spec if k.endswith("text_encoder")] + [spec["fusion_head"], spec["poster_encoder"]]
    for entry in entries:
        assert entry["web_optimization"] == web_session.optimization_level(models / entry["file"]), entry["file"]
