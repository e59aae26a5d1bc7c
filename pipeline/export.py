"""Stage `export`: the ONNX models the browser and `predict` run, plus manifest.json.

text_encoder.onnx   the fine-tuned MiniLM + mean pooling, int8 (dynamic, per-channel); tokenizer.json beside it
poster_encoder.onnx EfficientNet-Lite0 with resize and normalisation inside (pipeline/poster_cam.py)
poster_cam.onnx     Grad-CAM maps of the visitor's poster for every genre (pipeline/poster_cam.py)
fusion_head.onnx    the stacked head, the text model's genre head and sigmoid included
"""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from tqdm import tqdm

from . import cache, data, evaluate, finetune, fusion, image, poster_cam, predict, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, predict.__file__, poster_cam.__file__, image.__file__)

OPSET = 17
FILES = ("text_encoder.onnx", "poster_encoder.onnx", "poster_cam.onnx", "fusion_head.onnx", "tokenizer.json")


def to_onnx(model: torch.nn.Module, args: tuple, path: Path, inputs: list[str], output: str, dynamic: dict):
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
    """Halve the file: large fp32 weights are stored as fp16 and cast back to fp32 when loaded.

    The graph still computes in fp32, so every runtime (wasm included) runs it unchanged."""
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


# Which layers stay float is chosen on dev plots (never test): the smallest set of candidates, in
# this order, whose int8 encoder keeps every sampled plot's embedding within MIN_COSINE of fp32. The
# FFN output projections (their inputs, after GELU, are the widest-ranging activations) lose most.
FLOAT_CANDIDATES = {
    "none": None,
    "ffn_output": re.compile(r"/encoder/layer\.\d+/output/dense/MatMul$"),
}
MIN_COSINE = 0.99
CHOICE_PLOTS = 200


def quantize_text(fp32: Path, out: Path, keep: re.Pattern | None):
    nodes = [n.name for n in onnx.load(str(fp32)).graph.node if keep and keep.search(n.name)]
    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=nodes)
    store_weights_fp16(out)


def export_text(cfg, out: Path, weights: Path, plots: list[str]) -> dict:
    """The fine-tuned encoder in int8; returns how the float layers were chosen on `plots` (dev)."""
    model = text.TextEncoder(cfg.text_backbone, weights)
    ids = torch.tensor([[101] + [2000] * 30 + [102]])
    tok = text.load_tokenizer(cfg.text_backbone)
    sample = [text.encode(tok, p, cfg.max_len) for p in plots[:CHOICE_PLOTS]]
    with torch.no_grad():
        ref = [model(torch.tensor([e]), torch.ones(1, len(e), dtype=torch.long)).numpy() for e in sample]
    choice = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "text_fp32.onnx"
        axes = {
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"},
        }
        to_onnx(model, (ids, torch.ones_like(ids)), fp32, ["input_ids", "attention_mask"], "embedding", axes)
        for name, keep in FLOAT_CANDIDATES.items():
            quantize_text(fp32, out / "text_encoder.onnx", keep)
            session = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
            cos = [
                cosine(
                    session.run(None, {"input_ids": np.array([e]), "attention_mask": np.ones((1, len(e)), np.int64)})[
                        0
                    ],
                    r,
                )
                for e, r in zip(sample, ref)
            ]
            choice[name] = {"min_cosine": min(cos), "mean_cosine": float(np.mean(cos))}
            if min(cos) >= MIN_COSINE:
                break
    (out / "tokenizer.json").write_text(text.tokenizer_json(cfg.text_backbone))
    return {
        "dim": model.dim,
        "kept_float": name,
        "dev_plots": len(sample),
        "min_cosine_required": MIN_COSINE,
        "candidates": choice,
    }


def export_head(head: fusion.FusionHead, out: Path, text_dim: int, image_dim: int):
    args = (torch.zeros(1, text_dim), torch.zeros(1, image_dim), torch.ones(1, 1))
    axes = {name: {0: "batch"} for name in ("text", "image", "has_poster", "probabilities")}
    to_onnx(head, args, out / "fusion_head.onnx", ["text", "image", "has_poster"], "probabilities", axes)


