"""Stage `export`: the three ONNX models the browser and `predict` run, plus manifest.json.

text_encoder.onnx  int8 (dynamic, per-channel) MiniLM + mean pooling; tokenizer.json beside it
poster_encoder.onnx EfficientNet-Lite0 with resize and normalisation inside; weights stored fp16
fusion_head.onnx   the trained MLP head, sigmoid included
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from . import cache, evaluate, fusion, image, text

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


def store_weights_fp16(path: Path, min_size: int = 1024):
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


def export_text(cfg, out: Path):
    model = text.TextEncoder(cfg.text_backbone)
    ids = torch.tensor([[101] + [2000] * 30 + [102]])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "text_fp32.onnx"
        axes = {
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"},
        }
        to_onnx(model, (ids, torch.ones_like(ids)), fp32, ["input_ids", "attention_mask"], "embedding", axes)
        quantize_dynamic(str(fp32), str(out / "text_encoder.onnx"), per_channel=True, weight_type=QuantType.QInt8)
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
            "truncation": "no padding; over max_len tokens keep the first max_len-1 and the final [SEP]",
            "quantization": "int8 dynamic, per-channel weights; run one plot per call, unpadded",
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


def run(cfg) -> Path:
    trained, evaluated = fusion.run(cfg), evaluate.run(cfg)
    metrics = evaluate.load(evaluated)
    parts = {
        "train": trained.key,
        "evaluate": evaluated.key,
        "code": cache.source_digest(__file__),
        "config": cfg.subset("text_backbone", "max_len", "image_size"),
    }

    def build(out: Path):
        text_dim = export_text(cfg, out)
        export_poster(cfg, out)
        export_head(fusion.load(trained), out, text_dim, 1280)
        spec = manifest(cfg, metrics["labels"], metrics["thresholds"], text_dim, out)
        (out / "manifest.json").write_text(json.dumps(spec, indent=1))

    built = cache.cached(cfg, "export", parts, build)
    models = cfg.path("models")
    models.mkdir(parents=True, exist_ok=True)
    for name in (*FILES, "manifest.json"):
        shutil.copy(built / name, models / name)
    spec = json.loads((models / "manifest.json").read_text())
    total = sum(spec["files"][spec[p]["file"]]["bytes"] for p in ("text_encoder", "poster_encoder", "fusion_head"))
    site = cfg.path("site_data")
    site.mkdir(parents=True, exist_ok=True)
    (site / "models.json").write_text(json.dumps({**spec, "download_mb": round(total / 2**20, 1)}, indent=1))
    print(f"[export] models in {models}")
    return models
