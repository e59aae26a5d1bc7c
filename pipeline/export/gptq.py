"""4-bit MatMul weights that keep the layer's outputs, not just its weights, close to float (GPTQ).

Rounding each weight to its nearest level (packing.quantize) makes every error independently. GPTQ
(Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers") rounds one input row of a MatMul weight B [K, N] at a time and moves the rounding error
onto the rows not yet rounded, weighted by how the layer's inputs correlate (H = X^T X over calibration
tokens), so X @ B_rounded stays near X @ B. The stored format is unchanged: the same blocks, levels and
scales as packing.quantize (every scale computed first, by its clip search on B as trained, so
the order rows are rounded in cannot move them), so Python and the browser rebuild the file as before.
Two deviations from the paper: every layer's H comes from the float graph, not from the outputs of the
layers already rounded (one pass over the calibration plots instead of one per layer); and the scales are
fixed from B before any row is rounded, not per group from the updated weights.

Calibration inputs are plots of training rows only (export passes extra-row plots and refuses int4
without them: never a dev or test plot, and no label is read), run through the float graph: `hessians`.
`python -m bench.gptq` prints what GPTQ changes on held-out extra plots.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.export import packing
from pipeline.runtime import packed_weights

DAMP = 0.01  # of H's mean diagonal, added to it: the paper's value, keeps the inverse stable
LAZY = 128  # rows rounded before the rest of the matrix is updated (the paper's lazy batch; same result)


def matmul_inputs(model: onnx.ModelProto, weights) -> dict[str, str]:
    """weight name -> the activation its MatMul multiplies (A of A @ B)."""
    return {n.input[1]: n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in set(weights)}


HESSIAN_PLOTS = 64  # plots whose rows enter X^T X in one product


def hessians(fp32_onnx: Path, weights, feeds) -> dict[str, np.ndarray]:
    """{weight: X^T X / tokens} (float64 [K, K]) over the rows of its MatMul's input on `feeds` (one plot
    per feed: no padding token enters)."""
    model = onnx.load(str(fp32_onnx))
    acts = matmul_inputs(model, weights)
    names = sorted(set(acts.values()))
    for a in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sums, tokens, pending = {}, 0, {a: [] for a in names}

    def add_pending():
        # one product over many plots' rows: 6.6x faster than a product per plot (10 ms against 1.5 ms for 80
        # rows of the 1,536-wide input, 2026-12-06), the same sums in another order
        for a in names:
            if pending[a]:
                x = np.concatenate(pending[a]).astype(np.float64)
                sums[a] = sums.get(a, 0) + x.T @ x
                pending[a].clear()

    for i, f in enumerate(feeds):
        out = sess.run(names, f)
        for a, x in zip(names, out):
            pending[a].append(x.reshape(-1, x.shape[-1]))
        tokens += int(np.prod(out[0].shape[:-1]))
        if (i + 1) % HESSIAN_PLOTS == 0:
            add_pending()
    add_pending()
    if not tokens:
        raise ValueError("no calibration plots")
    return {w: sums[a] / tokens for w, a in acts.items()}


def quantize(
    w: np.ndarray, h: np.ndarray, bits: int, block: tuple[int, int], scale: str, act_order: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ of B [K, N] given H [K, K]: (q int8 [K, N], scales) in packing.quantize's layout, for
    blocks of br input rows of one output column (block (br, 1)). The scales are packing.quantize's
    (its clip search on B as trained); GPTQ chooses only the integers. Rows are rounded in order of
    decreasing H diagonal (the inputs with the most energy first, while the most rows remain to absorb
    their error: "act order", from the authors' reference code, not the paper's Algorithm 1; act_order=False
    keeps B's row order); fixed scales make that
    order free to choose. `python -m bench.gptq` prints both orders' output error against rounding's."""
    br, bc = block
    if bc != 1:
        raise ValueError(f"block {block}: GPTQ rounds whole input rows, so a scale covers rows of one column")
    _, scales = packing.quantize(w, bits, block, scale)
    S = packed_weights.per_weight(scales, block, w.shape).T.astype(np.float64)  # [N, K]
    W = np.array(w, np.float64).T  # [N, K]: a column per input row
    n, k = W.shape
    H = np.array(h, np.float64)
    dead = np.diag(H) == 0  # an input that is always 0: its weights cannot matter
    H[dead, dead] = 1
    W[:, dead] = 0
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(k)
    W, S, H = W[:, order], S[:, order], H[order][:, order]
    H[np.diag_indices(k)] += DAMP * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper Cholesky factor of H^-1
    Q = np.zeros((n, k), np.int8)
    for b0 in range(0, k, LAZY):
        b1 = min(b0 + LAZY, k)
        W1, E = W[:, b0:b1].copy(), np.zeros((n, b1 - b0))
        for i in range(b1 - b0):
            j = b0 + i
            q = packing.levels(W1[:, i], S[:, j], bits)
            Q[:, j] = q
            E[:, i] = (W1[:, i] - q * S[:, j]) / U[j, j]
            W1[:, i + 1 :] -= np.outer(E[:, i], U[j, j + 1 : b1])
        W[:, b1:] -= E @ U[b0:b1, b1:]
    out = np.empty_like(Q)
    out[:, order] = Q
    return np.ascontiguousarray(out.T), scales


def rounded(fp32_onnx: Path, plan: dict, feeds) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{weight: (q, scales)} for the MatMul weights `plan` names (packing.pack's plan entries
    (bits, block, scale type)), by `quantize` with H from `feeds` through the float graph."""
    h = hessians(fp32_onnx, list(plan), feeds)
    inits = {i.name: i for i in onnx.load(str(fp32_onnx)).graph.initializer if i.name in plan}
    return {
        name: quantize(onnx.numpy_helper.to_array(inits[name]), h[name], bits, block, scale)
        for name, (bits, block, scale) in plan.items()
    }
