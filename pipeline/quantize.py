"""Quantization and checks for the shipped ONNX models (used by `export` and `distil`).

quantize_poster  static int8 QDQ with per-channel weights for the poster encoder, calibrated on
                 training posters; only the convolutions are quantized, so the resize/normalise
                 front (cumulative sums, gathers) and the pooled float output stay float.
quantize_text    a text encoder as int8 dynamic (per-channel weights; activation scales computed per
                 call, so outputs depend on what else is in the batch), int8 static QDQ (fixed
                 activation scales from calibration plots: batchable), or float with fp16-stored weights.
embedding_cosine min/mean cosine between two models' outputs on the same inputs.
batch_matches    whether a batched run gives the single-input outputs (the manifest's "batchable").
native_ms        warm median latency in onnxruntime, one thread.
op_types         the operators a model runs after onnxruntime's graph optimizations, against
                 WASM_OPS: those onnxruntime-web's wasm (CPU) backend is known to run.
"""

import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

OPSET = 17

# onnxruntime-web's wasm backend is the native CPU engine compiled to WebAssembly ("full ONNX operator
# coverage ... ONNX Runtime Quantization", onnxruntime-web README), contrib ops included. These are the
# quantized kernels the graphs below need; tests/test_quantize.py asserts no other unusual op appears.
WASM_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "com.microsoft.DynamicQuantizeMatMul",
    "com.microsoft.MatMulIntegerToFloat",
    "com.microsoft.QLinearAdd",
    "com.microsoft.QLinearGlobalAveragePool",
}


def export_onnx(model: torch.nn.Module, args: tuple, path: Path, inputs: list[str], output: str, dynamic: dict):
    """torch → ONNX with the settings export.py uses (opset 17, TorchScript exporter)."""
    torch.onnx.export(
        model.eval(),
        args,
        str(path),
        input_names=inputs,
        output_names=[output],
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
    )


def store_weights_fp16(path: Path, min_size: int = 16384):
    """Large fp32 initializers stored as fp16 and cast back to fp32 when loaded (as export.py does):
    half the bytes, the graph still computes in fp32."""
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_size:
            name = init.name
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name + "_fp16")
            init.CopyFrom(half)
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))


class Feeds(CalibrationDataReader):
    """onnxruntime's calibration reader over an iterable of feed dicts."""

    def __init__(self, feeds: Iterable[dict]):
        self.it: Iterator[dict] = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# poster encoder


def poster_feeds(calibration: Iterable[np.ndarray]) -> Iterator[dict]:
    for x in calibration:
        x = np.asarray(x, np.float32)
        yield {"image": x if x.ndim == 4 else np.ascontiguousarray(x.transpose(2, 0, 1)[None])}


def quantize_poster(
    fp32_onnx: Path,
    out: Path,
    calibration: Iterable[np.ndarray],
    float_convs: int = 8,
    op_types: tuple[str, ...] = ("Conv", "Clip"),
) -> dict:
    """Static int8 QDQ quantization of the poster encoder: per-channel int8 weights, int8
    activations with scales fixed by running `calibration` (training posters only: load_image
    pixels HxWx3 uint8, or [1, 3, H, W] floats 0..255, exactly what the model's "image" input takes).

    Only `op_types` nodes are quantized: convolutions and their ReLU6 (Clip) outputs, so each
    activation is quantized over its clipped [0, 6] range and the Clip folds into the quantizer. The
    resize and normalisation in front of the first convolution, the pooling after the last and the
    output stay float. The first `float_convs` convolutions (the stem and the first blocks, at the
    highest resolution) stay float too: on dev posters they were the only sensitive layers (alone,
    int8 weights in block 0's depthwise conv drop the worst cosine to 0.96) and they hold 0.3 % of
    the weights. Measured on 60 dev posters (calibration on 32 others): all convolutions int8, worst
    cosine 0.67 (Conv only; pre-ReLU6 ranges) / 0.95 (Conv + Clip); first 8 float: worst 0.9925,
    mean 0.997, 3.9 MB.
    Returns a summary: bytes, calibration count, quantization text, batchable."""
    count = 0

    def counted():
        nonlocal count
        for feed in poster_feeds(calibration):
            count += 1
            yield feed

    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    quantize_static(
        str(fp32_onnx),
        str(out),
        Feeds(counted()),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
        nodes_to_exclude=convs[:float_convs],
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )
    return {
        "file": Path(out).name,
        "bytes": Path(out).stat().st_size,
        "quantization": f"int8 static QDQ: per-channel int8 weights, int8 activations with fixed scales "
        f"(min/max over {count} training posters); first {float_convs} of {len(convs)} convolutions, the "
        "resize/normalise front and the pooled output float",
        "calibration_images": count,
        "quantized_convs": len(convs) - min(float_convs, len(convs)),
        "batchable": True,
    }


