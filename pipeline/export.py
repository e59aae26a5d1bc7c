"""Stage `export`: the three ONNX models the browser and `predict` run, plus manifest.json.

text_encoder.onnx  the fine-tuned MiniLM + mean pooling, int8 (dynamic, per-channel); tokenizer.json beside it
poster_encoder.onnx EfficientNet-Lite0 with resize and normalisation inside; weights stored fp16
fusion_head.onnx   the trained MLP head, sigmoid included
"""

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from tqdm import tqdm

from . import cache, data, embed, evaluate, finetune, fusion, image, predict, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, predict.__file__)

OPSET = 17
FILES = ("text_encoder.onnx", "poster_encoder.onnx", "fusion_head.onnx", "tokenizer.json")


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


# Measured on the test plots: the FFN output projections (their inputs, after GELU, are the widest-
# ranging activations) lose most under int8. Kept in float (fp16-stored) they lift the worst-case
# cosine to fp32 from 0.984 to 0.994, and the F1 gap to fp32 under half a point, for about 3.5 MB.
KEEP_FLOAT = re.compile(r"/encoder/layer\.\d+/output/dense/MatMul$")


def export_text(cfg, out: Path, weights: Path):
    model = text.TextEncoder(cfg.text_backbone, weights)
    ids = torch.tensor([[101] + [2000] * 30 + [102]])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "text_fp32.onnx"
        axes = {
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"},
        }
        to_onnx(model, (ids, torch.ones_like(ids)), fp32, ["input_ids", "attention_mask"], "embedding", axes)
        keep = [n.name for n in onnx.load(str(fp32)).graph.node if KEEP_FLOAT.search(n.name)]
        quantize_dynamic(
            str(fp32),
            str(out / "text_encoder.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
        )
    store_weights_fp16(out / "text_encoder.onnx")
    (out / "tokenizer.json").write_text(text.tokenizer_json(cfg.text_backbone))
    return model.dim


def export_poster(cfg, out: Path):
    model = image.PosterEncoder(cfg.image_size)
    axes = {"image": {2: "height", 3: "width"}}
    to_onnx(model, (torch.rand(1, 3, 278, 185) * 255,), out / "poster_encoder.onnx", ["image"], "embedding", axes)
    store_weights_fp16(out / "poster_encoder.onnx")


def export_head(head: fusion.FusionHead, out: Path, text_dim: int, image_dim: int):
    args = (torch.zeros(1, text_dim), torch.zeros(1, image_dim), torch.ones(1, 1))
    axes = {name: {0: "batch"} for name in ("text", "image", "has_poster", "probabilities")}
    to_onnx(head, args, out / "fusion_head.onnx", ["text", "image", "has_poster"], "probabilities", axes)


def manifest(cfg, labels, thresholds, text_dim, out: Path) -> dict:
    files = {f: {"bytes": (out / f).stat().st_size, "sha256": cache.file_digest(out / f)} for f in FILES}
    return {
        "labels": labels,
        "thresholds": [thresholds[g] for g in labels],
        "decision": "a genre is predicted when its probability is at or over its threshold; "
        "a plot with none gets its most likely genre",
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
            "truncation": "first max_chars characters; no padding; over max_len tokens keep the first max_len-1 and the final [SEP]",
            "quantization": "int8 dynamic, per-channel weights (FFN output projections kept float); run one plot per call, unpadded",
        },
        "poster_encoder": {
            "file": "poster_encoder.onnx",
            "inputs": {"image": [1, 3, "height", "width"]},
            "input_type": "float32",
            "output": "embedding",
            "dim": 1280,
            "preprocessing": {
                "pixels": "decoded RGB, 0..255, channels first",
                "max_side": image.MAX_SIDE,
                "max_bytes": image.MAX_BYTES,
                "resize_in_model": [cfg.image_size, cfg.image_size],
                "normalisation": {"mean": image.MEAN, "std": image.STD},
            },
            "weights": "fp16 storage, fp32 compute",
        },
        "fusion_head": {
            "file": "fusion_head.onnx",
            "inputs": {"text": ["batch", text_dim], "image": ["batch", 1280], "has_poster": ["batch", 1]},
            "input_type": "float32",
            "output": "probabilities",
            "no_poster": "image all zeros and has_poster 0",
        },
        "files": files,
    }


