"""Quantization and checks for the shipped ONNX models (used by `export` and `distil`).

quantize_poster  the poster encoder with int8-stored convolution weights and float compute (default),
                 or static int8 QDQ calibrated on training posters; the resize/normalise front, the
                 first convolutions and the pooled float output stay float.
quantize_text    a text encoder with 8- or 4-bit stored weights and float compute ("weights", TEXT_MODE, and "int4":
                 export ships the first its CV check passes, pipeline/format_choice.py;
                 batchable), int8 dynamic (per-channel 7-bit weights; activation scales computed per
                 call, so outputs depend on what else is in the batch), int8 static QDQ (fixed
                 activation scales from calibration plots: batchable), or float with fp16-stored weights.
embedding_cosine min/mean cosine between two models' outputs on the same inputs.
batch_matches    whether a batched run gives the single-input outputs (the manifest's "batchable").
native_ms        warm median latency in onnxruntime, one thread.
op_types         the operators a model runs after onnxruntime's graph optimizations, against
                 WASM_OPS: those onnxruntime-web's wasm (CPU) backend is known to run.

Formats (issue 15; pipeline/int8_reference.py): the same outputs on every CPU. On x86 without VNNI,
onnxruntime's u8 x s8 kernels sum adjacent products into a saturating int16 (with 7-bit weights,
reduce_range, no pair can exceed 2 * 255 * 64 = 32640 <= 32767: int8_reference.cannot_saturate proves
it from the stored weights). But any activation rounding (dynamic or static int8) has a second
CPU dependence: float kernels differ by ulps between CPUs and wasm, a value at a rounding boundary
flips by one step, and the flips cascade through the layers (rr text encoder, this CPU, exact
integers: native vs onnx.reference cosine 0.9957..1.0 on 12 dev plots). So the shipped formats
store 8-bit weights ("weights") or, for the text encoder when export's CV check passes, 4-bit ones
("int4", integers by GPTQ: pipeline/gptq.py, `python -m bench.gptq`) and compute in float: no integer
product, no activation rounding.
Measured on this machine (AVX-512-VNNI) on the base models, dev rows drawn with
np.random.default_rng(20261201): text 64 calibration / 200 check plots, posters 64 / 60.
Cosine to fp32 min/mean; MB; max u8 x s8 pair sum (> 32767: can saturate on AVX2); native ms*:
  text encoder (MiniLM)          cosine          MB    pair    ms*
  int8 weights, float compute    0.9985 / 0.9991 22.9  none    12.9  <- TEXT_MODE (batchable)
  dynamic s8 (the old default)   0.977 / 0.993   23.0  64770   6.3
  dynamic s8 reduce_range        0.984 / 0.992   23.0  32640   6.1
    + FFN output MatMuls float   0.993 / 0.996   26.5  32640   8.2
  dynamic U8U8                   0.981 / 0.994   23.0  exact   9.1
  static QDQ s8 reduce_range     0.861 / 0.925   23.1  32640   7.5   (+ FFN float 0.982)
  static QDQ U8U8                0.858 / 0.926   23.1  exact
  fp32 / fp16-stored float       1.000           90.4 / 45.3   12.5 / 12.4
  poster encoder (Lite0, 8 of 49 convs float)
  int8 weights, float compute    0.9972 / 0.9983 3.6   none    = fp32  <- POSTER_MODE
    all 49 convs int8 weights    0.980 / 0.993
  QDQ s8 act, s8 weights (old)   0.996 / 0.998   3.9   64770   ~10
  QDQ u8 act, s8 weights rr      0.980 / 0.991   3.9   32640   ~10   (rr with 12 / 16 / 24 float: 0.981 / 0.982 / 0.989)
  QDQ U8U8                       0.994 / 0.997   3.9   exact   ~99   (10x slower natively)
  fp32                           1.000           13.5          ~13
  * one thread, 62-token plots / 278x185 posters, variants side by side in one run; the machine was
    shared (load 4-5): compare within a column only.
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

from pipeline.export import gptq, packing
from pipeline.runtime import packed_weights

OPSET = 17
QTYPES = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
# the formats chosen by the measurements above: int8-stored weights, float compute (no integer product
# to saturate, no activation rounding for float differences to flip: the same outputs on every CPU
# up to float rounding; batchable). quantize_text's mode / quantize_poster's default. The text encoder
# ships "int4" instead (also float compute) only when export's CV check passes (pipeline/format_choice.py).
TEXT_MODE = "weights"
POSTER_MODE = "weights"

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


def export_onnx(
    model: torch.nn.Module, args: tuple, path: Path, inputs: list[str], output: str | list[str], dynamic: dict
):
    """torch → ONNX with the settings export.py uses (opset 17, TorchScript exporter); `output` one
    name or a list of names."""
    torch.onnx.export(
        model.eval(),
        args,
        str(path),
        input_names=inputs,
        output_names=[output] if isinstance(output, str) else list(output),
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
    )


def store_weights_fp16(path: Path, min_size: int = 16384, skip=()):
    """Large fp32 initializers (not named in `skip`) stored as fp16 and cast back to fp32 when loaded:
    half the bytes, the graph still computes in fp32."""
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_size and init.name not in skip:
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
    return ort.InferenceSession(packing.model_source(path), opts, providers=["CPUExecutionProvider"])


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
    reduce_range: bool = True,
    activations: str = "u8",
    weights: str = "s8",
    mode: str = "weights",
) -> dict:
    """mode "weights" (default, POSTER_MODE): int8-stored convolution weights (8-bit, per output
    channel) turned back into float at load, float compute: no integer product, nothing to saturate,
    no activation rounding; `calibration` is not needed (counted only). The first `float_convs`
    convolutions keep float weights. Measured (module docstring): cosine min 0.997, 3.6 MB.

    mode "static": static int8 QDQ quantization of the poster encoder: per-channel int8 weights (7-bit with
    reduce_range, so no u8 x s8 pair sum can saturate: the module docstring), `activations` u8 or s8
    with scales fixed by running `calibration` (training posters only: load_image pixels HxWx3
    uint8, or [1, 3, H, W] floats 0..255, exactly what the model's "image" input takes).

    Only `op_types` nodes are quantized: convolutions and their ReLU6 (Clip) outputs, so each
    activation is quantized over its clipped [0, 6] range and the Clip folds into the quantizer. The
    resize and normalisation in front of the first convolution, the pooling after the last and the
    output stay float. The first `float_convs` convolutions (the stem and the first blocks, at the
    highest resolution) stay float too: on dev posters they were the only sensitive layers (alone,
    int8 weights in block 0's depthwise conv drop the worst cosine to 0.96) and they hold 0.3 % of
    the weights. Measured with 8-bit weights on 60 dev posters (calibration on 32 others): all
    convolutions int8, worst cosine 0.67 (Conv only; pre-ReLU6 ranges) / 0.95 (Conv + Clip); first 8
    float: worst 0.9925, mean 0.997, 3.9 MB; with 7-bit weights (the default) the worst is 0.980.
    Returns a summary: bytes, calibration count, quantization text, batchable, and the proof
    (int8_reference.cannot_saturate: "max_pair_sum", "cannot_saturate")."""
    count = 0

    def counted():
        nonlocal count
        for feed in poster_feeds(calibration):
            count += 1
            yield feed

    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    if mode == "weights":
        for _ in counted():
            pass
        Path(out).write_bytes(Path(fp32_onnx).read_bytes())
        weights_only_int8(out, keep=convs[:float_convs], min_size=0)
        store_weights_fp16(out)
        return {
            "file": Path(out).name,
            "bytes": Path(out).stat().st_size,
            "quantization": f"int8 weights (8-bit, per output channel) dequantized at load, float compute; first "
            f"{float_convs} of {len(convs)} convolutions keep float weights",
            **proof(out),
            "calibration_images": 0,
            "quantized_convs": len(convs) - min(float_convs, len(convs)),
            "batchable": True,
        }
    if mode != "static":
        raise ValueError(f"unknown poster quantization mode {mode!r}")
    quantize_static(
        str(fp32_onnx),
        str(out),
        Feeds(counted()),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QTYPES[weights],
        activation_type=QTYPES[activations],
        op_types_to_quantize=list(op_types),
        nodes_to_exclude=convs[:float_convs],
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )
    bits = "7-bit (reduce_range)" if reduce_range else "8-bit"
    return {
        "file": Path(out).name,
        "bytes": Path(out).stat().st_size,
        "quantization": f"int8 static QDQ: per-channel {bits} {weights} weights, {activations} activations with "
        f"fixed scales (min/max over {count} training posters); first {float_convs} of {len(convs)} "
        "convolutions, the resize/normalise front and the pooled output float",
        **proof(out),
        "calibration_images": count,
        "quantized_convs": len(convs) - min(float_convs, len(convs)),
        "batchable": True,
    }


# ---------------------------------------------------------------------------------------------
# text encoder


def quantize_text(
    fp32_onnx: Path,
    out: Path,
    mode: str,
    calibration: Iterable[dict] = (),
    keep_float=(),
    reduce_range: bool = True,
    weights: str = "s8",
) -> dict:
    """A text encoder ONNX (inputs input_ids, attention_mask; output embedding) → `out`.

    mode "dynamic": int8 per-channel weights, activations quantized per call (DynamicQuantizeLinear),
      so a plot's embedding depends on what else shares its batch: not batchable.
    reduce_range (default): 7-bit weights, so no u8 x s8 pair sum can saturate on any CPU (module
      docstring: the measurements); weights="u8" gives U8U8 (exact kernels everywhere, slower).
    mode "static": int8 QDQ, per-channel weights, activation scales fixed by `calibration` (feed dicts
      of training plots): batchable.
    mode "weights": int8-stored weights (8-bit per channel, embedding tables per tensor) dequantized to
      float, float compute: no activation rounding, batchable. The MatMul weights then move into
      NAME.weights beside the graph (packing.pack): the float weights are rebuilt before onnxruntime
      is handed the graph (session() here, predictor.session, the browser's weights.js).
    mode "int4": as "weights" with 4-bit MatMul weights and 4-bit embedding tables (blocks and fp16
      scales: INT4_*_BLOCK), all in NAME.weights: a smaller file, its outputs judged by export's CV check.
      With `calibration` (training plots) the MatMul integers are GPTQ's (pipeline/gptq.py), else rounded.
    mode "fp16": float compute, weights stored fp16: batchable.
    `keep_float`: node names left float (fp16-stored) in the int8 modes.
    Returns {"quantization": text, "batchable": bool, "bytes": int, "max_pair_sum", "cannot_saturate"}."""
    keep = list(keep_float)
    packed_weights.blob_path(out).unlink(missing_ok=True)  # a weights file only where this mode packs one
    bits = ("7-bit (reduce_range) s8" if reduce_range else "8-bit s8") if weights == "s8" else "u8 (U8U8)"
    if mode == "dynamic":
        quantize_dynamic(
            str(fp32_onnx),
            str(out),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QTYPES[weights],
            nodes_to_exclude=keep,
        )
        store_weights_fp16(out)
        what, batchable = f"int8 dynamic, per-channel {bits} weights; run one plot per call, unpadded", False
    elif mode == "static":
        quantize_static(
            str(fp32_onnx),
            str(out),
            Feeds(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QTYPES[weights],
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=keep,
            extra_options={"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
            calibration_providers=["CPUExecutionProvider"],
        )
        store_weights_fp16(out)
        what, batchable = (
            f"int8 static QDQ, per-channel {bits} weights, fixed activation scales from training plots",
            True,
        )
    elif mode == "weights":
        quantize_dynamic(str(fp32_onnx), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
        plan = packing_plan(out, keep, matmul=(8, None, "f32"))
        store_weights_fp16(out, skip=plan)
        packing.pack(out, plan)
        what, batchable = "int8 weights only (8-bit per-channel, dequantized to float), float compute", True
    elif mode == "int4":
        Path(out).write_bytes(Path(fp32_onnx).read_bytes())
        matmuls = packing_plan(out, keep, matmul=(4, INT4_MATMUL_BLOCK, "f16"))
        tables = packing_plan(out, keep, gather=(4, INT4_EMBEDDING_BLOCK, "f16"))
        feeds = list(calibration)
        chosen = gptq.rounded(fp32_onnx, matmuls, feeds) if feeds else {}
        store_weights_fp16(out, skip={**matmuls, **tables})
        packing.pack(out, {**matmuls, **tables}, gathered=set(tables), quantized=chosen)
        what = (
            f"4-bit weights (MatMul: a scale per {INT4_MATMUL_BLOCK[0]} rows of a column"
            + (f", integers by GPTQ on {len(feeds)} training plots" if chosen else "")
            + f"; embedding tables: per {INT4_EMBEDDING_BLOCK[1]} values of a row; fp16 scales), dequantized to"
            " float, float compute"
        )
        batchable = True
    elif mode == "fp16":
        Path(out).write_bytes(Path(fp32_onnx).read_bytes())
        store_weights_fp16(out)
        what, batchable = "float compute, weights stored fp16", True
    else:
        raise ValueError(f"unknown text quantization mode {mode!r}")
    if keep and mode != "fp16":
        what += f" ({len(keep)} MatMuls kept float)"
    return {
        "quantization": what,
        "batchable": batchable,
        "bytes": sum(f.stat().st_size for f in packed_weights.shipped_files(out)),
        **(proof(out) if mode != "fp16" else {"max_pair_sum": 0, "cannot_saturate": True}),
    }


INT4_MATMUL_BLOCK = (32, 1)  # rows (input features) per scale, per output column
INT4_EMBEDDING_BLOCK = (1, 64)  # per table row (token), 64 of its values per scale


def packing_plan(path: Path, keep=(), matmul=None, gather=None, min_size: int = 16384) -> dict:
    """packing.pack's plan for the graph at `path`: every large float MatMul weight (B [K, N]; not a
    node in `keep`) as `matmul` (bits, block, scale type; block None: one scale per output column), every
    large float table a Gather reads as `gather` (None: left as it is)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    plan = {}
    for n in model.graph.node:
        role = {"MatMul": (1, matmul), "Gather": (0, gather)}.get(n.op_type)
        if role is None or role[1] is None or n.name in keep:
            continue
        w = inits.get(n.input[role[0]])
        if w is not None and w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 2 and np.prod(w.dims) >= min_size:
            bits, block, scale = role[1]
            plan[w.name] = (bits, block or (w.dims[0], 1), scale)
    return plan


def weights_only_int8(path: Path, keep=(), min_size: int = 16384):
    """Every MatMul / Conv whose weight is a large float initializer (not in `keep`) reads it from 8-bit
    per-output-channel symmetric int8 (times its scale): a quarter of the bytes, and no
    integer product anywhere (so nothing can saturate, and activations are never rounded: the
    outputs differ across CPUs by float rounding only)."""
    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    keep = set(keep)
    nodes = []
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type in ("MatMul", "Conv") and len(n.input) > 1 else None
        if (
            w is not None
            and n.name not in keep
            and w.data_type == onnx.TensorProto.FLOAT
            and np.prod(w.dims) >= min_size
        ):
            a = numpy_helper.to_array(w)
            # a scale per output channel, as packed_weights rounds 8 bits: B [K, N] by columns, W [M, C, kh, kw]
            # by its M rows of C * kh * kw values
            rows = a if n.op_type == "MatMul" else a.reshape(a.shape[0], -1)
            block = (rows.shape[0], 1) if n.op_type == "MatMul" else (1, rows.shape[1])
            q, scale = packing.quantize(rows, 8, block, "f32")
            q = q.reshape(a.shape)
            scale = scale if n.op_type == "MatMul" else scale.reshape(-1, *[1] * (a.ndim - 1))
            name = w.name
            w.CopyFrom(numpy_helper.from_array(q, name + "_int8"))
            g.initializer.append(numpy_helper.from_array(scale, name + "_scale"))
            # Cast + Mul, not DequantizeLinear: onnxruntime folds these constants into a float weight at
            # load, where a DequantizeLinear -> MatMul pair would become MatMulNBits (int8 compute)
            nodes.append(helper.make_node("Cast", [name + "_int8"], [name + "_float"], to=onnx.TensorProto.FLOAT))
            nodes.append(helper.make_node("Mul", [name + "_float", name + "_scale"], [name]))
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.save(model, str(path))


def proof(path: Path) -> dict:
    """int8_reference.cannot_saturate's verdict, for the summaries."""
    from pipeline.export import int8_reference

    p = int8_reference.cannot_saturate(path)
    return {"max_pair_sum": p["max_pair_sum"], "cannot_saturate": p["ok"]}


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
        graph = packing.load_graph(path).graph
    else:
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(packing.model_source(path), opts, providers=["CPUExecutionProvider"])
            graph = onnx.load(opts.optimized_model_filepath).graph
    return {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in graph.node}


def quantized_ops(path: Path, optimized: bool = False) -> set[str]:
    """The int8 operators among op_types(path, optimized)."""
    words = ("Quant", "Integer", "QLinear", "QAttention", "QGemm")
    return {op for op in op_types(path, optimized) if any(w in op for w in words)}
