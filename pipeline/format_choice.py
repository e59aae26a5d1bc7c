"""Which file format the shipped text encoder (and head) take: a smaller format ships only when
cross-validation says it costs at most `format_bound` F1 (micro and macro, every input mode).

A candidate's exported encoder embeds every dev plot (through the file, as `predict` runs it); each dev
fold's head (fusion.fold_head: trained on the other folds' fp32 embeddings, as in `train`), with its weights
stored as the candidate stores them, scores its fold; thresholds come from the other folds
(evaluate.cv_scores). The same fold heads on the fp32 embeddings give the reference. No test row is read.
The encoder never saw a dev label (it learned from extra rows only), so its embeddings of dev rows are
honest inputs for the fold heads.
"""

import numpy as np
import torch
from tokenizers import Tokenizer

from . import evaluate, finetune, fusion, packed_weights, quantize, text

HEAD_WEIGHTS = (8, "f32")  # the head's large matrices in the smaller formats: 8-bit, one float32 scale per row
MIN_HEAD_WEIGHT = 16384  # elements: smaller matrices (the encoder's genre head) stay float


def head_plan(path) -> dict:
    """packed_weights.pack's plan for an exported head: each large 2-D float initializer (torch Linear
    weights [out, in], read by Gemm) with a scale per row: per output unit, as `store_like` rounds them."""
    import onnx

    model = onnx.load(str(path))
    bits, scale = HEAD_WEIGHTS
    return {
        i.name: (bits, (1, i.dims[1]), scale)
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and np.prod(i.dims) >= MIN_HEAD_WEIGHT
    }


def head_quantization() -> str:
    bits, scale = HEAD_WEIGHTS
    return f"{bits}-bit matrices (a {scale} scale per row), dequantized to float at load, float compute"


def store_like(head: fusion.FusionHead) -> fusion.FusionHead:
    """The head with each large weight matrix as the shipped file rebuilds it (head_plan's rounding)."""
    bits, scale = HEAD_WEIGHTS
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim == 2 and p.numel() >= MIN_HEAD_WEIGHT:
                w = p.numpy()
                block = (1, w.shape[1])
                q, s = packed_weights.quantize(w, bits, block, scale)
                p.copy_(torch.from_numpy(packed_weights.dequantize(q, s, block)))
    return head


def embed_file(path, tokenizer_file, plots: list[str], max_len: int, threads: int, batch: int = 16) -> np.ndarray:
    """Embeddings of `plots` through an exported text encoder (batched by length: it is batchable)."""
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.no_truncation()
    ids = [text.encode(tok, p, max_len) for p in plots]
    session = quantize.session(path, threads=threads)
    out = None
    order = np.argsort([len(i) for i in ids])
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        x, mask = text.pad([ids[r] for r in rows])
        e = session.run(None, {"input_ids": x.numpy(), "attention_mask": mask.numpy()})[0]
        out = np.zeros((len(plots), e.shape[1]), np.float32) if out is None else out
        out[rows] = e
    return out


def cv_of_format(cfg, e32, e_file, image, has_poster, y, fold, text_head, shipped: dict, pack_head: bool) -> dict:
    """{mode: {"micro"|"macro": {"fp32": F1, "format": F1}}} for each mode's shipped model id (evaluate.OURS)."""
    dev = fold >= 0
    probs = {}
    for mode, model_id in shipped.items():
        head_name, head_mode = evaluate.OURS[mode][model_id]
        ref, cand = np.full(y.shape, np.nan, np.float32), np.full(y.shape, np.nan, np.float32)
        if head_name == "text_finetuned":  # the encoder's own head: no fold heads
            with torch.no_grad():
                ref[dev] = finetune.sigmoid(text_head(torch.from_numpy(e32[dev])).numpy())
                cand[dev] = finetune.sigmoid(text_head(torch.from_numpy(e_file[dev])).numpy())
        else:
            uses_image = fusion.HEADS[head_name][1]
            drop = cfg.modality_dropout if head_name == "fusion" else 0.0
            for k in range(fold.max() + 1):
                head, _, _ = fusion.fold_head(
                    cfg, text_head, e32, image, has_poster, y, fold, k, use_image=uses_image, drop=drop
                )
                ref[fold == k] = fusion.mode_probs(head, e32, image, has_poster, fold == k)[head_mode]
                head = store_like(head) if pack_head else head
                cand[fold == k] = fusion.mode_probs(head, e_file, image, has_poster, fold == k)[head_mode]
        probs[mode] = (ref, cand)
    cv = {}
    for mode, (ref, cand) in probs.items():
        a, b = (evaluate.cv_scores(p, y, fold, cfg.threshold_shrink) for p in (ref, cand))
        cv[mode] = {
            avg: {"fp32": a[f"cv_{avg}_f1"]["mean"], "format": b[f"cv_{avg}_f1"]["mean"]} for avg in ("micro", "macro")
        }
    return cv


def passes(cv: dict, bound: float) -> bool:
    """Within `bound` of fp32 (or above) in every mode, micro and macro."""
    return all(v["format"] >= v["fp32"] - bound for by_avg in cv.values() for v in by_avg.values())