# ---------------------------------------------------------------------------------------------
# text encoder


def quantize_text(fp32_onnx: Path, out: Path, mode: str, calibration: Iterable[dict] = (), keep_float=()) -> dict:
    """A text encoder ONNX (inputs input_ids, attention_mask; output embedding) → `out`.

    mode "dynamic": int8 per-channel weights, activations quantized per call (DynamicQuantizeLinear),
      so a plot's embedding depends on what else shares its batch: not batchable.
    mode "static": int8 QDQ, per-channel weights, activation scales fixed by `calibration` (feed dicts
      of training plots): batchable.
    mode "fp16": float compute, weights stored fp16: batchable.
    `keep_float`: node names left float (fp16-stored) in the int8 modes.
    Returns {"quantization": text, "batchable": bool, "bytes": int}."""
    keep = list(keep_float)
    if mode == "dynamic":
        quantize_dynamic(str(fp32_onnx), str(out), per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        store_weights_fp16(out)
        what, batchable = "int8 dynamic, per-channel weights; run one plot per call, unpadded", False
    elif mode == "static":
        quantize_static(
            str(fp32_onnx),
            str(out),
            Feeds(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=keep,
            extra_options={"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
            calibration_providers=["CPUExecutionProvider"],
        )
        store_weights_fp16(out)
        what, batchable = "int8 static QDQ, per-channel weights, fixed activation scales from training plots", True
    elif mode == "fp16":
        Path(out).write_bytes(Path(fp32_onnx).read_bytes())
        store_weights_fp16(out)
        what, batchable = "float compute, weights stored fp16", True
    else:
        raise ValueError(f"unknown text quantization mode {mode!r}")
    if keep and mode != "fp16":
        what += f" ({len(keep)} MatMuls kept float)"
    return {"quantization": what, "batchable": batchable, "bytes": Path(out).stat().st_size}


# ---------------------------------------------------------------------------------------------
# checks


def outputs(path: Path, feeds: Iterable[dict], threads: int = 1) -> np.ndarray:
    sess = session(path, threads)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def embedding_cosine(reference: Path, candidate: Path, feeds: list[dict]) -> dict:
    """Cosine between two models' outputs, one feed at a time: {"min", "mean", "n"}."""
    c = cosines(outputs(reference, feeds), outputs(candidate, feeds))
    return {"min": float(c.min()), "mean": float(c.mean()), "n": len(c)}


def poster_cosine(fp32_onnx: Path, quant_onnx: Path, images: Iterable[np.ndarray]) -> dict:
    """Embedding cosine of the quantized poster model to fp32 on `images` (load_image pixels or
    [1, 3, H, W] floats): ship the int8 model only if "min" >= 0.99 on the test posters."""
    return embedding_cosine(fp32_onnx, quant_onnx, list(poster_feeds(images)))


def text_feeds(ids: Iterable[list[int]]) -> list[dict]:
    out = []
    for row in ids:
        x = np.array([row], np.int64)
        out.append({"input_ids": x, "attention_mask": np.ones_like(x)})
    return out


def batch_matches(path: Path, ids: list[list[int]], atol: float = 1e-4) -> float:
    """Largest |batched - single| over `ids` run as one padded batch versus one at a time: a
    model is "batchable" when this stays within atol (it does not for dynamic int8)."""
    single = outputs(path, text_feeds(ids))
    width = max(len(r) for r in ids)
    x = np.zeros((len(ids), width), np.int64)
    m = np.zeros_like(x)
    for i, r in enumerate(ids):
        x[i, : len(r)], m[i, : len(r)] = r, 1
    batched = session(path).run(None, {"input_ids": x, "attention_mask": m})[0]
    return float(np.abs(batched - single).max())


def native_ms(path: Path, feeds: list[dict], repeats: int = 3) -> float:
    """Warm median milliseconds per call, onnxruntime CPU, one thread."""
    sess = session(path, 1)
    for f in feeds[:3]:
        sess.run(None, f)
    times = []
    for _ in range(repeats):
        for f in feeds:
            start = time.perf_counter()
            sess.run(None, f)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def op_types(path: Path, optimized: bool = False) -> set[str]:
    """Operators of the stored graph (what any runtime, wasm included, is handed), domain-qualified
    when not ai.onnx; with optimized=True, of the graph native onnxruntime runs after its own
    optimizations (which may add x86-only layouts such as com.microsoft.nchwc)."""
    if not optimized:
        graph = onnx.load(str(path)).graph
    else:
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            graph = onnx.load(opts.optimized_model_filepath).graph
    return {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in graph.node}


def quantized_ops(path: Path, optimized: bool = False) -> set[str]:
    """The int8 operators among op_types(path, optimized)."""
    words = ("Quant", "Integer", "QLinear", "QAttention", "QGemm")
    return {op for op in op_types(path, optimized) if any(w in op for w in words)}
