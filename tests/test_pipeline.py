"""The whole pipeline on invented data: curation, split, training, evaluation, export, cache."""

import hashlib
import json
import time

import pytest

from tests.conftest import cli

STAGES = [
    "data",
    "finetune",
    "embed",
    "train",
    "evaluate",
    "export",
    "topics",
    "explain",
    "figures",
    "publish",
    "all",
    "predict",
    "fetch",
    "serve",
]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage):
    out = cli(stage, "--help").stdout
    assert "usage: python -m pipeline" in out
    if stage not in ("predict", "fetch", "serve"):
        assert "--fusion_epochs" in out and "--data" in out and "--lr_backbone" in out


def test_curation_counts_each_rule(tiny):
    steps = {s["step"]: s for s in tiny.json("curation.json")["steps"]}
    assert steps["load"]["rows_out"] == 69
    assert steps["drop non-English"]["rows_out"] == 68
    assert steps["drop short plots"]["rows_out"] == 67
    assert steps["drop duplicates"]["rows_out"] == 66
    poster = steps["decodable poster"]
    assert poster["rows_in"] - poster["rows_out"] == 1 and "plot-only" in poster["why"]
    assert steps["drop rare genres"]["rows_out"] == 65 and "Western" in steps["drop rare genres"]["why"]


def test_split_is_disjoint_and_covers_every_movie(tiny):
    import pandas as pd

    folder = tiny.stage("data")
    movies = pd.read_csv(folder / "movies.csv")
    assert movies.tmdb_id.is_unique
    assert set(movies.split) == {"dev", "test"}
    assert tiny.json("metrics.json")["split"] == movies.split.value_counts().to_dict()
    # every dev row is in exactly one of the K folds; test rows in none
    assert set(movies.fold[movies.split == "dev"]) == {0, 1, 2}
    assert (movies.fold[movies.split == "test"] == -1).all()


def test_metrics_cover_every_model_on_the_test_split(tiny):
    metrics = tiny.json("metrics.json")
    ids = [m["id"] for m in metrics["models"]]
    assert ids == [
        "tfidf_lr",
        "text_lr",
        "poster_lr",
        "concat_lr",
        "text_finetuned",
        "poster_mlp",
        "fusion_plot_only",
        "fusion",
    ]
    for m in metrics["models"]:
        for key in ("micro_f1", "macro_f1", "weighted_f1", "samples_f1", "micro_precision", "micro_recall"):
            assert 0.0 <= m[key] <= 1.0
        for avg in ("micro", "macro"):
            lo, hi = m[f"{avg}_f1_ci"]
            assert lo <= m[f"{avg}_f1"] <= hi  # the bootstrap interval holds the point estimate
            assert 0 <= m[f"cv_{avg}_f1"]["mean"] <= 1 and m[f"cv_{avg}_f1"]["sd"] >= 0
        assert set(m["per_genre"]) == set(metrics["labels"])
    assert metrics["labels"] == ["Action", "Comedy", "Horror", "Romance"]
    assert set(metrics["thresholds"]) == {"plot", "plot+poster"}
    for mode, c in metrics["comparison"].items():
        assert c["best_peer"] in {"plot": ("tfidf_lr", "text_lr")}.get(mode, ids[:4])
    # the invented genres are easy to tell apart: a model that learned nothing would not get here
    assert max(m["micro_f1"] for m in metrics["models"]) > 0.6


