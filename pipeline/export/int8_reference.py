"""A numpy reference of onnxruntime's (MLAS) integer kernels, and a proof that a model cannot saturate.

How ORT multiplies u8 activations by s8 weights depends on the CPU (MLAS, qgemm_kernel_*.cpp):
  exact      AVX-512-VNNI / AVX-VNNI (vpdpbusd: 4 u8*s8 products straight into int32), ARM64 (sdot/udot or
             widening multiplies), wasm SIMD (i32x4.dot_i16x8 on widened bytes), and every U8U8 kernel
             (bytes zero-extended to int16, then pmaddwd: int32 sums, exact);
  saturating AVX2 and AVX-512 without VNNI (vpmaddubsw): adjacent pairs along K, a[2i]*b[2i] + a[2i+1]*b[2i+1],
             are summed into a *saturating* int16 before vpmaddwd adds them into int32. The kernels work on
             the raw stored bytes (the zero points are applied afterwards through row/column sums), so a
             pair can saturate whenever 255 * (|b| + |b'|) > 32767 for two same-signed weights of one column.
             s8 activations (QDQ with QInt8 activations) are turned into u8 (+128) on x86 first: the
             same kernel, the same bound.

matmul_exact / matmul_saturating  the two integer products of MatMulInteger(A, B, a_zero_point, b_zero_point).
pair_bound(weights)               the largest |pair sum| any u8 input (0..255) can make with those weights, over
                                  ANY pairing of the K elements (two largest same-signed |w| per column), so it
                                  holds for matmul and convolution layouts alike.
cannot_saturate(model_path)       that bound for every integer node (MatMulInteger, ConvInteger, QLinearConv,
                                  QLinearMatMul, and DequantizeLinear weights feeding Conv/MatMul/Gemm in QDQ
                                  graphs): ok when every bound <= 32767, i.e. the model computes the same
                                  integers on every CPU path.
run_saturating(model_path, feeds) the model's outputs through onnx.reference with MatMulInteger (and the
                                  QDQ MatMul/Conv patterns) computed by the saturating pair sum: what an
                                  AVX2-only CPU returns. run_exact: the same evaluator with exact products
                                  (what VNNI, ARM64 and wasm return).

Checked against onnxruntime 1.32 under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no VNNI) on this
AVX-512-VNNI machine: crafted MatMulInteger weights (a = 255, w = -128 / 127 pairs): Haswell = the
saturating reference bit for bit, native = the exact one. Base MiniLM dynamic int8, 8-bit weights, 3
dev plots: Haswell vs native cosine 0.990..0.993, Haswell vs run_saturating 0.9999999..1.0; with 7-bit
weights (cannot_saturate ok) Haswell vs native relative difference 1e-7. Lite0 static int8, 8-bit
weights: Haswell vs native 0.991..0.997, vs run_saturating 0.9993..0.9996 (the rest: QLinearConv
requantizes once where the reference rounds the float result); 7-bit weights: identical outputs.
"""

import numpy as np
import onnx
from onnx import numpy_helper

INT16_MAX, INT16_MIN = 32767, -32768
U8_MAX = 255  # the largest raw activation byte a u8 x s8 kernel sees (s8 activations are shifted to u8 first)


# ---------------------------------------------------------------------------------------------
# the two integer products


