"""The shipped formats (pipeline/export/quantize.py): the poster encoder's and the text encoder's 8-bit and
4-bit weights, packed beside the graph and computed in float, and the shared checks.

Error model behind the bounds (issue 15): a shipped file's output differs from fp32 by its weights'
rounding, which the export bounds on dev inputs (cosine >= export.MIN_COSINE = 0.99) and which was measured
per format (quantize.py's docstring: 8-bit poster weights 0.997 min on real dev posters, 8-bit text 0.9985
on real dev plots). The files compute in float (no integer operator: quantize.integer_ops), so across CPUs
only float rounding is left (cosine >= 0.9999), plus a margin for inputs unlike the ones measured.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from pipeline.export import packing, quantize
from pipeline.learn import poster_encoder, text
from pipeline.runtime import image_io, packed_weights
from tests import tiny_data

# operators the shipped poster graph holds: the float front (area resize, normalisation), float
# convolutions and their ReLU6 (Clip), the pooling; plain ai.onnx operators the wasm backend runs
POSTER_OPS = {
    *("Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "CumSum", "Div", "Floor"),
    *("Gather", "Min", "Mul", "Pad", "Reciprocal", "ReduceMean", "ReduceSum", "Reshape", "Shape", "Slice"),
    *("Sub", "Transpose", "Unsqueeze", "Identity", "Max", "Ceil", "Range", "Expand", "Resize"),
}


class TinyCNN(torch.nn.Module):
    """A Lite-like network: pixels 0..255 in, (x - 127) / 128 inside, conv + ReLU6 blocks, mean pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layers, c = [], 3
        for width, groups in ((16, 1), (16, 16), (32, 1), (32, 32), (64, 1)):
            layers += [torch.nn.Conv2d(c, width, 3, padding=1, groups=groups), torch.nn.ReLU6()]
            c = width
        self.net = torch.nn.Sequential(*layers)

    def forward(self, image):
        x = torch.nn.functional.interpolate(image, size=(32, 32), mode="bilinear", align_corners=False)
        return self.net((x - 127.0) / 128.0).mean(dim=(2, 3))


def synthetic_posters(n: int, seed: int) -> list[np.ndarray]:
    """Poster-like pixels: smooth colour fields with blobs, uint8 HxWx3, two sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (48, 32) if i % 2 else (60, 40)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = rng.uniform(0, 255, 3)[None, None] * (0.5 + 0.5 * np.stack([yy, xx, 1 - yy], -1))
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)[..., None] * rng.uniform(-120, 120, 3)
        out.append(np.clip(base + blob, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "fp32.onnx"
    quantize.export_onnx(
        TinyCNN(), (torch.rand(1, 3, 48, 32) * 255,), path, ["image"], "embedding", {"image": {2: "h", 3: "w"}}
    )
    return path


def conv_weights(path) -> dict[str, onnx.TensorProto]:
    """Each Conv node's weight initializer, by node name."""
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    return {n.name: inits[n.input[1]] for n in g.node if n.op_type == "Conv"}


def test_front_convolutions_stay_float_in_the_graph(tiny_cnn, tmp_path):
    out = tmp_path / "int8.onnx"
    info = quantize.quantize_poster(tiny_cnn, out, float_convs=2)
    assert info["quantized_convs"] == 3
    weights = list(conv_weights(out).values())
    assert all(w.data_type == onnx.TensorProto.FLOAT for w in weights)  # the graph names float weights only
    external = [w.data_location == onnx.TensorProto.EXTERNAL for w in weights]
    assert external == [False, False, True, True, True]  # the first two inside the graph, the rest packed


def test_poster_weights_are_packed_8_bit_per_filter_and_computed_in_float(tiny_cnn, tmp_path):
    """The shipped format: the convolutions' weights in NAME.weights (8 bits, a float32 scale per output
    channel, as the text encoder's are packed), nothing dequantized in the graph, no integer kernel after
    onnxruntime's optimizations (nothing to saturate, no activation rounding)."""
    out = tmp_path / "weights.onnx"
    info = quantize.quantize_poster(tiny_cnn, out, float_convs=0)
    assert info["integer_ops"] == [] and info["batchable"] and info["quantized_convs"] == 5
    blob = packed_weights.blob_path(out)
    assert info["bytes"] == out.stat().st_size + blob.stat().st_size
    tensors = packed_weights.read_blob(blob.read_bytes())["tensors"]
    dims = {w.name: list(w.dims) for w in conv_weights(out).values()}
    assert [t["name"] for t in tensors] == list(dims)
    for t in tensors:  # [M, C, kh, kw] packed as M rows of C * kh * kw values, a scale per row
        m, *rest = dims[t["name"]]
        assert (t["rows"], t["cols"], t["bits"], t["block"], t["scale"]) == (
            m,
            np.prod(rest),
            8,
            [1, np.prod(rest)],
            "f32",
        )
    # the convolutions read the packed weights as they are: no Cast, Mul or DequantizeLinear in between
    nodes = packing.load_graph(out).graph.node
    assert {n.op_type for n in nodes for i in n.input if i in dims} == {"Conv"}
    assert "DequantizeLinear" not in quantize.op_types(out) and not quantize.integer_ops(out)
    cos = quantize.poster_cosine(tiny_cnn, out, synthetic_posters(8, seed=2))
    # 8-bit per-channel weight rounding alone (0.997 on real posters with the first 8 of Lite0's
    # convolutions float; this net has no float front convolution): margin to 0.99
    assert cos["min"] >= 0.99, cos