def test_manifest_describes_the_exported_files(tiny):
    spec = json.loads((tiny.models / "manifest.json").read_text())
    assert spec["labels"] == tiny.json("metrics.json")["labels"]
    assert set(spec["thresholds"]) == {"plot", "plot+poster"}
    assert all(len(t) == len(spec["labels"]) for t in spec["thresholds"].values())
    assert spec["thresholds"] == {
        m: [tiny.json("metrics.json")["thresholds"][m][g] for g in spec["labels"]] for m in spec["thresholds"]
    }
    for name, info in spec["files"].items():
        data = (tiny.models / name).read_bytes()
        assert info["bytes"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert spec["text_encoder"]["max_len"] == 64
    assert spec["poster_encoder"]["preprocessing"]["resize_in_model"] == [224, 224]


def test_rerun_is_cached_and_identical(tiny):
    before = (tiny.site_data / "metrics.json").read_text()
    start = time.perf_counter()
    second = tiny.run("all")
    elapsed = time.perf_counter() - start
    for stage in (
        "data",
        "finetune_fold0",
        "finetune_fold2",
        "finetune",
        "embed_plots",
        "embed_posters",
        "train",
        "evaluate",
        "export",
        "topics",
        "explain",
        "figures",
    ):
        assert f"[{stage}] cached" in second.stdout
    assert "running" not in second.stdout
    assert (tiny.site_data / "metrics.json").read_text() == before
    print(f"cached re-run took {elapsed:.1f} s")


def test_config_change_reruns_only_downstream(tiny):
    out = tiny.run("train", "--fusion_lr", "0.001").stdout
    for upstream in ("data", "finetune", "embed_plots", "embed_posters"):
        assert f"[{upstream}] cached" in out
    assert "[train] running" in out


def test_finetune_saves_curves_per_fold_and_epoch(tiny):
    folder = tiny.stage("finetune")
    history = json.loads((folder / "history.json").read_text())
    assert len(history["folds"]) == 3 and all(len(h) == 2 for h in history["folds"])
    for h in [row for fold in history["folds"] for row in fold]:
        assert h["train_loss"] > 0 and h["held_loss"] > 0 and 0 <= h["held_micro_ap"] <= 1
    assert 1 <= history["chosen_epochs"] <= 2 and len(history["final"]) == history["chosen_epochs"]
    assert (folder / "encoder.safetensors").stat().st_size > 1_000_000
    assert (folder / "head.safetensors").exists()


def test_out_of_fold_logits_come_from_the_model_that_held_the_row_out(tiny):
    import numpy as np
    import pandas as pd

    movies = pd.read_csv(tiny.stage("data") / "movies.csv")
    oof = np.load(tiny.stage("finetune") / "oof_logits.npy")
    dev = movies.fold.to_numpy() >= 0
    assert np.isfinite(oof[dev]).all() and np.isnan(oof[~dev]).all()  # test rows get none
    for k in range(3):
        folder = tiny.stage(f"finetune_fold{k}")
        rows = np.load(folder / "rows.npy")
        assert (rows == np.flatnonzero(movies.fold == k)).all()
        chosen = json.loads((tiny.stage("finetune") / "history.json").read_text())["chosen_epochs"]
        np.testing.assert_array_equal(oof[rows], np.load(folder / "logits.npy")[chosen - 1])


def test_topics_are_named_from_their_words_and_saved_with_safetensors(tiny):
    summary = tiny.json("topics.json")
    assert summary["movies"] == 65
    assert sum(t["size"] for t in summary["topics"]) + summary["outliers"] == 65
    for t in summary["topics"]:
        assert t["name"] == " · ".join(t["words"][:3])
        assert set(t["top_genres"]) <= {"Action", "Comedy", "Horror", "Romance"}
    folder = tiny.stage("topics")
    assert list((folder / "bertopic").glob("*.safetensors"))


def test_figures_are_written(tiny):
    for name in (
        "genre_distribution.png",
        "genres_per_movie.png",
        "cooccurrence.png",
        "training_curves.png",
        "per_genre_f1.png",
        "pr_curves.png",
        "threshold_curve.png",
        "ablation.png",
        "reliability.png",
        "topics_top.png",
        "topic_genres.png",
        "topic_map.png",
        "results_ci.png",
        "f1_by_length.png",
    ):
        assert (tiny.figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (tiny.figures / "crossfit.svg").read_text().startswith("<svg")
    svg = (tiny.figures / "architecture.svg").read_text()
    assert svg.startswith("<svg") and "Fusion head" in svg and "64 tokens" in svg
    html = (tiny.figures / "topics_map.html").read_text()
    assert '<script src="../vendor/plotly.min.js">' in html and "https://" not in html.split("<body>")[0]
    gallery = tiny.json("gradcam.json")
    assert len(gallery) == 2
    for g in gallery:
        for p in g["predicted"]:
            assert (tiny.figures / "gradcam" / p["file"]).exists()
    facts = tiny.json("figures.json")
    assert len(facts["samples"]) == 3 and all((tiny.figures / s["thumb"]).exists() for s in facts["samples"])
    assert "overview" not in json.dumps(facts)


def test_same_data_and_config_give_the_same_metrics(tiny, tmp_path):
    """A run from an empty cache reproduces the first run's numbers."""
    cli(*tiny.args("evaluate"), "--work", tmp_path / "cache", "--site_data", tmp_path / "_data")
    first = tiny.json("metrics.json")
    (folder,) = (tmp_path / "cache" / "evaluate").glob("*/metrics.json")  # only `publish` writes _data/
    second = json.loads(folder.read_text())
    for a, b in zip(first["models"], second["models"]):
        for key in ("micro_f1", "macro_f1", "weighted_f1", "samples_f1"):
            assert abs(a[key] - b[key]) <= 1e-6, (a["id"], key)
    assert first["thresholds"] == second["thresholds"]
