"""Stage `publish`: the one place that writes what the site shows, from the cached stage outputs.

_data/*.json (every number on the site), assets/models/ (the files the demo and `predict` run)
and assets/figures/ (every figure). Stages compute into cache/; only this stage writes here, so
the site always shows one consistent run.
"""

import json
import shutil
from pathlib import Path

from pipeline.export import text_export
from pipeline.stages import data, errors, evaluate, explain, export, figures, lengths, topics

PATH_KEYS = {
    "data",
    "extra",
    "storylines",
    "long_plots",
    "work",
    "site_data",
    "models",
    "figures",
}  # where things live: not shown on the site
ROOT = Path(__file__).resolve().parents[2]  # the repository root (pipeline/stages/publish.py)
RUNTIME = ("ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")  # onnxruntime-web's files the demo fetches


def runtime_bytes() -> int | None:
    """Bytes of the browser runtime a first visit downloads beside the models (assets/vendor/runtime.json,
    written by `npm run vendor`; else the same files in node_modules); None when neither is there."""
    listed = ROOT / "assets/vendor/runtime.json"
    if listed.is_file():
        return sum(f["bytes"] for f in json.loads(listed.read_text()).values())
    dist = ROOT / "node_modules/onnxruntime-web/dist"
    if all((dist / f).is_file() for f in RUNTIME):
        return sum((dist / f).stat().st_size for f in RUNTIME)
    return None


def figure_sizes(folder: Path) -> dict[str, list[int]]:
    """[width, height] in px of every image under the figures folder, for the <img> tags' attributes."""
    import re

    from PIL import Image

    sizes = {}
    for f in sorted(folder.rglob("*")):
        name = str(f.relative_to(folder))
        if f.suffix in (".png", ".jpg", ".jpeg", ".webp"):
            with Image.open(f) as im:
                sizes[name] = list(im.size)
        elif f.suffix == ".svg":
            head = f.read_text()[:2000]
            w, h = (re.search(rf'<svg[^>]*\s{a}="([\d.]+)', head) for a in ("width", "height"))
            if w and h:
                sizes[name] = [round(float(w.group(1))), round(float(h.group(1)))]
    return sizes


def page_facts(cfg, spec: dict, metrics: dict) -> dict:
    """Counts the prose states, as numbers in _data/ (so the provenance test sees them change):
    list lengths and facts of the models that the page would otherwise type by hand."""
    from pipeline.learn import text

    facts = {"labels": len(metrics.get("labels", []))}
    try:  # layers of the text backbone (6 for MiniLM-L6), from its own config
        from transformers import AutoConfig

        facts["encoder_layers"] = AutoConfig.from_pretrained(text.backbone_path(cfg.text_backbone)).num_hidden_layers
    except Exception:  # offline without the backbone: the page says nothing about the layer count
        pass
    features = spec.get("poster_encoder", {}).get("outputs", {}).get("features")
    if features:
        facts["poster_grid"] = features[-2:]  # the last convolution's spatial grid (Grad-CAM's resolution)
    pre = spec.get("poster_encoder", {}).get("preprocessing", {})
    if pre.get("max_bytes"):
        facts["poster_max_mb"] = round(pre["max_bytes"] / 2**20, 1)
    from pipeline.__main__ import STAGES

    facts["stages"] = [s for s in STAGES if s != "all"]
    return facts


def target_checks(cfg, metrics: dict, shipped: dict, margin: dict, long: dict) -> list[dict]:
    """Each target of config.toml checked on the test split, decided here once for the whole site (the
    targets table and the missed-targets note read these rows), on the files that ship: their F1 (`fp32`
    beside it), and their micro margin over the best peer in points (errors.shipped_margin), met when at
    or over the goal, with its paired bootstrap interval. Long texts (stage `lengths`, plot only, shipped files):
    the test movies' IMDb storylines, and the held-out long plots over 250 words against the TF-IDF peer."""
    rows = []
    for mode in metrics["comparison"]:
        files = shipped[mode]
        for avg in ("micro", "macro"):
            goal = cfg.get(f"target_{'plot' if mode == 'plot' else 'poster'}_{avg}")
            if goal is not None:
                got, fp32 = files[f"{avg}_f1"], files[f"fp32_{avg}_f1"]
                rows.append({"mode": mode, "target": f"{avg} F1", "goal": goal, "measured": got, "fp32": fp32})
        goal = cfg.get("target_margin_points")
        if goal is not None:
            m = margin[mode]["micro"]
            target = "micro F1 over the best peer"
            rows.append({"mode": mode, "target": target, "goal": goal, "measured": m["diff"], "ci": [m["lo"], m["hi"]]})
    files = long.get("shipped_files", {})
    if "storylines" in files:
        for avg in ("micro", "macro"):
            goal = cfg.get(f"target_synopsis_{avg}")
            got = files["storylines"]["shipped"]
            if goal is not None:
                rows.append(
                    {"mode": "plot", "target": f"{avg} F1, IMDb storylines", "goal": goal, "measured": got[avg]}
                )
    over = files.get("long_plots", {}).get("over_250_words")
    if over and cfg.get("target_long_margin_points") is not None:
        diff = 100 * (over["shipped"]["micro"] - over["tfidf_lr"]["micro"])
        target = f"micro F1 over TF-IDF + LR, long plots over 250 words ({over['shipped']['texts']})"
        rows.append({"mode": "plot", "target": target, "goal": cfg.get("target_long_margin_points"), "measured": diff})
    for row in rows:
        row["met"] = bool(row["measured"] >= row["goal"])
    return rows