def test_cosine_and_batch_checks_detect_differences(tiny_cnn, tmp_path):
    same = quantize.poster_cosine(tiny_cnn, tiny_cnn, synthetic_posters(4, seed=3))
    assert same["min"] > 0.99999 and same["n"] == 4
    assert quantize.cosines(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))[0] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    path = tmp_path_factory.mktemp("lite0") / "poster_fp32.onnx"
    quantize.export_onnx(
        poster_encoder.PosterEncoder(224),
        (torch.rand(1, 3, 278, 185) * 255,),
        path,
        ["image"],
        "embedding",
        {"image": {2: "height", 3: "width"}},
    )
    return path


def test_lite0_8_bit_is_under_4_mb_float_compute_and_close_to_fp32(lite0, tmp_path):
    """The shipped recipe on the real poster model, checked on the invented posters: float compute (so this
    CPU's numbers are every CPU's up to float rounding) and the measured bound for its format."""
    folder = tiny_data.make(tmp_path / "data", n=24)
    posters = [image_io.load_image(p) for p in sorted((folder / "posters").glob("1*.jpg"))]
    shipped = tmp_path / "poster_encoder.onnx"
    info = quantize.quantize_poster(lite0, shipped)
    cos = quantize.poster_cosine(lite0, shipped, posters)
    print("Lite0 8-bit weights:", info, cos)
    assert info["bytes"] <= 4 * 2**20 and info["integer_ops"] == [] and info["quantized_convs"] == 41
    # worst cosine 0.997 on 60 real dev posters (weight rounding only, no calibration involved); float
    # rounding adds < 1e-5; margin 0.007 for posters unlike those: the export's 0.99
    assert cos["min"] >= 0.99, cos
    assert not (quantize.op_types(shipped) - POSTER_OPS), quantize.op_types(shipped) - POSTER_OPS