def _raw(a: np.ndarray, b: np.ndarray, saturate: bool) -> np.ndarray:
    """sum_k a[..., m, k] * b[k, n] on the stored integers, int32; with saturate=True each adjacent pair
    along K (2i, 2i+1) is clamped to int16 first (vpmaddubsw), K padded with a zero to even length."""
    a = a.astype(np.int32)
    b = b.astype(np.int32)
    if not saturate:
        return np.matmul(a, b).astype(np.int32)
    k = a.shape[-1]
    if k % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.int32)], -1)
        b = np.concatenate([b, np.zeros((1, b.shape[1]), np.int32)], 0)
    lead = a.shape[:-2]
    a2 = a.reshape(-1, a.shape[-2], a.shape[-1])
    out = np.zeros((a2.shape[0], a2.shape[1], b.shape[1]), np.int32)
    be, bo = b[0::2], b[1::2]  # [K/2, N]
    rows = max(1, (1 << 24) // max(1, be.size))  # bound the [rows, K/2, N] temporary
    for i in range(a2.shape[0]):
        for s in range(0, a2.shape[1], rows):
            ae, ao = a2[i, s : s + rows, 0::2], a2[i, s : s + rows, 1::2]  # [r, K/2]
            pair = ae[:, :, None] * be[None] + ao[:, :, None] * bo[None]  # [r, K/2, N]
            out[i, s : s + rows] = np.clip(pair, INT16_MIN, INT16_MAX).sum(1)
    return out.reshape(*lead, a.shape[-2], b.shape[1])


def _zero_point(z, dtype) -> np.ndarray:
    return np.zeros((), np.int32) if z is None else np.asarray(z).astype(np.int32)


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, saturate: bool = False) -> np.ndarray:
    """ONNX MatMulInteger (A [..., M, K] u8, B [K, N] s8 or u8; b_zero_point scalar or per column N) as MLAS
    computes it: the raw product, then the zero-point corrections from row and column sums (exact int32).
    Saturation only applies to u8 x s8 (U8U8 kernels widen to int16 first)."""
    a, b = np.asarray(a), np.asarray(b)
    assert b.ndim == 2, "B must be a 2-D weight"
    za, zb = _zero_point(a_zero_point, a.dtype), _zero_point(b_zero_point, b.dtype)
    sat = saturate and b.dtype == np.int8
    raw = _raw(a, b, sat)
    k = a.shape[-1]
    rowsum = a.astype(np.int32).sum(-1, keepdims=True)  # [..., M, 1]
    colsum = b.astype(np.int32).sum(0)  # [N]
    return (raw - za * colsum - zb * rowsum + k * za * zb).astype(np.int32)


def matmul_exact(a, b, a_zero_point=None, b_zero_point=None) -> np.ndarray:
    return matmul_integer(a, b, a_zero_point, b_zero_point, saturate=False)


def matmul_saturating(a, b, a_zero_point=None, b_zero_point=None) -> np.ndarray:
    return matmul_integer(a, b, a_zero_point, b_zero_point, saturate=True)


# ---------------------------------------------------------------------------------------------
# the proof


def pair_bound(weights: np.ndarray, axis: int = 0, a_max: int = U8_MAX) -> int:
    """max over u8 inputs (0..a_max) and over ANY pairing of two reduction elements of one output channel
    of |a1*w1 + a2*w2|. `weights`: s8 stored integers, reduction over every axis but the output channel's
    (`axis` is the output channel axis: 1 for a MatMul B [K, N], 0 for a Conv W [M, C, kh, kw]).
    Raw bytes are what the kernel multiplies, so this does not depend on zero points or scales."""
    w = np.moveaxis(np.asarray(weights).astype(np.int64), axis, 0).reshape(np.shape(weights)[axis], -1)
    if w.shape[1] < 2:
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.int64)], 1)
    pos = -np.sort(-np.maximum(w, 0), 1)[:, :2].sum(1)
    neg = -np.sort(np.minimum(w, 0), 1)[:, :2].sum(1)  # magnitude of the two most negative
    return int(a_max * max(pos.max(), neg.max()))


INTEGER_OPS = ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul")


def cannot_saturate(model_path) -> dict:
    """Per integer node of a quantized model: the largest |pair sum| its s8 weights allow with any u8 input,
    and ok = bound <= 32767. u8 weights (U8U8: MLAS widens both to int16) cannot saturate: bound None, ok.
    Returns {"ok": all ok, "max_pair_sum": the worst bound, "limit": 32767, "nodes": [...]}."""
    model = onnx.load(str(model_path), load_external_data=False)  # float weights packed aside are no integer node's
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def weight(name):
        """The stored integer tensor behind `name` (through Cast/Identity/Transpose-free chains)."""
        if name in inits:
            return numpy_helper.to_array(inits[name])
        p = producers.get(name)
        if p is not None and p.op_type == "Identity":
            return weight(p.input[0])
        if p is not None and p.op_type == "Constant":
            return numpy_helper.to_array(p.attribute[0].t)
        return None

    nodes = []

    def add(node, w, axis, kind):
        if w is None:
            nodes.append(
                {"node": node.name, "op": kind, "max_pair_sum": None, "ok": False, "why": "weight not constant"}
            )
            return
        if w.dtype == np.uint8:
            nodes.append(
                {
                    "node": node.name,
                    "op": kind,
                    "max_pair_sum": None,
                    "ok": True,
                    "why": "u8 weights: U8U8 kernels are exact",
                }
            )
            return
        b = pair_bound(w, axis)
        nodes.append({"node": node.name, "op": kind, "max_pair_sum": b, "ok": b <= INT16_MAX})

    for n in model.graph.node:
        if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"):
            add(n, weight(n.input[1]), 1, n.op_type)
        elif n.op_type == "ConvInteger":
            add(n, weight(n.input[1]), 0, n.op_type)
        elif n.op_type == "QLinearConv":
            add(n, weight(n.input[3]), 0, n.op_type)
        elif n.op_type == "QLinearMatMul":
            add(n, weight(n.input[3]), 1, n.op_type)
        elif n.op_type == "DequantizeLinear":
            w = weight(n.input[0])
            if w is None or w.dtype not in (np.int8, np.uint8):
                continue  # an activation's DQ
            for c in consumers.get(n.output[0], []):
                x = producers.get(c.input[0])
                if x is None or x.op_type != "DequantizeLinear":
                    continue  # weight-only: the activation stays float, onnxruntime runs a float kernel
                if c.op_type == "Conv" and c.input[1] == n.output[0]:
                    add(c, w, 0, "QDQ Conv")
                elif c.op_type in ("MatMul", "Gemm") and len(c.input) > 1 and c.input[1] == n.output[0]:
                    axis = 0 if (c.op_type == "Gemm" and any(a.name == "transB" and a.i for a in c.attribute)) else 1
                    add(c, w, axis, "QDQ " + c.op_type)
    bounds = [x["max_pair_sum"] for x in nodes if x["max_pair_sum"] is not None]
    return {
        "ok": all(x["ok"] for x in nodes),
        "max_pair_sum": max(bounds) if bounds else 0,
        "limit": INT16_MAX,
        "integer_nodes": len(nodes),
        "nodes": nodes,
    }


