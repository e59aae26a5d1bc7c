"""Quantization and checks for the shipped ONNX models (used by `export`).

quantize_poster  the poster encoder with 8-bit convolution weights (a float32 scale per output channel) in
                 poster_encoder.weights beside the graph (packing.pack), float compute; the resize/normalise
                 front, the first convolutions and the pooled output stay float.
quantize_text    a text encoder with 8-bit ("weights", TEXT_MODE) or 4-bit ("int4", integers by GPTQ:
                 pipeline/export/gptq.py) weights in NAME.weights beside the graph, float compute: export
                 ships the first of config's text_formats its CV check passes (stages/export.choose_format).
embedding_cosine min/mean cosine between two models' outputs on the same inputs.
batch_matches    whether a batched run gives the single-input outputs (the manifest's "batchable").
native_ms        warm median latency in onnxruntime, one thread.
op_types         the operators of a stored graph, or of the graph onnxruntime runs after its optimizations.
integer_ops      those that multiply integers or round activations: a shipped file holds none.

Why float compute (issue 15): the integers are stored only; the runtimes (packed_weights.py, weights.js)
hand onnxruntime float32 weights, float32(q) * scale. So there is no integer product (x86 without VNNI
sums u8 x s8 pairs into a saturating int16) and no activation rounding (float kernels differ by ulps
between CPUs and wasm, a value at a rounding boundary flips by one step and the flips cascade: an int8
dynamic text encoder gave native vs onnx.reference cosine 0.9957..1.0 on 12 dev plots on this CPU, with
exact integers). The outputs then differ across CPUs by float rounding only, and the acceptance checks
run here hold on every CPU; integer_ops is what says a file is such a file (export asserts it for every
file it writes, tests/test_parity.py for the shipped ones). The integer formats that were measured
and dropped (int8 dynamic, static QDQ, fp16-stored float): `git show 67526de:pipeline/export/quantize.py`.

Measured on this machine on the base models, dev rows drawn with np.random.default_rng(20261201):
text 200 check plots, posters 60. Cosine to fp32 min / mean, MB:
  text encoder (MiniLM), 8-bit weights                    0.9985 / 0.9991  22.9   (fp32: 90.4 MB)
  poster encoder (Lite0), 8-bit weights, first 8 of 49
    convolutions float                                    0.9972 / 0.9983   3.6   (fp32: 13.5 MB)
    all 49 convolutions 8-bit                             0.980  / 0.993
  4-bit text encoder: `python -m bench.gptq`, and export's CV check (format_check).
"""

import re
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
from onnxruntime.quantization import QuantType, quantize_dynamic

from pipeline.export import gptq, packing
from pipeline.runtime import packed_weights