def write_json(folder: Path, name: str, obj) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")


def replace_folder(src: Path, dst: Path) -> None:
    """dst becomes a copy of src (files no stage made any more do not linger)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".done", "*.json"))


def run(cfg) -> None:
    curated, evaluated, exported = data.run(cfg), evaluate.run(cfg), export.run(cfg)
    topic_out, explained, drawn = topics.run(cfg), explain.run(cfg), figures.run(cfg)
    analysed, measured = errors.run(cfg), lengths.load(lengths.run(cfg))
    site, models = cfg.path("site_data"), cfg.path("models")

    spec = json.loads((exported / "manifest.json").read_text())
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.iterdir():  # a file this run does not ship goes
        if stale.name not in spec["files"] and stale.name != "manifest.json":
            stale.unlink()
    for name in spec["files"]:
        shutil.copy(exported / name, models / name)
    shutil.copy(exported / "manifest.json", models / "manifest.json")

    def mb(parts: list[str]) -> float:
        return round(sum(spec["files"][f]["bytes"] for f in parts) / 2**20, 1)

    head = text_export.files(spec["fusion_head"])  # its graph and, when packed, its weights file
    bag = [spec["bag_of_words"]["file"], spec["bag_of_words"]["weights_file"]]  # read with every plot
    plot_only = [*text_export.files(spec["text_encoder"]), *head, *bag]
    poster = text_export.files(spec["poster_encoder"])  # a poster adds the poster encoder and its packed weights
    summary = {
        **spec,
        "plot_only_mb": mb(plot_only),  # what a plot-only visitor downloads (runtime aside)
        # the text encoder itself: its graph and its packed weights file (pipeline/runtime/packed_weights.py)
        "text_encoder_mb": mb(
            [f for f in text_export.files(spec["text_encoder"]) if f != spec["text_encoder"]["tokenizer"]]
        ),
        "download_mb": mb(plot_only + poster),
        "head_mb": mb(head),
        "bag_mb": mb(bag),
        "shipped": json.loads((exported / "shipped.json").read_text()),
    }
    runtime = runtime_bytes()
    if runtime is not None:  # one honest first-visit size: models and the wasm runtime
        summary["runtime_bytes"] = runtime
        summary["first_visit_plot_mb"] = round((sum(spec["files"][f]["bytes"] for f in plot_only) + runtime) / 2**20, 1)
        summary["first_visit_poster_mb"] = round(
            (sum(spec["files"][f]["bytes"] for f in plot_only + poster) + runtime) / 2**20, 1
        )
    metrics = evaluate.load(evaluated)
    summary["page"] = page_facts(cfg, spec, metrics)
    write_json(site, "models.json", summary)
    analysis = errors.load(analysed)
    write_json(
        site,
        "targets.json",
        target_checks(cfg, metrics, summary["shipped"]["shipped"], analysis["shipped_margin"], measured),
    )
    # what the poster adds, on the shipped files (the story page prints it beside the peers' comparison)
    write_json(site, "metrics.json", {**metrics, "poster_paired": analysis["poster"]["paired"]})
    write_json(site, "errors.json", analysis)
    write_json(site, "lengths.json", measured)
    curation = json.loads((curated / "curation.json").read_text())
    _, _, y = data.load(curated)  # the main set's genre counts, beside the extra rows' (curation["extra"])
    write_json(site, "curation.json", {**curation, "main_genre_counts": y.sum(0).astype(int).tolist()})
    found = json.loads((topic_out / "topics.json").read_text())
    write_json(site, "topics.json", {**found, "topics": found["topics"][: cfg.topics_shown]})
    write_json(site, "gradcam.json", json.loads((explained / "gradcam.json").read_text()))
    write_json(site, "config.json", {k: v for k, v in cfg.items() if k not in PATH_KEYS})

    replace_folder(drawn.path, cfg.path("figures"))
    shutil.copytree(explained.path, cfg.path("figures") / "gradcam", ignore=shutil.ignore_patterns(".done", "*.json"))
    shutil.copytree(analysed.path, cfg.path("figures") / "errors", ignore=shutil.ignore_patterns(".done", "*.json"))
    facts = json.loads((drawn / "facts.json").read_text())
    write_json(site, "figures.json", {**facts, "sizes": figure_sizes(cfg.path("figures"))})
    print(f"[publish] {site}, {models} and {cfg.path('figures')} written")
