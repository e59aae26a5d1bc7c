"""Stage `publish`: the one place that writes what the site shows, from the cached stage outputs.

_data/*.json (every number on the site), assets/models/ (the files the demo and `predict` run)
and assets/figures/ (every figure). Stages compute into cache/; only this stage writes here, so
the site always shows one consistent run.
"""

import json
import shutil
from pathlib import Path

from . import data, distil, evaluate, explain, export, figures, topics

PATH_KEYS = {"data", "work", "site_data", "models", "figures"}  # where things live: not shown on the site


def write_json(folder: Path, name: str, obj) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj, indent=1) + "\n")


def replace_folder(src: Path, dst: Path) -> None:
    """dst becomes a copy of src (files no stage made any more do not linger)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".done", "*.json"))


def run(cfg) -> None:
    curated, evaluated, exported = data.run(cfg), evaluate.run(cfg), export.run(cfg)
    topic_out, explained, drawn = topics.run(cfg), explain.run(cfg), figures.run(cfg)
    site, models = cfg.path("site_data"), cfg.path("models")

    spec = json.loads((exported / "manifest.json").read_text())
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.iterdir():  # a model this run does not ship (a student that failed its check) goes
        if stale.name not in spec["files"] and stale.name != "manifest.json":
            stale.unlink()
    for name in spec["files"]:
        shutil.copy(exported / name, models / name)
    shutil.copy(exported / "manifest.json", models / "manifest.json")

    def mb(parts: list[str]) -> float:
        return round(sum(spec["files"][f]["bytes"] for f in parts) / 2**20, 1)

    plot_only = [spec["text_encoder"]["file"], spec["text_encoder"]["tokenizer"], spec["fusion_head"]["file"]]
    summary = {
        **spec,
        "plot_only_mb": mb(plot_only),  # what a plot-only visitor downloads (runtime aside)
        "download_mb": mb(plot_only + [spec[p]["file"] for p in ("poster_encoder", "poster_cam")]),
        "shipped": json.loads((exported / "shipped.json").read_text()),
    }
    # the plot path of each text encoder, shipped or not, for the side-by-side table
    built = {f: (exported / f).stat().st_size for f in (*distil.STUDENT_FILES, "text_encoder.onnx", "tokenizer.json")}
    head = spec["files"][spec["fusion_head"]["file"]]["bytes"]
    summary["teacher_bytes"] = {"plot_path": built["text_encoder.onnx"] + built["tokenizer.json"] + head}
    summary["student_bytes"] = {"plot_path": sum(built[f] for f in distil.STUDENT_FILES) + head}
    write_json(site, "models.json", summary)
    write_json(site, "metrics.json", evaluate.load(evaluated))
    write_json(site, "curation.json", json.loads((curated / "curation.json").read_text()))
    found = json.loads((topic_out / "topics.json").read_text())
    write_json(site, "topics.json", {**found, "topics": found["topics"][: cfg.topics_shown]})
    write_json(site, "gradcam.json", json.loads((explained / "gradcam.json").read_text()))
    write_json(site, "figures.json", json.loads((drawn / "facts.json").read_text()))
    write_json(site, "config.json", {k: v for k, v in cfg.items() if k not in PATH_KEYS})

    replace_folder(drawn.path, cfg.path("figures"))
    shutil.copytree(explained.path, cfg.path("figures") / "gradcam", ignore=shutil.ignore_patterns(".done", "*.json"))
    print(f"[publish] {site}, {models} and {cfg.path('figures')} written")