def tiny_matmul_fp32(path: Path, w: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_integer_ops_finds_an_integer_format(tmp_path):
    """The check the shipped files pass can fail: onnxruntime's dynamic int8 quantization (activations
    rounded per call, u8 x s8 products) of a MatMul is flagged; its packed 8-bit twin is not."""
    w = np.random.default_rng(1).normal(0, 0.05, (64, 16))
    fp32 = tiny_matmul_fp32(tmp_path / "mm.onnx", w)
    dynamic, packed = tmp_path / "dynamic.onnx", tmp_path / "packed.onnx"
    quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= quantize.op_types(dynamic)  # as stored
    assert quantize.integer_ops(dynamic)  # as onnxruntime runs it (here fused: com.microsoft.DynamicQuantizeMatMul)
    packed.write_bytes(fp32.read_bytes())
    packing.pack(packed, quantize.packing_plan(packed, matmul=(8, None, "f32"), min_size=0))
    assert quantize.integer_ops(packed) == set()
    integer = (
        "QuantizeLinear",
        "QLinearConv",
        "com.microsoft.QLinearAdd",
        "MatMulInteger",
        "com.microsoft.MatMulNBits",
    )
    float_ops = ("DequantizeLinear", "com.microsoft.QuickGelu", "Conv", "Gather")  # DequantizeLinear: int8 -> float
    assert [bool(quantize.INTEGER_OP.search(op)) for op in integer + float_ops] == [True] * 5 + [False] * 4


@pytest.fixture(scope="module")
def minilm_fp32(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm") / "text_fp32.onnx"
    model = text.TextEncoder("minilm").eval()
    ids = torch.tensor([[101] + [2000] * 30 + [102]])
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    quantize.export_onnx(model, (ids, torch.ones_like(ids)), path, ["input_ids", "attention_mask"], "embedding", axes)
    return path


# per format: packed tensors (36 MatMul weights, 6 layers x 6; "int4" also the word and position tables),
# size bound, and the lowest cosine to fp32 allowed on the three plots below, with its source:
TEXT_FORMATS = {
    # item 1: worst 0.9985 on 200 real dev plots (weight rounding only); margin 0.0035 for these
    "weights": (36, 24e6, 0.995),
    # int4 is accepted by format_choice's CV, not by a cosine: 0.9 only tells a rounded model from a broken
    # one (each byte's two values swapped: 0.08 on two of these plots). 13e6: MiniLM's 22.7M weights at half a byte
    # (11.4 MB) plus fp16 scales (0.7 MB) and the rest of the graph
    "int4": (38, 13e6, 0.9),
}


CHECK_PLOTS = [
    "A retired soldier is pulled back for one last rescue mission behind enemy lines.",
    "Two strangers keep missing each other in a summer of letters and near misses.",
    "Short plot, odd chars: café, naïve — 1984!",
]


@pytest.mark.parametrize("mode", TEXT_FORMATS)
def test_shipped_text_formats_have_no_integer_kernels(minilm_fp32, tmp_path, mode):
    """MiniLM in each shipped format (8- or 4-bit weights, float compute); int4 here without calibration
    plots, so nearest rounding (export's GPTQ: the test after the next)."""
    tensors, max_bytes, min_cosine = TEXT_FORMATS[mode]
    out = tmp_path / f"text_{mode}.onnx"
    info = quantize.quantize_text(minilm_fp32, out, mode)
    assert info["batchable"] and info["integer_ops"] == []
    # the packed weights ship in text_MODE.weights, rebuilt before onnxruntime is handed the graph
    assert len(packed_weights.read_blob(packed_weights.blob_path(out).read_bytes())["tensors"]) == tensors
    assert not [n for n in packing.load_graph(out).graph.node if n.op_type == "Cast" and n.input[0].endswith("_int8")]
    # at most the 8-bit embedding tables' DequantizeLinear after their Gather remains: float arithmetic
    assert quantize.integer_ops(out) == set()
    assert info["bytes"] < max_bytes
    tok = text.load_tokenizer("minilm")
    ids = [text.encode(tok, p, 256) for p in CHECK_PLOTS]
    cos = quantize.embedding_cosine(minilm_fp32, out, quantize.text_feeds(ids))
    assert cos["min"] >= min_cosine, cos
    assert quantize.batch_matches(out, ids) <= 1e-5  # float summation order only


CALIBRATION_PLOTS = [  # invented training-like plots (no data file: CI has none)
    "A detective with a failing memory reopens the murder case that ended her career.",
    "When their father dies, three estranged sisters return to run the family vineyard.",
    "A young wizard discovers that the school he loves hides a prison beneath it.",
    "After a meteor shower, a small town's dogs begin to speak, and they are angry.",
    "An aging boxer takes one last fight to pay for his grandson's surgery.",
    "Soldiers trapped behind enemy lines must cross a frozen river before dawn.",
    "A lonely astronaut on Mars grows potatoes and waits for a rescue that may never come.",
    "Two rival chefs fall in love while competing for the same Paris restaurant.",
    "A hacker learns that the city's traffic lights are controlled by a hidden AI.",
    "In 1920s Chicago, a bootlegger's accountant turns informant for the FBI.",
    "A family moves into an old farmhouse where the walls whisper at night.",
    "An animated fox and a rabbit team up to solve a conspiracy in a city of animals.",
]


def test_int4_with_calibration_plots_is_closer_to_fp32_than_rounding(minilm_fp32, tmp_path):
    """quantize_text hands its calibration plots to GPTQ (pipeline/export/gptq.py) for the MatMul integers."""
    tok = text.load_tokenizer("minilm")
    check = quantize.text_feeds([text.encode(tok, p, 256) for p in CALIBRATION_PLOTS[8:] + CHECK_PLOTS])
    calibration = quantize.text_feeds([text.encode(tok, p, 256) for p in CALIBRATION_PLOTS[:8]])
    error = {}
    for name, feeds in (("rounded", ()), ("gptq", calibration)):
        info = quantize.quantize_text(minilm_fp32, tmp_path / f"{name}.onnx", "int4", feeds)
        assert ("GPTQ on 8 training plots" in info["quantization"]) == (name == "gptq")
        c = quantize.cosines(quantize.outputs(minilm_fp32, check), quantize.outputs(tmp_path / f"{name}.onnx", check))
        error[name] = float(np.mean(1 - c))
    # measured here 0.038 -> 0.023 (MiniLM as published, 8 calibration plots, ratio 0.60); the shipped
    # encoder: bench.gptq. Without its error feedback GPTQ is nearest rounding (ratio 1)
    assert error["gptq"] < 0.8 * error["rounded"], error
