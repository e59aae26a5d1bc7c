"""Static int8 quantization of the poster encoder (pipeline/quantize.py), the shared checks, and the
integer reference (pipeline/int8_reference.py): the shipped formats cannot saturate on any CPU.

Error model behind the bounds (issue 15): an int8 model's output differs from fp32 by its
quantization error, which the export bounds on dev inputs (cosine >= export.MIN_COSINE = 0.99) and
item 1 measured per format (quantize.py's docstring: 7-bit poster weights 0.980 min on real dev
posters); across CPUs the integer products are identical once cannot_saturate holds, so what is
left is float rounding (fp32 kernels, fp16-stored weights: cosine >= 0.9999) plus a margin for
inputs unlike the ones measured.
"""

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.export import int8_reference, packing, quantize
from pipeline.learn import poster_encoder, text
from pipeline.runtime import image_io, packed_weights
from tests import tiny_data

# operators a statically quantized poster graph may contain: the float front (area resize,
# normalisation), Q/DQ pairs and float convolutions; onnxruntime-web's wasm backend runs all of them
POSTER_OPS = {
    *("Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "CumSum", "DequantizeLinear"),
    *("Div", "Floor", "Gather", "Min", "Mul", "Pad", "QuantizeLinear", "Reciprocal", "ReduceMean", "ReduceSum"),
    *(
        "Reshape",
        "Shape",
        "Slice",
        "Sub",
        "Transpose",
        "Unsqueeze",
        "Identity",
        "Max",
        "Ceil",
        "Range",
        "Expand",
        "Resize",
    ),
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


def test_static_poster_quantization_keeps_embeddings_close_and_float_io(tiny_cnn, tmp_path):
    out = tmp_path / "int8.onnx"
    info = quantize.quantize_poster(tiny_cnn, out, synthetic_posters(24, seed=1), float_convs=0, mode="static")
    assert info["calibration_images"] == 24 and info["batchable"] and info["quantized_convs"] == 5
    cos = quantize.poster_cosine(tiny_cnn, out, synthetic_posters(16, seed=2))  # unseen images
    print("tiny CNN int8 vs fp32 cosine", cos)
    assert cos["min"] >= 0.99
    model = onnx.load(str(out))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = quantize.op_types(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and not (ops - POSTER_OPS), ops - POSTER_OPS
    # weights are stored int8, per output channel
    inits = {i.name: i for i in model.graph.initializer}
    int8 = [i for i in inits.values() if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8) == 5
    scales = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in {i.name for i in int8}]
    assert all(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in scales)


def test_front_convolutions_can_stay_float(tiny_cnn, tmp_path):
    out = tmp_path / "int8.onnx"
    for mode in ("static", "weights"):
        info = quantize.quantize_poster(tiny_cnn, out, synthetic_posters(8, seed=1), float_convs=2, mode=mode)
        assert info["quantized_convs"] == 3
        first = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv")
        inits = {i.name: i for i in onnx.load(str(out)).graph.initializer}
        assert first.input[1] in inits and inits[first.input[1]].data_type == onnx.TensorProto.FLOAT


def test_weights_mode_stores_int8_and_runs_float_kernels(tiny_cnn, tmp_path):
    """The shipped format: int8-stored weights, no integer kernel after onnxruntime's optimizations
    (nothing to saturate, no activation rounding)."""
    out = tmp_path / "weights.onnx"
    info = quantize.quantize_poster(tiny_cnn, out, (), float_convs=0)
    assert info["cannot_saturate"] and info["max_pair_sum"] == 0 and info["batchable"]
    inits = onnx.load(str(out)).graph.initializer
    assert sum(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4 for i in inits) == 5
    assert not quantize.quantized_ops(out, optimized=True), quantize.quantized_ops(out, optimized=True)
    cos = quantize.poster_cosine(tiny_cnn, out, synthetic_posters(8, seed=2))
    # 8-bit per-channel weight rounding alone (item 1: 0.997 on real posters with the first 8 of
    # Lite0's convolutions float; this net has no float front convolution): margin to 0.99
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


def test_lite0_int8_is_under_4_mb_cannot_saturate_and_is_close_to_fp32(lite0, tmp_path):
    """The shipped recipe (POSTER_MODE: int8 weights, float compute) and the static int8 alternative on
    the real poster model, checked on the invented posters: neither can saturate (so this CPU's
    numbers are every CPU's), and each keeps item 1's bound for its format."""
    folder = tiny_data.make(tmp_path / "data", n=24)
    posters = [image_io.load_image(p) for p in sorted((folder / "posters").glob("1*.jpg"))]
    shipped, static = tmp_path / "poster_int8.onnx", tmp_path / "poster_static.onnx"
    info = quantize.quantize_poster(lite0, shipped, posters[:16])
    assert quantize.POSTER_MODE == "weights" and info["calibration_images"] == 0
    cos = quantize.poster_cosine(lite0, shipped, posters[16:])
    print("Lite0 int8 weights:", info, cos)
    assert info["bytes"] <= 4 * 2**20 and info["cannot_saturate"]
    assert not quantize.quantized_ops(shipped, optimized=True)  # float kernels only
    # item 1: worst cosine 0.997 on 60 real dev posters (weight rounding only, no calibration
    # involved); float rounding adds < 1e-5; margin 0.007 for posters unlike those: the export's 0.99
    assert cos["min"] >= 0.99, cos
    assert not (quantize.op_types(shipped) - POSTER_OPS), quantize.op_types(shipped) - POSTER_OPS

    info = quantize.quantize_poster(lite0, static, posters[:16], mode="static")
    proof = int8_reference.cannot_saturate(static)
    assert info["cannot_saturate"] and proof["ok"] and proof["max_pair_sum"] <= 2 * 255 * 64, proof
    cos = quantize.poster_cosine(lite0, static, posters[16:])
    print("Lite0 static int8:", info, cos)
    # item 1: 7-bit weights, worst 0.980 on real dev posters; 16 calibration images, not 64: margin 0.01
    assert cos["min"] >= 0.97, cos


# ---------------------------------------------------------------------------------------------
# the integer kernels: saturation (pipeline/int8_reference.py)


def cpu_path() -> str:
    """Which u8 x s8 product onnxruntime's MLAS uses here: "exact" (VNNI, non-x86) or "saturating"
    (AVX2 / AVX-512 without VNNI: vpmaddubsw)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "exact"
    flags = set(re.findall(r"\S+", next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")))
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "exact"
    return "saturating" if flags & {"avx2", "avx512bw"} else "unknown"


def matmul_integer_model(path: Path, b: np.ndarray) -> Path:
    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "tiny",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def crafted(seed=0):
    """Weights and inputs where u8 x s8 pairs really saturate: a = 255 against pairs of -128 and of 127."""
    rng = np.random.default_rng(seed)
    b = rng.integers(-128, 128, (32, 8)).astype(np.int8)
    b[0:4], b[4:8] = -128, 127
    a = rng.integers(0, 256, (5, 32)).astype(np.uint8)
    a[:, :8] = 255
    return a, b


def test_reference_reproduces_onnxruntime_on_this_cpu(tmp_path):
    a, b = crafted()
    path = matmul_integer_model(tmp_path / "mmi.onnx", b)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    exact, saturating = int8_reference.matmul_exact(a, b), int8_reference.matmul_saturating(a, b)
    assert np.abs(exact - saturating).max() > 10_000  # the pairs (255*-128)*2 = -65280 clamp to -32768
    assert np.array_equal(exact, a.astype(np.int32) @ b.astype(np.int32))
    path_here = cpu_path()
    if path_here == "unknown":
        pytest.skip("x86 without AVX2: MLAS's kernel here is not modelled")
    expected = exact if path_here == "exact" else saturating
    assert np.array_equal(got, expected), (path_here, got[0], expected[0])
    # the model-level evaluator computes the same two integer products
    assert np.array_equal(int8_reference.run_exact(path, [{"A": a}]), exact)
    assert np.array_equal(int8_reference.run_saturating(path, [{"A": a}]), saturating)
    # and the proof flags these weights
    proof = int8_reference.cannot_saturate(path)
    assert not proof["ok"] and proof["max_pair_sum"] == 255 * 256  # two -128s


def test_pair_bound_is_the_worst_pairing():
    w = np.array([[100, 5, -3, 90], [-128, -1, 0, 2]], np.int8).T  # [K=4, N=2]
    assert int8_reference.pair_bound(w, axis=1) == 255 * max(100 + 90, 128 + 3)
    assert int8_reference.pair_bound(np.full((3, 64), 64, np.int8), axis=1) == 32640  # reduce_range's worst
    conv = np.zeros((2, 3, 3, 3), np.int8)
    conv[1, 0, 0, 0], conv[1, 2, 2, 2] = -100, -60
    assert int8_reference.pair_bound(conv, axis=0) == 255 * 160


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


def test_reduce_range_weights_cannot_saturate_and_give_the_same_numbers_on_both_paths(tmp_path):
    """The same extreme weights quantized the shipped way (dynamic, per channel, reduce_range): the
    proof holds, the saturating and the exact evaluations are equal, and onnxruntime here matches
    them to float rounding; the old 8-bit format on the same weights can saturate and does."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.05, (512, 16))
    w[:2] = -1.0  # two equal, same-signed, largest weights in every column: 8-bit gives -127, -127
    fp32 = tiny_matmul_fp32(tmp_path / "mm.onnx", w)
    x = [{"x": rng.uniform(-1, 1, (3, 512)).astype(np.float32)} for _ in range(4)]
    for f in x:
        f["x"][:, :2] = 1.0  # the largest activations where the weights are largest: a = 255
    new, old = tmp_path / "rr.onnx", tmp_path / "old.onnx"
    info = quantize.quantize_text(fp32, new, "dynamic")
    quantize.quantize_text(fp32, old, "dynamic", reduce_range=False)
    assert info["cannot_saturate"] and info["max_pair_sum"] <= 32640
    sat, exact = int8_reference.run_saturating(new, x), int8_reference.run_exact(new, x)
    assert np.array_equal(sat, exact)
    native = quantize.outputs(new, x)
    assert np.abs(native - exact).max() <= 1e-5 * np.abs(exact).max()  # float scaling only
    assert not int8_reference.cannot_saturate(old)["ok"]
    assert np.abs(int8_reference.run_saturating(old, x) - int8_reference.run_exact(old, x)).max() > 0.1


def test_qdq_evaluator_reproduces_onnxruntime_on_a_convnet(tiny_cnn, tmp_path):
    """The QDQ rewrite (Conv on the stored integers) against onnxruntime on this CPU: equal to the
    activation requantization's rounding (onnxruntime fuses DQ-Conv-Q into QLinearConv, which rounds
    once; the reference rounds the float result: one step of the output scale at most)."""
    out = tmp_path / "int8.onnx"
    quantize.quantize_poster(tiny_cnn, out, synthetic_posters(8, seed=1), float_convs=0)
    assert int8_reference.cannot_saturate(out)["ok"]
    feeds = list(quantize.poster_feeds(synthetic_posters(3, seed=2)))
    native, exact = quantize.outputs(out, feeds), int8_reference.run_exact(out, feeds)
    assert quantize.cosines(native, exact).min() >= 0.999
    assert np.array_equal(int8_reference.run_saturating(out, feeds), exact)


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
    assert info["batchable"] and info["cannot_saturate"]
    assert int8_reference.cannot_saturate(out)["integer_nodes"] == 0
    # the packed weights ship in text_MODE.weights, rebuilt before onnxruntime is handed the graph
    assert len(packed_weights.read_blob(packed_weights.blob_path(out).read_bytes())["tensors"]) == tensors
    assert not [n for n in packing.load_graph(out).graph.node if n.op_type == "Cast" and n.input[0].endswith("_int8")]
    # at most the embedding tables' DequantizeLinear after their Gather remains: float arithmetic
    assert quantize.quantized_ops(out, optimized=True) <= {"DequantizeLinear"}, quantize.quantized_ops(out, True)
    assert info["bytes"] < max_bytes
    tok = text.load_tokenizer("minilm")
    ids = [text.encode(tok, p, 256) for p in CHECK_PLOTS]
    cos = quantize.embedding_cosine(minilm_fp32, out, quantize.text_feeds(ids))
    assert cos["min"] >= min_cosine, cos
    assert quantize.batch_matches(out, ids) <= 1e-5  # float summation order only


def test_dynamic_text_format_cannot_saturate(minilm_fp32, tmp_path):
    """The dynamic alternative (quantize_text's reduce_range default: 7-bit weights) is proven too."""
    out = tmp_path / "text_dynamic.onnx"
    info = quantize.quantize_text(minilm_fp32, out, "dynamic")
    proof = int8_reference.cannot_saturate(out)
    assert proof["ok"] and info["cannot_saturate"], [n for n in proof["nodes"] if not n["ok"]][:3]
    assert proof["integer_nodes"] == 36 and proof["max_pair_sum"] <= 32640
    assert "reduce_range" in info["quantization"]


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
    """quantize_text hands its calibration plots to GPTQ (pipeline/gptq.py) for the MatMul integers."""
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
