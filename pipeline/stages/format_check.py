"""Which file format the shipped text encoder (and head) take: a smaller format ships only when
cross-validation says it costs at most `format_bound` F1 (micro and macro, every input mode).

A candidate's exported encoder embeds every dev plot (through the file, as `predict` runs it); each dev
fold's head (fusion.fold_head: trained on the other folds' fp32 embeddings, as in `train`), with its weights
stored as the candidate stores them, scores its fold; the fold is decided by thresholds tuned on the other
folds' fp32 scores (the shipped thresholds are tuned on fp32 scores too, never on the candidate's). The
same fold heads on the fp32 embeddings give the reference. No test row is read.
The encoder never saw a dev label (it learned from extra rows only), so its embeddings of dev rows are
honest inputs for the fold heads.
"""

import copy

import numpy as np
import torch
from tokenizers import Tokenizer

from pipeline.choose import thresholds
from pipeline.export import quantize
from pipeline.export.head_packing import (
    store_like,
)
from pipeline.learn import fusion, text, text_classifier
from pipeline.runtime import rules
from pipeline.stages import evaluate


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
    probs, fold_heads = {}, {}  # fold heads by head name: a head two modes share is trained once
    for mode, model_id in shipped.items():
        head_name, head_mode = evaluate.OURS[mode][model_id]
        ref, cand = np.full(y.shape, np.nan, np.float32), np.full(y.shape, np.nan, np.float32)
        if head_name == "text_finetuned":  # the encoder's own head: no fold heads
            with torch.no_grad():
                ref[dev] = text_classifier.sigmoid(text_head(torch.from_numpy(e32[dev])).numpy())
                cand[dev] = text_classifier.sigmoid(text_head(torch.from_numpy(e_file[dev])).numpy())
        else:
            if head_name not in fold_heads:
                uses_image = fusion.HEADS[head_name][1]
                drop = cfg.modality_dropout if head_name == "fusion" else 0.0
                fold_heads[head_name] = []
                for k in thresholds.fold_ids(fold):
                    head, _, _ = fusion.fold_head(
                        cfg, text_head, e32, image, has_poster, y, fold, k, use_image=uses_image, drop=drop
                    )
                    stored = store_like(copy.deepcopy(head)) if pack_head else head
                    fold_heads[head_name].append((head, stored))
            for k, (head, stored) in enumerate(fold_heads[head_name]):
                ref[fold == k] = fusion.mode_probs(head, e32, image, has_poster, fold == k)[head_mode]
                cand[fold == k] = fusion.mode_probs(stored, e_file, image, has_poster, fold == k)[head_mode]
        probs[mode] = (ref, cand)
    cv, shrinks = {}, thresholds.parse_shrinks(cfg.threshold_shrinks)
    for mode, (ref, cand) in probs.items():
        scores = {"fp32": [], "format": []}
        for k in thresholds.fold_ids(fold):
            # the thresholds that ship are fitted on fp32 scores: fold k is decided by those of the other folds
            held = fold == k
            cut, _ = thresholds.fit(ref, y, np.where(held, -1, fold), shrinks)
            for name, p in (("fp32", ref), ("format", cand)):
                scores[name].append(thresholds.f1_pair(y[held], rules.decide(p[held], cut)))
        cv[mode] = {
            avg: {name: float(np.mean([f[i] for f in folds])) for name, folds in scores.items()}
            for i, avg in enumerate(("micro", "macro"))
        }
    return cv