def manifest(cfg, labels, thresholds, text_dim, poster: dict, cam: dict, out: Path) -> dict:
    image_dim = poster["dim"]
    files = {f: {"bytes": (out / f).stat().st_size, "sha256": cache.file_digest(out / f)} for f in FILES}
    return {
        "labels": labels,
        "thresholds": {mode: [thresholds[mode][g] for g in labels] for mode in evaluate.SHIPPED},
        "decision": "a genre is predicted when its probability is at or over its threshold for the input mode "
        "('plot' or 'plot+poster'); a plot with none gets its most likely genre",
        "text_encoder": {
            "file": "text_encoder.onnx",
            "tokenizer": "tokenizer.json",
            "backbone": cfg.text_backbone,
            "inputs": {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]},
            "input_type": "int64",
            "output": "embedding",
            "dim": text_dim,
            "max_len": cfg.max_len,
            "max_chars": text.MAX_CHARS,
            "min_words": cfg.min_words,
            "truncation": "first max_chars characters; no padding; over max_len tokens keep the first max_len-1 and the final [SEP]",
            "quantization": "int8 dynamic, per-channel weights; run one plot per call, unpadded",
            "batchable": False,  # dynamic int8: one activation scale per input tensor
        },
        "poster_encoder": poster,
        "poster_cam": cam,
        "fusion_head": {
            "file": "fusion_head.onnx",
            "inputs": {"text": ["batch", text_dim], "image": ["batch", image_dim], "has_poster": ["batch", 1]},
            "input_type": "float32",
            "output": "probabilities",
            "no_poster": "image all zeros and has_poster 0",
        },
        "files": files,
    }


def shipped_check(out: Path, movies, y, metrics) -> dict:
    """The exported models through the same code as `predict`, on the test split, in both input
    modes with their own thresholds: F1 beside the fp32 models' (only reported, never chosen on)."""
    predictor = predict.GenrePredictor(out)
    test = np.flatnonzero(movies.fold.to_numpy() < 0)
    probs = {"plot": [], "plot+poster": []}
    for i in tqdm(test, desc="checking shipped models on test"):
        t = predictor.embed_plot(movies.overview[i])
        pixels = image.load_image(movies.poster[i]) if movies.poster[i] else None
        probs["plot"].append(predictor.combine(t, None))
        probs["plot+poster"].append(predictor.combine(t, None if pixels is None else predictor.embed_poster(pixels)))
    check = {"test_movies": len(test)}
    for mode, fp32_id in evaluate.SHIPPED.items():
        thresholds = np.array([metrics["thresholds"][mode][g] for g in metrics["labels"]])
        micro, macro = evaluate.f1_pair(y[test], evaluate.decide(np.array(probs[mode]), thresholds))
        fp32 = next(m for m in metrics["models"] if m["id"] == fp32_id)
        check[mode] = {
            "micro_f1": micro,
            "macro_f1": macro,
            "fp32_micro_f1": fp32["micro_f1"],
            "fp32_macro_f1": fp32["macro_f1"],
            "delta_micro_points": 100 * (micro - fp32["micro_f1"]),
            "delta_macro_points": 100 * (macro - fp32["macro_f1"]),
        }
    return check


def cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def run(cfg) -> cache.Output:
    curated, tuned, trained, evaluated = data.run(cfg), finetune.run(cfg), fusion.run(cfg), evaluate.run(cfg)
    metrics = evaluate.load(evaluated)
    parts = {
        "finetune": tuned.key,
        "train": trained.key,
        "evaluate": evaluated.key,
        "code": CODE,
        "config": cfg.subset("text_backbone", "max_len", "image_size", "min_words"),
    }

    def build(out: Path):
        movies, _, y = data.load(curated)
        dev_plots = movies.overview[movies.fold >= 0].tolist()
        quant = export_text(cfg, out, tuned / "encoder.safetensors", dev_plots)
        poster = poster_cam.export_poster(cfg, out)
        head = fusion.load(trained)
        export_head(head, out, quant["dim"], poster["dim"])
        cam = poster_cam.export_cam(head, out, quant["dim"], poster["dim"])
        spec = manifest(cfg, metrics["labels"], metrics["thresholds"], quant["dim"], poster, cam, out)
        (out / "manifest.json").write_text(json.dumps(spec, indent=1))
        check = shipped_check(out, movies, y, metrics)
        (out / "shipped.json").write_text(json.dumps({**check, "text_quantization": quant}, indent=1))

    return cache.cached(cfg, "export", parts, build)
