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
from onnxruntime.quantization import QuantType, quantize_dynamic
from tqdm import tqdm

from . import cache, data, distil, embed, evaluate, finetune, fusion, image, poster_cam, predict, quantize, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, predict.__file__, poster_cam.__file__, image.__file__, quantize.__file__)


# one definition of the ONNX settings and of fp16 weight storage, shared with the student's export
to_onnx, store_weights_fp16 = quantize.export_onnx, quantize.store_weights_fp16


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


def teacher_entry(cfg, text_dim: int) -> dict:
    return {
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
        "quantization": "int8 dynamic, per-channel weights; run one plot per call, unpadded",
        "batchable": False,  # dynamic int8: one activation scale per input tensor
    }


def manifest(cfg, labels, thresholds, encoders: dict, poster: dict, cam: dict, out: Path) -> dict:
    """encoders: {"text_encoder": the one predict and the demo run, optionally "teacher_text_encoder"}."""
    text_dim, image_dim = encoders["text_encoder"]["dim"], poster["dim"]
    parts = [*encoders.values(), poster, cam, {"file": "fusion_head.onnx"}]
    names = [p["file"] for p in parts] + [e["tokenizer"] for e in encoders.values()]
    files = {f: {"bytes": (out / f).stat().st_size, "sha256": cache.file_digest(out / f)} for f in names}
    return {
        "labels": labels,
        "thresholds": {mode: [thresholds[mode][g] for g in labels] for mode in evaluate.SHIPPED},
        "decision": "a genre is predicted when its probability is at or over its threshold for the input mode "
        "('plot' or 'plot+poster'); a plot with none gets its most likely genre",
        "min_words": cfg.min_words,
        **encoders,
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


def shipped_check(out: Path, movies, y, metrics, spec: dict) -> dict:
    """The exported models through the same code as `predict`, on the test split, in both input
    modes with their own thresholds: F1 beside the fp32 models' (only reported, never chosen on).
    `spec` is the manifest to run (the shipped one, or a variant naming another text encoder)."""
    with tempfile.TemporaryDirectory() as tmp:  # a models folder holding `spec`, the files linked in
        for f in spec["files"]:
            (Path(tmp) / f).symlink_to((out / f).resolve())
        (Path(tmp) / "manifest.json").write_text(json.dumps(spec))
        predictor = predict.GenrePredictor(Path(tmp))
        test = np.flatnonzero(movies.fold.to_numpy() < 0)
        probs = {"plot": [], "plot+poster": []}
        for i in tqdm(test, desc="checking shipped models on test"):
            t = predictor.embed_plot(movies.overview[i])
            pixels = image.load_image(movies.poster[i]) if movies.poster[i] else None
            probs["plot"].append(predictor.combine(t, None))
            probs["plot+poster"].append(
                predictor.combine(t, None if pixels is None else predictor.embed_poster(pixels))
            )
    check = {"test_movies": len(test), "text_encoder": spec["text_encoder"]["file"]}
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


def native_ms(out: Path, entries: dict, plots: list[str]) -> dict:
    """Warm median ms per plot of each text encoder in native onnxruntime (one thread), side by side
    in one run on the same plots, each through its own tokenizer."""
    from tokenizers import Tokenizer

    timings = {}
    for name, entry in entries.items():
        tok = Tokenizer.from_file(str(out / entry["tokenizer"]))
        tok.no_padding()
        tok.no_truncation()
        feeds = quantize.text_feeds([text.encode(tok, p, entry["max_len"]) for p in plots])
        timings[name] = quantize.native_ms(out / entry["file"], feeds)
    return timings


POSTER_CALIBRATION, POSTER_CHECK = 64, 60  # dev posters: fit the int8 scales / judge them


def export_poster(cfg, out: Path, movies) -> dict:
    """The poster encoder: static int8 when, on held-back dev posters, every embedding keeps a cosine
    of at least MIN_COSINE to fp32 (scales calibrated on other dev posters); else fp16-stored float.
    The test posters' cosine is measured too, for the report only."""
    rng = np.random.default_rng(cfg.seed)
    fold, has = movies.fold.to_numpy(), (movies.poster != "").to_numpy()
    dev = rng.permutation(np.flatnonzero((fold >= 0) & has))
    n = min(POSTER_CALIBRATION, len(dev) // 2)  # small data: half calibrates, half judges
    calibration, check = dev[:n], dev[n : n + POSTER_CHECK]
    test = np.flatnonzero((fold < 0) & has)

    def pixels(rows):
        return (image.load_image(movies.poster[r]) for r in rows)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = poster_cam.export_poster(cfg, Path(tmp), fp16=False)
        q = quantize.quantize_poster(Path(tmp) / fp32["file"], out / fp32["file"], pixels(calibration))
        dev_cos = quantize.poster_cosine(Path(tmp) / fp32["file"], out / fp32["file"], pixels(check))
        test_cos = quantize.poster_cosine(Path(tmp) / fp32["file"], out / fp32["file"], pixels(test))
    choice = {"dev_posters": len(check), "dev_cosine": dev_cos, "test_cosine": test_cos, "int8_bytes": q["bytes"]}
    if dev_cos["min"] >= MIN_COSINE:
        entry = {**fp32, "weights": q["quantization"], "batchable": q["batchable"], "quantization": "int8 static"}
    else:  # int8 does not hold: ship the float model
        entry = {**poster_cam.export_poster(cfg, out), "quantization": "none"}
    return {**entry, "choice": choice}


def student_check(cfg, distilled, tuned, trained, embedded, movies, y, labels, thresholds) -> dict:
    """Teacher and student on the check fold's rows (never the test split), through the fold head
    that never saw those rows' labels: fed the teacher's out-of-fold logits, or the logits of the
    check student, distilled without those plots."""
    fold = movies.fold.to_numpy()
    held = np.load(distilled / "check_rows.npy")
    k = int(fold[held[0]])
    z_teacher = np.load(tuned / "oof_logits.npy")
    image_emb = embedded.posters_array()
    has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
    head, _, _ = fusion.fold_head(cfg, z_teacher, image_emb, has_poster, y, fold, k)
    oof = fusion.load_oof(trained)
    out = {"rows": int(len(held)), "fold": k}
    for who, z in (("teacher", z_teacher[held]), ("student", np.load(distilled / "check_logits.npy"))):
        out[who] = {}
        for mode in ("plot", "plot+poster"):
            shown = has_poster[held] if mode == "plot+poster" else np.zeros_like(has_poster[held])
            probs = fusion.stack_probs(head, z, image_emb[held], shown)
            if who == "teacher":  # the same head as cross-fitting's: its saved predictions, reproduced
                out["teacher_reproduces_oof"] = float(np.abs(probs - oof[mode][held]).max())
            t = np.array([thresholds[mode][g] for g in labels])
            micro, macro = evaluate.f1_pair(y[held], evaluate.decide(probs, t))
            out[who][mode] = {"micro_f1": micro, "macro_f1": macro}
    # a check student distilled from the final teacher (which saw this fold's labels) is favoured by
    # the comparison: only a check whose teacher never saw the fold may let the student ship
    out["honest"] = bool(json.loads((distilled / "history.json").read_text()).get("check_honest", False))
    out["within_bound"] = distil.student_passes(out["teacher"], out["student"])
    out["passes"] = out["within_bound"] and out["honest"]
    return out


def cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def run(cfg) -> cache.Output:
    curated, tuned, embedded = data.run(cfg), finetune.run(cfg), embed.run(cfg)
    trained, evaluated, distilled = fusion.run(cfg), evaluate.run(cfg), distil.run(cfg)
    metrics = evaluate.load(evaluated)
    parts = {
        "finetune": tuned.key,
        "train": trained.key,
        "evaluate": evaluated.key,
        "distil": distilled.key,
        "posters": embedded.posters.key,
        "code": CODE,
        "config": cfg.subset("text_backbone", "max_len", "image_size", "min_words", "student_quantization", "seed"),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        dev_plots = movies.overview[movies.fold >= 0].tolist()
        quant = export_text(cfg, out, tuned / "encoder.safetensors", dev_plots)
        teacher = teacher_entry(cfg, quant["dim"])
        student = distil.export_student(cfg, distilled, out)
        choice = student_check(cfg, distilled, tuned, trained, embedded, movies, y, labels, metrics["thresholds"])
        # both are published; "text_encoder" is the one predict, serve and the demo run by default
        encoders = (
            {"text_encoder": student, "teacher_text_encoder": teacher}
            if choice["passes"]
            else {"text_encoder": teacher, "student_text_encoder": student}
        )
        poster = export_poster(cfg, out, movies)
        head = fusion.load(trained)
        export_head(head, out, quant["dim"], poster["dim"])
        cam = poster_cam.export_cam(head, out, quant["dim"], poster["dim"])
        spec = manifest(cfg, labels, metrics["thresholds"], encoders, poster, cam, out)
        (out / "manifest.json").write_text(json.dumps(spec, indent=1))
        checks = {"shipped": shipped_check(out, movies, y, metrics, spec)}
        if choice["passes"]:  # the teacher on the same test movies, for the side-by-side table
            variant = {**spec, "text_encoder": teacher}
            checks["teacher"] = shipped_check(out, movies, y, metrics, variant)
        else:  # the student on the same test movies, to say what it would have scored
            checks["student"] = shipped_check(out, movies, y, metrics, {**spec, "text_encoder": student})
        student_native = json.loads((out / "student_check.json").read_text())
        timing_plots = dev_plots[-32:]  # dev plots the quantization choice did not sample
        native = native_ms(out, {"teacher": teacher, "student": student}, timing_plots)
        report = {
            **checks,
            "native_ms": {**native, "plots": len(timing_plots), "threads": 1},
            "text_quantization": quant,
            "student_choice": choice,
            "student_export": student_native,
        }
        (out / "shipped.json").write_text(json.dumps(report, indent=1))

    return cache.cached(cfg, "export", parts, build)
