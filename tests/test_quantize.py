"""Static int8 quantization of the poster encoder (pipeline/quantize.py) and the shared checks."""

import numpy as np
import onnx
import pytest
import torch

from pipeline import image, quantize
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
    info = quantize.quantize_poster(tiny_cnn, out, synthetic_posters(24, seed=1), float_convs=0)
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
    info = quantize.quantize_poster(tiny_cnn, out, synthetic_posters(8, seed=1), float_convs=2)
    assert info["quantized_convs"] == 3
    first = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv")
    inits = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    assert first.input[1] in inits and inits[first.input[1]].data_type == onnx.TensorProto.FLOAT


def test_cosine_and_batch_checks_detect_differences(tiny_cnn, tmp_path):
    same = quantize.poster_cosine(tiny_cnn, tiny_cnn, synthetic_posters(4, seed=3))
    assert same["min"] > 0.99999 and same["n"] == 4
    assert quantize.cosines(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))[0] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    path = tmp_path_factory.mktemp("lite0") / "poster_fp32.onnx"
    quantize.export_onnx(
        image.PosterEncoder(224),
        (torch.rand(1, 3, 278, 185) * 255,),
        path,
        ["image"],
        "embedding",
        {"image": {2: "height", 3: "width"}},
    )
    return path


def test_lite0_static_int8_is_under_4_mb_and_close_to_fp32(lite0, tmp_path):
    """The shipped recipe on the real poster model, calibrated and checked on the invented posters."""
    folder = tiny_data.make(tmp_path / "data", n=24)
    posters = [image.load_image(p) for p in sorted((folder / "posters").glob("1*.jpg"))]
    out = tmp_path / "poster_int8.onnx"
    info = quantize.quantize_poster(lite0, out, posters[:16])
    cos = quantize.poster_cosine(lite0, out, posters[16:])
    print("Lite0 int8:", info, cos)
    assert info["bytes"] <= 4 * 2**20
    assert cos["min"] >= 0.99, cos
    assert not (quantize.op_types(out) - POSTER_OPS), quantize.op_types(out) - POSTER_OPS