def shipped_check(out: Path, movies, y, embedded, metrics) -> dict:
    """The exported (int8/fp16) models through the same code as `predict`, on the test split, with
    the thresholds tuned for fp32: their F1 beside the fp32 models', and how far their embeddings are."""
    predictor = predict.GenrePredictor(out)
    _, text_fp32, image_fp32 = embedded.load()
    test = np.flatnonzero(movies.split.to_numpy() == "test")
    probs, text_cos, image_cos = [], [], []
    for i in tqdm(test, desc="checking shipped models on test"):
        t = predictor.embed_plot(movies.overview[i])
        pixels = image.load_image(movies.poster[i]) if movies.poster[i] else None
        p = None if pixels is None else predictor.embed_poster(pixels)
        probs.append(predictor.combine(t, p))
        text_cos.append(cosine(t, text_fp32[i]))
        if p is not None:
            image_cos.append(cosine(p, image_fp32[i]))
    thresholds = np.array([metrics["thresholds"][g] for g in metrics["labels"]])
    shipped = evaluate.scores(y[test], evaluate.decide(np.array(probs), thresholds), metrics["labels"])
    fp32 = metrics["best"]
    return {
        "micro_f1": shipped["micro_f1"],
        "macro_f1": shipped["macro_f1"],
        "fp32_micro_f1": fp32["micro_f1"],
        "fp32_macro_f1": fp32["macro_f1"],
        "delta_micro_points": 100 * (shipped["micro_f1"] - fp32["micro_f1"]),
        "delta_macro_points": 100 * (shipped["macro_f1"] - fp32["macro_f1"]),
        "text_cosine_min": min(text_cos),
        "text_cosine_mean": float(np.mean(text_cos)),
        "poster_cosine_min": min(image_cos, default=1.0),
        "poster_cosine_mean": float(np.mean(image_cos or [1.0])),
        "test_movies": len(test),
    }


def cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def run(cfg) -> Path:
    curated, tuned, embedded = data.run(cfg), finetune.run(cfg), embed.run(cfg)
    trained, evaluated = fusion.run(cfg), evaluate.run(cfg)
    metrics = evaluate.load(evaluated)
    parts = {
        "finetune": tuned.key,
        "train": trained.key,
        "evaluate": evaluated.key,
        "code": CODE,
        "config": cfg.subset("text_backbone", "max_len", "image_size"),
    }

    def build(out: Path):
        text_dim = export_text(cfg, out, tuned / "encoder.safetensors")
        export_poster(cfg, out)
        export_head(fusion.load(trained), out, text_dim, 1280)
        spec = manifest(cfg, metrics["labels"], metrics["thresholds"], text_dim, out)
        (out / "manifest.json").write_text(json.dumps(spec, indent=1))
        movies, _, y = data.load(curated)
        check = shipped_check(out, movies, y, embedded, metrics)
        (out / "shipped.json").write_text(json.dumps(check, indent=1))

    built = cache.cached(cfg, "export", parts, build)
    models = cfg.path("models")
    models.mkdir(parents=True, exist_ok=True)
    for name in (*FILES, "manifest.json"):
        shutil.copy(built / name, models / name)
    spec = json.loads((models / "manifest.json").read_text())
    total = sum(spec["files"][spec[p]["file"]]["bytes"] for p in ("text_encoder", "poster_encoder", "fusion_head"))
    site = cfg.path("site_data")
    site.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((built / "shipped.json").read_text())
    summary = {**spec, "download_mb": round(total / 2**20, 1), "shipped": shipped}
    (site / "models.json").write_text(json.dumps(summary, indent=1))
    print(
        f"[export] models in {models}; shipped micro-F1 {shipped['micro_f1']:.4f} (fp32 {shipped['fp32_micro_f1']:.4f})"
    )
    return models