OPSET = 17
# the 8-bit text format (float compute, batchable): what export writes when no CV check chooses; the shipped
# encoder takes the first of text_formats CV accepts
TEXT_MODE = "weights"
POSTER_WEIGHTS = (
    8,
    None,
    "f32",
)  # packing_plan's format for the poster's convolutions: 8 bits, a float32 scale per filter


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


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(packing.model_source(path), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# poster encoder


def poster_feeds(images: Iterable[np.ndarray]) -> Iterator[dict]:
    """The poster encoder's feeds: load_image pixels [H, W, 3] uint8, or [1, 3, H, W] floats 0..255."""
    for x in images:
        x = np.asarray(x, np.float32)
        yield {"image": x if x.ndim == 4 else np.ascontiguousarray(x.transpose(2, 0, 1)[None])}


def quantize_poster(fp32_onnx: Path, out: Path, float_convs: int = 8) -> dict:
    """The poster encoder at `fp32_onnx` → `out` with 8-bit convolution weights and float compute: every
    convolution's weight but the first `float_convs`' rounded to 8 bits with a float32 scale per output
    channel (filter) and moved into NAME.weights beside `out` (packing.pack), as the text encoder's are.
    predict and serve (runtime/packed_weights) and the browser (weights.js) rebuild each weight as
    float32(q) * scale, one rounding, before onnxruntime runs the graph. No calibration.

    The resize and normalisation in front of the first convolution, the pooling after the last and the
    output stay float, and so do the first `float_convs` convolutions (the stem and the first blocks, at
    the highest resolution: 0.3 % of the weights; all 49 at 8 bits drop the worst dev cosine from 0.997
    to 0.980: module docstring).
    Returns a summary: file, bytes (graph and weights file), quantization text, integer_ops (none),
    quantized_convs, batchable."""
    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    Path(out).write_bytes(Path(fp32_onnx).read_bytes())
    plan = packing_plan(out, convs[:float_convs], conv=POSTER_WEIGHTS, min_size=0)
    store_weights_fp16(out, skip=plan)
    packing.pack(out, plan)
    return {
        "file": Path(out).name,
        "bytes": sum(f.stat().st_size for f in packed_weights.shipped_files(out)),
        "quantization": f"int8 weights (8-bit, per output channel) dequantized at load, float compute; first "
        f"{min(float_convs, len(convs))} of {len(convs)} convolutions keep float weights",
        "integer_ops": sorted(integer_ops(out)),
        "quantized_convs": len(plan),
        "batchable": True,
    }


# ---------------------------------------------------------------------------------------------
# text encoder


def quantize_text(fp32_onnx: Path, out: Path, mode: str, calibration: Iterable[dict] = (), keep_float=()) -> dict:
    """A text encoder ONNX (inputs input_ids, attention_mask; output embedding) → `out`, its large weights
    in NAME.weights beside it (packing.pack), float compute, batchable. The float weights are rebuilt before
    onnxruntime is handed the graph (session() here, predictor.session, the browser's weights.js).

    mode "weights": 8-bit MatMul weights (a float32 scale per output column); the embedding tables 8-bit per
      tensor by onnxruntime's quantize_dynamic, in the graph (a DequantizeLinear after each Gather: float
      arithmetic on the gathered rows).
    mode "int4": 4-bit MatMul weights and embedding tables (blocks and fp16 scales: INT4_*_BLOCK), all in
      NAME.weights: a smaller file, its outputs judged by export's CV check. With `calibration` (feeds of
      training plots) the MatMul integers are GPTQ's (pipeline/export/gptq.py), else rounded to nearest.
    `keep_float`: MatMul node names left float (fp16-stored).
    Returns {"quantization": text, "batchable": True, "bytes": graph and weights file, "integer_ops": []}."""
    keep = list(keep_float)
    if mode == "weights":
        quantize_dynamic(str(fp32_onnx), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
        plan = packing_plan(out, keep, matmul=(8, None, "f32"))
        store_weights_fp16(out, skip=plan)
        packing.pack(out, plan)
        what = "int8 weights only (8-bit per-channel, dequantized to float), float compute"
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
    else:
        raise ValueError(f"unknown text format {mode!r}: 'weights' (8-bit) or 'int4'")
    if keep:
        what += f" ({len(keep)} MatMuls kept float)"
    return {
        "quantization": what,
        "batchable": True,
        "bytes": sum(f.stat().st_size for f in packed_weights.shipped_files(out)),
        "integer_ops": sorted(integer_ops(out)),
    }


INT4_MATMUL_BLOCK = (32, 1)  # rows (input features) per scale, per output column
INT4_EMBEDDING_BLOCK = (1, 64)  # per table row (token), 64 of its values per scale


def packing_plan(path: Path, keep=(), matmul=None, gather=None, conv=None, min_size: int = 16384) -> dict:
    """packing.pack's plan for the graph at `path`, for the float weights of at least `min_size` values of
    nodes not named in `keep`: every MatMul weight (B [K, N]) as `matmul` (bits, block, scale type; block
    None: one scale per output column), every 2-D table a Gather reads as `gather` (None: left as it is),
    every Conv weight (W [M, C, kh, kw], packed as M rows of C * kh * kw values) as `conv` (block None: one
    scale per output channel)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    plan = {}
    for n in model.graph.node:
        role = {"MatMul": (1, matmul), "Gather": (0, gather), "Conv": (1, conv)}.get(n.op_type)
        if role is None or role[1] is None or n.name in keep or len(n.input) <= role[0]:
            continue
        w = inits.get(n.input[role[0]])
        if w is None or w.data_type != onnx.TensorProto.FLOAT or np.prod(w.dims) < min_size:
            continue
        if len(w.dims) != 2 and not (n.op_type == "Conv" and len(w.dims) > 2):
            continue
        bits, block, scale = role[1]
        rows, cols = packing.matrix_shape(w.dims)
        plan[w.name] = (bits, block or ((1, cols) if n.op_type == "Conv" else (rows, 1)), scale)
    return plan


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
    [1, 3, H, W] floats): export ships the 8-bit model only if "min" >= MIN_COSINE on held-back dev posters
    (stages/export.export_poster; the test posters' cosine is reported, never used)."""
    return embedding_cosine(fp32_onnx, quant_onnx, list(poster_feeds(images)))


def text_feeds(ids: Iterable[list[int]]) -> list[dict]:
    out = []
    for row in ids:
        x = np.array([row], np.int64)
        out.append({"input_ids": x, "attention_mask": np.ones_like(x)})
    return out


def batch_matches(path: Path, ids: list[list[int]], atol: float = 1e-4) -> float:
    """Largest |batched - single| over `ids` run as one padded batch versus one at a time: a
    model is "batchable" when this stays within atol (float summation order only)."""
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
            opts.log_severity_level = 3  # not the warning that an optimized graph may hold x86-only layouts
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(packing.model_source(path), opts, providers=["CPUExecutionProvider"])
            graph = onnx.load(opts.optimized_model_filepath).graph
    return {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in graph.node}


# operators that multiply integers or round activations to integers (QuantizeLinear, DynamicQuantizeLinear,
# MatMulInteger, ConvInteger, QLinear*, QAttention, QGemm, MatMulIntegerToFloat, MatMulNBits, ...): where two
# CPUs, or native and wasm, can differ by more than float rounding (module docstring). DequantizeLinear of a
# stored weight is float arithmetic: allowed.
INTEGER_OP = re.compile(r"(^|\.)(Q[A-Z]|QuantizeLinear|DynamicQuantize)|Integer|NBits")


def integer_ops(path: Path) -> set[str]:
    """The integer operators (INTEGER_OP) of the graph native onnxruntime runs for `path`, after its own
    optimizations (which could fuse a dequantized weight into an integer kernel): empty for a file that
    computes in float. This is all a test of the shipped formats needs of the integer formats' saturation
    proof (int8_reference, removed with them): no integer operator, no integer product to saturate."""
    return {op for op in op_types(path, optimized=True) if INTEGER_OP.search(op)}
