"""The fine-tuned text encoder to the ONNX file the browser and `predict` run, with its checks.

fp32 ONNX from torch (parity checked), then quantized by quantize.quantize_text in the mode export
asks for (export.choose_format: "int4" or "weights", by CV). In mode "weights" (8-bit) which layers stay
float is chosen on dev plots (never test): the smallest set of FLOAT_CANDIDATES, in order, whose file
keeps every sampled plot's embedding within MIN_COSINE of fp32; "int4" is judged by export's CV check
(stages/format_check) instead, its cosine only reported. Checks written beside it: parity, cosine, batched vs single, native
one-thread latency, ops.
"""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.export import quantize, web_session
from pipeline.learn import text
from pipeline.runtime import packed_weights

FLOAT_CANDIDATES = {  # the FFN output projections (inputs after GELU: the widest activations) lose most
    "none": None,
    "ffn_output": re.compile(r"/encoder/layer\.\d+/output/dense/MatMul$"),
}
MIN_COSINE = 0.99


def kept_float(fp32: Path, pattern: re.Pattern | None) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(fp32)).graph.node if pattern and pattern.search(n.name)]


def export_fp32(model, path: Path, example: list[int]):
    """The torch text encoder as a float ONNX graph (input_ids, attention_mask → embedding; batch and
    token axes free), traced on one plot's ids."""
    x = torch.tensor([example])
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "embedding": {0: "batch"},
    }
    quantize.export_onnx(model, (x, torch.ones_like(x)), path, ["input_ids", "attention_mask"], "embedding", axes)


def export_text_encoder(
    model, out: Path, calibration_ids: list[list[int]], check_ids: list[list[int]], max_len: int, mode: str
) -> dict:
    """Write `out` (a text encoder: input_ids, attention_mask → embedding) in quantize_text's `mode`;
    return the checks. calibration_ids: token ids of the training plots GPTQ fits "int4" to (extra rows:
    export.gptq_calibration; unused by "weights"); check_ids: dev plots. In mode "int4" no layer is chosen to
    stay float (its cosine is reported; export judges it by CV)."""
    feeds = quantize.text_feeds(check_ids)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(model, fp32, check_ids[0])
        with torch.no_grad():
            ref = np.concatenate(
                [model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)).numpy() for r in check_ids]
            )
        parity = float(np.abs(quantize.outputs(fp32, feeds) - ref).max())
        candidates = {}
        for name, pattern in FLOAT_CANDIDATES.items():
            info = quantize.quantize_text(
                fp32, out, mode, quantize.text_feeds(calibration_ids), kept_float(fp32, pattern)
            )
            candidates[name] = quantize.embedding_cosine(fp32, out, feeds)
            if candidates[name]["min"] >= MIN_COSINE or mode == "int4":
                break
        assert not info["integer_ops"], info  # float compute: the checks hold on every CPU (quantize.integer_ops)
        fp32_ms = quantize.native_ms(fp32, feeds[:32])
        gate = {} if mode == "int4" else {"kept_float": name, "min_cosine_required": MIN_COSINE}  # int4: CV decides
        check = {
            **info,
            **gate,
            "candidates": candidates,
            "dev_plots": len(check_ids),
            "onnx_fp32_vs_torch_max_abs": parity,
            "cosine_to_fp32": candidates[name],
            "batched_vs_single_max_abs": quantize.batch_matches(out, check_ids[:16]),
            "native_ms_one_thread": quantize.native_ms(out, feeds[:32]),
            "native_ms_one_thread_fp32": fp32_ms,
            "median_tokens": float(np.median([len(r) for r in check_ids[:32]])),
            "ops": sorted(quantize.op_types(out)),
        }
    return check


def prune_vocabulary(model, tokenizer_json: str, plots: list[str], max_len: int) -> tuple[object, str]:
    """(a copy of `model` whose word-embedding table keeps only the rows vocab.kept_ids keeps for
    `plots` (training plots: never a dev or test plot, so CV sees what pruning does to unseen text), and
    the tokenizer.json renumbered to match). Every single character stays, so a word the pruned
    vocabulary lacks splits into smaller pieces, never [UNK]."""
    import copy

    from pipeline.export import vocab

    tok_json = json.loads(tokenizer_json)
    tok = vocab.load_tokenizer_json(tok_json)
    used = {i for p in plots for i in text.encode(tok, p, max_len)}
    keep = vocab.kept_ids(tok_json, used)
    pruned = copy.deepcopy(model)
    table = pruned.backbone.embeddings.word_embeddings
    table.weight = torch.nn.Parameter(table.weight.detach()[torch.tensor(keep)].clone())
    table.num_embeddings = len(keep)
    return pruned, json.dumps(vocab.pruned_tokenizer(tok_json, keep), ensure_ascii=False, separators=(",", ":"))


def manifest_entry(path: Path, tokenizer: str, backbone: str, dim: int, max_len: int, info: dict) -> dict:
    """The manifest's entry for the encoder at `path`; "weights_file" names its packed weights file (packed_weights),
    which the graph cannot run without, or is null."""
    weights = packed_weights.blob_path(path)
    return {
        "file": path.name,
        "weights_file": weights.name if weights.exists() else None,
        "web_optimization": web_session.optimization_level(path),
        "tokenizer": tokenizer,
        "backbone": backbone,
        "inputs": {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]},
        "input_type": "int64",
        "output": "embedding",
        "dim": dim,
        "max_len": max_len,
        "quantization": info["quantization"],
        "batchable": info["batchable"],
    }


def files(entry: dict) -> list[str]:
    """A model entry's files, as the manifest names them (and models.js loads them): graph, tokenizer
    (a text encoder's), packed weights (if any)."""
    return [f for f in (entry["file"], entry.get("tokenizer"), entry.get("weights_file")) if f]
