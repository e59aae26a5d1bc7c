"""Stage `export`: the ONNX models the browser and `predict` run, plus manifest.json.

text_encoder.onnx   the fine-tuned text encoder, its weights in text_encoder.weights, 4- or 8-bit as the
                    format check chose (choose_format; pipeline/export/text_export.py); tokenizer.json beside it
poster_encoder.onnx EfficientNet-Lite0 with resize and normalisation inside (pipeline/export/poster_cam.py),
                    its 8-bit convolution weights in poster_encoder.weights (quantize.quantize_poster)
fusion_head.onnx    the heads CV chose for each input mode, in one graph (fusion.ShippedHead): the text
                    encoder's genre head and the sigmoid included; its second output, the poster mode's
                    d logits / d poster embedding, gives the browser Grad-CAM of the visitor's poster;
                    its matrices in fusion_head.weights when the text format packs the head
bag_of_words.json   the bag of words (stage `bag`, pipeline/runtime/bag.py) and its weight in each mode's
 (and .weights)     probabilities, as `train` chose it for the shipped head
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import cache
from pipeline.choose import format_rule, thresholds
from pipeline.export import gptq, head_packing, packing, poster_cam, quantize, text_export, vocab, web_session
from pipeline.learn import fusion, poster_encoder, text
from pipeline.runtime import bag, image_io, packed_weights, predictor, rules
from pipeline.runtime import manifest as models_manifest
from pipeline.stages import bag as bag_stage
from pipeline.stages import data, embed, evaluate, finetune, format_check, select, train

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(
    *(
        m.__file__
        for m in (
            poster_cam,
            image_io,
            poster_encoder,
            quantize,
            packed_weights,
            packing,
            text_export,
            rules,
            bag,
            predictor,
            vocab,
        )
    ),
    thresholds.__file__,
    web_session.__file__,
    format_check.__file__,
    head_packing.__file__,
    format_rule.__file__,
    gptq.__file__,
    models_manifest.__file__,
    __file__,
)
MIN_COSINE = text_export.MIN_COSINE
# dev plots (shuffled): the first SKIPPED_PLOTS once calibrated the static int8 format (removed) and are still
# skipped, so the checks run on the plots of the earlier reports; the next CHECK_PLOTS choose the 8-bit format's
# float layers and are the checks' plots
SKIPPED_PLOTS, CHECK_PLOTS = 128, 200
# extra-row plots GPTQ fits the int4 MatMuls to. A prototype (act order, float embeddings, 200 held-out extra
# plots): mean cosine to fp32 0.9952 with 256, 0.9954 with 1,024; `bench.gptq --plots N` measures any count
GPTQ_PLOTS = 512
BAG_FILES = ("bag_of_words.json", "bag_of_words.weights")


def encoder_parts(cfg, tuned) -> tuple:
    """The fine-tuned encoder: (torch model, tokenizer, tokenizer.json text, backbone description)."""
    model = text.TextEncoder(cfg.text_backbone, tuned / "encoder.safetensors").eval()
    return model, text.load_tokenizer(cfg.text_backbone), text.tokenizer_json(cfg.text_backbone), cfg.text_backbone


def export_encoder(
    cfg, parts, dev_plots, out: Path, mode=quantize.TEXT_MODE, calibration_plots=None
) -> tuple[dict, dict]:
    """One text encoder to ONNX in quantize_text's `mode`: (manifest entry, checks). `calibration_plots`: the
    training plots GPTQ fits "int4" to; the checks run on `dev_plots` after the first SKIPPED_PLOTS."""
    if mode == "int4" and not calibration_plots:  # GPTQ fits the file to its calibration plots: never dev ones
        raise ValueError("int4 needs calibration plots of training rows (gptq_calibration)")
    model, tok, tok_json, about = parts
    file, tok_file = "text_encoder.onnx", "tokenizer.json"
    ids = [text.encode(tok, p, cfg.max_len) for p in dev_plots]
    checked = ids[min(SKIPPED_PLOTS, len(ids) // 2) :]  # small data: the second half
    calibration = [text.encode(tok, p, cfg.max_len) for p in calibration_plots or ()]
    check = text_export.export_text_encoder(model, out / file, calibration, checked, cfg.max_len, mode)
    (out / tok_file).write_text(tok_json)
    entry = text_export.manifest_entry(out / file, tok_file, about, model.dim, cfg.max_len, check)
    check["bytes"] = {f: (out / f).stat().st_size for f in text_export.files(entry)}
    return entry, check


def gptq_calibration(
    cfg, extra_plots: list[str], held_out: int = 0, count: int = GPTQ_PLOTS
) -> tuple[list[str], list[str]]:
    """(the `count` extra-row plots (training rows only) GPTQ fits the int4 MatMuls to, and `held_out`
    others to judge it on, the same ones whatever the count: bench.gptq), from one seeded permutation."""
    rows = np.random.default_rng(cfg.seed).permutation(len(extra_plots))
    if count + held_out > len(rows):
        raise ValueError(f"{count} + {held_out} plots asked of {len(rows)} extra rows")
    fit, other = rows[:count], rows[len(rows) - held_out :]
    return [extra_plots[i] for i in fit], [extra_plots[i] for i in other]


def int4_parts(cfg, parts, extra_plots: list[str]) -> tuple:
    """An encoder's parts (model, tokenizer, tokenizer.json text, description) as "int4" exports them: the
    vocabulary pruned to the word pieces of `extra_plots` (text_export.prune_vocabulary)."""
    model, _, tok_json, about = parts
    model, tok_json = text_export.prune_vocabulary(model, tok_json, extra_plots, cfg.max_len)
    about += f", vocabulary pruned to {model.backbone.embeddings.word_embeddings.num_embeddings} word pieces"
    return model, vocab.load_tokenizer_json(json.loads(tok_json)), tok_json, about


def choose_format(cfg, parts, dev_plots, out: Path, movies, y, inputs: dict, shipped: dict) -> tuple[dict, dict, str]:
    """The shipped encoder in the first of cfg.text_formats that format_check's CV check passes (the last
    one ships without a check): (manifest entry, checks, format). "int4" also prunes the vocabulary to the
    word pieces of the extra rows the encoder learned from, rounds its MatMuls by GPTQ on GPTQ_PLOTS of those
    rows' plots (never a dev plot: CV judges it on plots it was not fitted to) and stores the head's
    matrices in 8 bits."""
    formats = [f.strip() for f in cfg.text_formats.split(",")]
    fold = movies.fold.to_numpy()
    dev = np.flatnonzero(fold >= 0)
    plots = movies.overview.iloc[dev].tolist()
    tried = {}
    for fmt in formats:
        model, tok, tok_json, about = parts
        calibration = None
        if fmt == "int4" and fmt != formats[-1] and len(inputs["extra_plots"]) < GPTQ_PLOTS:
            # nothing to calibrate GPTQ on (a run without extra rows, `--extra ''`): int4 is not tried
            why = f"GPTQ calibrates on {GPTQ_PLOTS} extra-row plots; {len(inputs['extra_plots'])} here"
            tried[fmt] = {"cv": None, "ships": False, "skipped": why}
            continue
        if fmt == "int4":
            calibration, _ = gptq_calibration(cfg, inputs["extra_plots"])
            model, tok, tok_json, about = int4_parts(cfg, parts, inputs["extra_plots"])
        entry, check = export_encoder(cfg, (model, tok, tok_json, about), dev_plots, out, fmt, calibration)
        if fmt == formats[-1]:
            tried[fmt] = {"cv": None, "ships": True}
            break
        e_file = inputs["e32"].copy()
        e_file[dev] = format_check.embed_file(
            out / entry["file"], out / entry["tokenizer"], plots, cfg.max_len, cfg.threads
        )
        args = (inputs["e32"], e_file, inputs["image"], inputs["has_poster"], y, fold, inputs["text_head"], shipped)
        cv = format_check.cv_of_format(cfg, *args, pack_head=fmt in head_packing.PACKED_HEAD)
        tried[fmt] = {"cv": cv, "ships": format_rule.passes(cv, cfg.format_bound)}
        if tried[fmt]["ships"]:
            break
    check["format_choice"] = {"formats": formats, "bound": cfg.format_bound, "tried": tried, "ships": fmt}
    return entry, check, fmt


def head_for(model_id: str, trained, text_head, image_dim: int) -> fusion.FusionHead:
    """The head behind a model id of evaluate.OURS."""
    head_name, _ = evaluate.OURS["plot"].get(model_id) or evaluate.OURS["plot+poster"][model_id]
    if head_name == "text_finetuned":
        return fusion.text_only(text_head, image_dim)
    return train.load(trained, head_name)


def export_head(head: fusion.ShippedHead, out: Path, text_dim: int, image_dim: int):
    args = (torch.zeros(1, text_dim), torch.zeros(1, image_dim), torch.ones(1, 1))
    axes = {name: {0: "batch"} for name in ("text", "image", "has_poster", "probabilities")}
    axes["image_jacobian"] = {0: "batch"}
    outputs = ["probabilities", "image_jacobian"]
    quantize.export_onnx(head, args, out / "fusion_head.onnx", ["text", "image", "has_poster"], outputs, axes)


def bag_weight(reading: dict | None, model_id: str, mode: str) -> float:
    """The bag of words' weight in a shipped model's probabilities, as `train` chose it ("head/mode", as
    evaluate.OURS names the model); 0 where train blends nothing: a run without long texts, the encoder's
    own head. A head train should have blended and did not is a KeyError, not a 0."""
    head = evaluate.OURS[mode][model_id]
    if reading is None or head[0] == "text_finetuned":
        return 0.0
    return reading["blend"]["/".join(head)]["weight"]


def manifest(
    cfg, labels, thresholds, encoder: dict, poster: dict, heads: dict, window: dict, bag_weight: dict, out: Path
) -> dict:
    text_dim, image_dim = encoder["dim"], poster["dim"]
    head_files = [f.name for f in packed_weights.shipped_files(out / "fusion_head.onnx")]
    names = [*text_export.files(encoder), *text_export.files(poster), *head_files, *BAG_FILES]
    files = {f: {"bytes": (out / f).stat().st_size, "sha256": cache.file_digest(out / f)} for f in names}
    return {
        "labels": labels,
        "thresholds": {mode: [thresholds[mode][g] for g in labels] for mode in fusion.MODES},
        "rules": {**rules.RULES, "windows": window, "poster": poster["preprocessing"], "bag": bag.RULE},
        "min_words": cfg.min_words,
        "text_encoder": encoder,
        "poster_encoder": poster,
        "gradcam": poster_cam.gradcam_entry("fusion_head.onnx", poster["file"], len(labels), image_dim),
        "fusion_head": {
            "file": "fusion_head.onnx",
            "weights_file": head_files[1] if len(head_files) > 1 else None,
            "quantization": head_packing.head_quantization() if len(head_files) > 1 else "float32 weights",
            "inputs": {"text": ["batch", text_dim], "image": ["batch", image_dim], "has_poster": ["batch", 1]},
            "input_type": "float32",
            "output": "probabilities",
            "outputs": {"probabilities": ["batch", len(labels)], "image_jacobian": ["batch", len(labels), image_dim]},
            "no_poster": "image all zeros and has_poster 0",
            "web_optimization": web_session.optimization_level(out / "fusion_head.onnx"),
            "heads": heads,
        },
        "bag_of_words": {
            "file": BAG_FILES[0],
            "weights_file": BAG_FILES[1],
            "terms": len(json.loads((out / BAG_FILES[0]).read_text())["terms"]),
            "blend": bag_weight,
        },
        "files": files,
    }


def shipped_check(out: Path, movies, y, metrics, spec: dict) -> dict:
    """The exported models through the same code as `predict`, on the test split, in both input
    modes with their own thresholds: F1 beside the fp32 models' (only reported, never chosen on).
    `spec` is the manifest to run."""
    with tempfile.TemporaryDirectory() as tmp:  # a models folder holding `spec`, the files linked in
        for f in spec["files"]:
            (Path(tmp) / f).symlink_to((out / f).resolve())
        (Path(tmp) / "manifest.json").write_text(json.dumps(spec))
        genre_predictor = predictor.GenrePredictor(Path(tmp))
        test = np.flatnonzero(movies.fold.to_numpy() < 0)
        probs = {"plot": [], "plot+poster": []}
        for i in tqdm(test, desc="checking shipped models on test"):
            t = genre_predictor.embed_plot(movies.overview[i])
            pixels = image_io.load_image(movies.poster[i]) if movies.poster[i] else None
            plot = movies.overview[i]
            probs["plot"].append(genre_predictor.combine(t, plot))
            probs["plot+poster"].append(
                genre_predictor.combine(t, plot, None if pixels is None else genre_predictor.embed_poster(pixels))
            )
    # the shipped files' probabilities of every test movie, for the error analysis and the margin target
    np.savez_compressed(out / "shipped_probs.npz", **{m: np.asarray(p, np.float32) for m, p in probs.items()})
    check = {"test_movies": len(test), "text_encoder": spec["text_encoder"]["file"]}
    for mode in fusion.MODES:
        fp32_id = metrics["shipped"][mode]
        cut = np.array([metrics["thresholds"][mode][g] for g in metrics["labels"]])
        micro, macro = thresholds.f1_pair(y[test], rules.decide(np.array(probs[mode]), cut))
        fp32 = next(m for m in metrics["models"] if m["id"] == fp32_id)
        check[mode] = {
            "micro_f1": micro,
            "macro_f1": macro,
            "fp32_model": fp32_id,
            "fp32_micro_f1": fp32["micro_f1"],
            "fp32_macro_f1": fp32["macro_f1"],
            "delta_micro_points": 100 * (micro - fp32["micro_f1"]),
            "delta_macro_points": 100 * (macro - fp32["macro_f1"]),
        }
    return check


# dev posters (shuffled): the first POSTER_SKIPPED once calibrated the static int8 format (removed) and are
# still skipped, so the check runs on the posters of the earlier reports; the next POSTER_CHECK judge the file
POSTER_SKIPPED, POSTER_CHECK = 64, 60


def export_poster(cfg, out: Path, movies) -> dict:
    """The poster encoder: 8-bit weights in poster_encoder.weights (quantize.quantize_poster) when, on
    POSTER_CHECK dev posters, every embedding keeps a cosine of at least MIN_COSINE to fp32; else float
    (fp16-stored weights, no weights file). The test posters' cosine is measured too, for the report only."""
    rng = np.random.default_rng(cfg.seed)
    fold, has = movies.fold.to_numpy(), (movies.poster != "").to_numpy()
    dev = rng.permutation(np.flatnonzero((fold >= 0) & has))
    n = min(POSTER_SKIPPED, len(dev) // 2)  # small data: the second half
    check = dev[n : n + POSTER_CHECK]
    test = np.flatnonzero((fold < 0) & has)

    def pixels(rows):
        return (image_io.load_image(movies.poster[r]) for r in rows)

    path = out / "poster_encoder.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = poster_cam.export_poster(cfg, Path(tmp), fp16=False)
        q = quantize.quantize_poster(Path(tmp) / fp32["file"], path)
        dev_cos = quantize.poster_cosine(Path(tmp) / fp32["file"], path, pixels(check))
        test_cos = quantize.poster_cosine(Path(tmp) / fp32["file"], path, pixels(test))
    choice = {"dev_posters": len(check), "dev_cosine": dev_cos, "test_cosine": test_cos, "int8_bytes": q["bytes"]}
    assert not q["integer_ops"], q  # float compute: the acceptance check holds on every CPU (quantize.integer_ops)
    if dev_cos["min"] >= MIN_COSINE:
        weights = packed_weights.blob_path(path).name  # the manifest names it, as the text encoder's (text_export)
        entry = {"file": fp32["file"], "weights_file": weights, **fp32}
        entry.update(weights=q["quantization"], batchable=q["batchable"], quantization=q["quantization"])
    else:  # 8 bits do not hold: ship the float model
        packed_weights.blob_path(path).unlink()
        entry = {
            "file": fp32["file"],
            "weights_file": None,
            **poster_cam.export_poster(cfg, out),
            "quantization": "none",
        }
    return {**entry, "web_optimization": web_session.optimization_level(out / entry["file"]), "choice": choice}


def run(cfg) -> cache.Output:
    curated, tuned, embedded, selected = data.run(cfg), finetune.run(cfg), embed.run(cfg), select.run(cfg)
    trained, evaluated, bagged = train.run(cfg), evaluate.run(cfg), bag_stage.run(cfg)
    metrics = evaluate.load(evaluated)
    parts = {
        "bag": bagged.key,
        "finetune": tuned.key,
        "train": trained.key,
        "evaluate": evaluated.key,
        "posters": embedded.posters.key,
        "code": CODE,
        "select": selected.key,
        "config": cfg.subset(
            "text_backbone",
            "max_len",
            "image_size",
            "min_words",
            "seed",
            "text_formats",
            "format_bound",
            "threshold_shrinks",
        ),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        fold = movies.fold.to_numpy()
        dev_plots = movies.overview.iloc[
            np.random.default_rng(cfg.seed).permutation(np.flatnonzero(fold >= 0))
        ].tolist()
        dev_plots = dev_plots[: SKIPPED_PLOTS + CHECK_PLOTS]
        text_head = finetune.load_head(tuned)
        chosen = {m: metrics["shipped"][m] for m in fusion.MODES}
        extra, _ = data.load_extra(curated)
        inputs = {  # what the format check reads: no test row
            "extra_plots": extra.overview.iloc[select.load(selected)].tolist(),
            "e32": np.load(tuned / "embeddings.npy"),
            "image": embedded.posters_array(),
            "has_poster": (movies.poster != "").to_numpy(np.float32)[:, None],
            "text_head": text_head,
        }
        entry, check, fmt = choose_format(cfg, encoder_parts(cfg, tuned), dev_plots, out, movies, y, inputs, chosen)
        poster = export_poster(cfg, out, movies)
        heads = {m: head_for(chosen[m], trained, text_head, poster["dim"]) for m in fusion.MODES}
        export_head(fusion.ShippedHead(heads["plot"], heads["plot+poster"]), out, entry["dim"], poster["dim"])
        if fmt in head_packing.PACKED_HEAD:
            packing.pack(out / "fusion_head.onnx", head_packing.head_plan(out / "fusion_head.onnx"))
        # how long texts are read: as `train` chose by CV for the heads
        reading = train.load_windows(trained)
        window = reading["rule"] if reading else rules.truncation(entry["max_len"])
        # the bag of words, and its weight in each mode's probabilities as `train` chose it for the shipped head
        for name in BAG_FILES:
            shutil.copyfile(bagged / name, out / name)
        weight = {m: bag_weight(reading, chosen[m], m) for m in fusion.MODES}
        spec = manifest(cfg, labels, metrics["thresholds"], entry, poster, chosen, window, weight, out)
        (out / "manifest.json").write_text(json.dumps(spec, indent=1, allow_nan=False))
        report = {"shipped": shipped_check(out, movies, y, metrics, spec), "text_encoder": check}
        (out / "shipped.json").write_text(json.dumps(report, indent=1))

    return cache.cached(cfg, "export", parts, build)