# ---------------------------------------------------------------------------------------------
# evaluating a model on either path (onnx.reference with the integer products replaced)

DOMAIN = "int8ref"


def _conv_integer(x, w, x_zero, w_zero, pads, strides, dilations, group, saturate):
    """Integer convolution as MLAS computes it (ConvSymKernelAvx2.S): a grouped convolution reduces over
    (kh, kw, c) with the input channels innermost, vpmaddubsw pairing adjacent input channels of one
    kernel tap (the saturating pairs on AVX2); a depthwise one (one channel per group) widens bytes to
    32 bits (vpmovzxbd / vpmovsxbd + vpmaddwd): exact on every path.
    x [1, C, H, W] raw u8 bytes, w [M, C/group, kh, kw] raw s8 (or u8) bytes. Returns int32 [1, M, oh, ow]."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    x = x.astype(np.int32)
    pt, pl, pb, pr = pads
    xp = np.pad(
        x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=int(np.max(x_zero)) if np.ndim(x_zero) == 0 else 0
    )
    oh = (h + pt + pb - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pl + pr - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, m, oh, ow), np.int32)
    mg = m // group
    for g in range(group):
        xs = xp[:, g * cg : (g + 1) * cg]
        cols = np.empty((n, oh, ow, kh, kw, cg), np.int32)
        for i in range(kh):
            for j in range(kw):
                patch = xs[
                    :,
                    :,
                    i * dilations[0] : i * dilations[0] + strides[0] * oh : strides[0],
                    j * dilations[1] : j * dilations[1] + strides[1] * ow : strides[1],
                ]
                cols[:, :, :, i, j, :] = patch.transpose(0, 2, 3, 1)
        a = cols.reshape(n * oh * ow, kh * kw * cg)  # rows = output positions, K = (kh, kw, c)
        wg = w[g * mg : (g + 1) * mg].transpose(2, 3, 1, 0).reshape(kh * kw * cg, mg)  # [K, mg]
        zw = w_zero if np.ndim(w_zero) == 0 else np.asarray(w_zero)[g * mg : (g + 1) * mg]
        res = matmul_integer(a.astype(np.uint8), wg, x_zero, zw, saturate and cg > 1)
        out[:, g * mg : (g + 1) * mg] = res.reshape(n, oh, ow, mg).transpose(0, 3, 1, 2)
    return out


def _ops(saturate: bool):
    from onnx.reference.op_run import OpRun

    class MatMulInteger(OpRun):
        op_domain = ""

        def _run(self, A, B, a_zero_point=None, b_zero_point=None):
            return (matmul_integer(A, B, a_zero_point, b_zero_point, saturate),)

    def to_u8(q, z):
        """x86 runs s8 activations as u8: the bytes + 128, the zero point + 128."""
        if q.dtype == np.int8:
            return (q.astype(np.int32) + 128).astype(np.uint8), np.asarray(z).astype(np.int32) + 128
        return q, (np.zeros((), np.int32) if z is None else np.asarray(z).astype(np.int32))

    def per_channel(s, z, n):
        s = np.asarray(s, np.float32).reshape(-1)
        z = np.zeros((), np.int32) if z is None else np.asarray(z).astype(np.int32).reshape(-1)
        return (s if s.size > 1 else np.full(n, s.item(), np.float32)), (
            z if z.size > 1 else np.full(n, int(z.reshape(-1)[0]) if z.size else 0, np.int32)
        )

    class QdqMatMul(OpRun):
        op_domain = DOMAIN

        def _run(self, xq, xs, xz, wq, ws, wz):
            xq, xz = to_u8(xq, xz)
            ws, wz = per_channel(ws, wz, wq.shape[1])
            acc = matmul_integer(xq, wq, xz, wz if wz.any() else None, saturate)
            return ((acc.astype(np.float64) * (np.float64(xs) * ws.astype(np.float64))).astype(np.float32),)

    class QdqConv(OpRun):
        op_domain = DOMAIN

        def _run(self, xq, xs, xz, wq, ws, wz, bias=None, pads=None, strides=None, dilations=None, group=None):
            xq, xz = to_u8(xq, xz)
            ws, wz = per_channel(ws, wz, wq.shape[0])
            pads = pads or [0, 0, 0, 0]
            acc = _conv_integer(
                xq,
                wq,
                xz,
                wz,
                (pads[0], pads[1], pads[2], pads[3]),
                strides or [1, 1],
                dilations or [1, 1],
                group or 1,
                saturate,
            )
            y = acc.astype(np.float64) * (np.float64(xs) * ws.astype(np.float64))[None, :, None, None]
            if bias is not None:
                y = y + bias.astype(np.float64)[None, :, None, None]
            return (y.astype(np.float32),)

    class DequantizeLinear(OpRun):  # opset 13 semantics (onnx.reference's start at 19): (x - zp) * scale, float32
        op_domain = ""

        def _run(self, x, x_scale, x_zero_point=None, axis=1, **_):
            shape = [1] * x.ndim
            if np.size(x_scale) > 1:
                shape[axis] = -1
            z = 0 if x_zero_point is None else np.asarray(x_zero_point).astype(np.int32).reshape(shape)
            y = (x.astype(np.int32) - z).astype(np.float32) * np.asarray(x_scale, np.float32).reshape(shape)
            return (y.astype(np.float32),)

    return [MatMulInteger, QdqMatMul, QdqConv, DequantizeLinear]


def integer_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a QDQ model whose DequantizeLinear(x) / DequantizeLinear(w) -> Conv / MatMul patterns
    (w a constant integer weight) become int8ref.QdqConv / QdqMatMul nodes on the stored integers, so the
    evaluator can apply either integer path; MatMulInteger / dynamic graphs are left as they are."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    new_nodes = []
    for n in g.node:
        dq = [producers.get(i) for i in n.input[:2]] if n.op_type in ("Conv", "MatMul") and len(n.input) >= 2 else []
        if (
            len(dq) == 2
            and all(d is not None and d.op_type == "DequantizeLinear" for d in dq)
            and dq[1].input[0] in inits
        ):
            x, w = dq
            ins = [
                x.input[0],
                x.input[1],
                x.input[2] if len(x.input) > 2 else "",
                w.input[0],
                w.input[1],
                w.input[2] if len(w.input) > 2 else "",
            ]
            if n.op_type == "Conv":
                attrs = {
                    a.name: onnx.helper.get_attribute_value(a)
                    for a in n.attribute
                    if a.name in ("pads", "strides", "dilations", "group")
                }
                bias = n.input[2] if len(n.input) > 2 else ""
                new_nodes.append(
                    onnx.helper.make_node(
                        "QdqConv", ins + ([bias] if bias else []), list(n.output), name=n.name, domain=DOMAIN, **attrs
                    )
                )
            else:
                new_nodes.append(onnx.helper.make_node("QdqMatMul", ins, list(n.output), name=n.name, domain=DOMAIN))
        else:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return model


def evaluator(model_path, saturate: bool):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(integer_graph(onnx.load(str(model_path))), new_ops=_ops(saturate))


def run(model_path, feeds, saturate: bool) -> np.ndarray:
    """First outputs of the model for each feed dict, concatenated, on the chosen integer path."""
    ev = evaluator(model_path, saturate)
    return np.concatenate([ev.run(None, f)[0] for f in feeds])


def run_saturating(model_path, feeds) -> np.ndarray:
    """What an AVX2 / AVX-512-without-VNNI CPU computes (u8 x s8 pairs summed into saturating int16)."""
    return run(model_path, feeds, True)


def run_exact(model_path, feeds) -> np.ndarray:
    """What VNNI, ARM64 and wasm compute (exact int32 products)."""
    return run(model_path, feeds, False)
