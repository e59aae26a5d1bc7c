"""The whole pipeline on invented data: curation, split, training, evaluation, export, cache."""

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from pipeline.runtime import manifest
from pipeline.stages.figures import architecture
from tests.conftest import cli

STAGES = [
    "data",
    "embed",
    "select",
    "finetune",
    "bag",
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


def test_extra_rows_are_curated_on_their_own_and_only_ever_train(tiny):
    import pandas as pd

    curation = tiny.json("curation.json")
    steps = {s["step"]: s for s in curation["extra_steps"]}
    assert steps["load"]["rows_out"] == 51
    assert steps["drop short plots"]["rows_out"] == 50
    assert steps["drop duplicates"]["rows_out"] == 49  # the copy differs only in case
    assert steps["genres"]["rows_out"] == 48  # the TV-only row has no kept genre
    assert curation["extra"]["languages"] == {"en": 40, "other": 8}
    extra = pd.read_csv(tiny.stage("data") / "extra.csv")
    movies = pd.read_csv(tiny.stage("data") / "movies.csv")
    assert len(extra) == 48 and not set(extra.tmdb_id) & set(movies.tmdb_id)
    assert "split" not in extra and "fold" not in extra  # never a test or out-of-fold row
    selected = json.loads((tiny.stage("select") / "selected.json").read_text())
    assert selected["rows"] == tiny.json("metrics.json")["extra_rows"] > 0
    # chosen by CV on the validation source's extra rows: the main data's labels are never read
    assert selected["rule"].startswith("cross-validation") and set(selected["cv"]) >= {"languages=en", "languages=all"}


@pytest.mark.parametrize("clash", ["tmdb_id", "overview"])
def test_extra_rows_that_are_main_movies_stop_the_run(tiny, tmp_path, clash):
    import csv

    from tests import tiny_data

    extra = tiny_data.make_extra(tmp_path / "extra")
    with open(tiny.data / "movies.csv", newline="") as f:
        main = next(csv.DictReader(f))
    rows = list(csv.reader(open(extra / "movies.csv", newline="")))
    if clash == "tmdb_id":
        rows[1][0] = main["tmdb_id"]
    else:  # the same plot, spaced and punctuated differently
        rows[1][5] = "  " + main["overview"].upper().replace(".", " ;") + " "
    with open(extra / "movies.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    proc = cli(*tiny.args("data"), "--extra", extra, "--work", tmp_path / "cache", check=False)
    assert proc.returncode != 0
    assert "extra data shares movies with the main data" in proc.stderr
    assert ("1 tmdb_id" if clash == "tmdb_id" else "1 overviews") in proc.stderr


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
    ours = ["text_finetuned", "plot_head", "fusion_plot_only", "fusion"]
    assert ids == ["tfidf_lr", "text_lr", "poster_lr", "concat_lr", "poster_mlp", *ours]
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
    by_id = {m["id"]: m for m in metrics["models"]}
    cv = {i: (by_id[i]["cv_micro_f1"]["mean"] + by_id[i]["cv_macro_f1"]["mean"]) / 2 for i in ids}
    for mode, c in metrics["comparison"].items():
        # the best peer and each mode's shipped model are the ones CV scores best: never chosen on test
        peers = {"plot": ("tfidf_lr", "text_lr")}.get(mode, ids[:4])
        assert cv[c["best_peer"]] == max(cv[i] for i in peers)
        candidates = {"plot": ["text_finetuned", "plot_head", "fusion_plot_only"]}.get(
            mode, ["fusion", "plot_head", "text_finetuned"]
        )
        assert c["shipped"] == metrics["shipped"][mode]
        assert cv[c["shipped"]] == max(cv[i] for i in candidates)
        lo, hi = c["paired_points_ci"]["micro_f1_ci"]
        assert lo <= c["micro_points"] <= hi  # the paired interval holds the observed margin
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
    # the rules Python and the browser share, as data (pipeline/rules.py)
    from pipeline.runtime import rules

    assert spec["rules"]["decision"] == rules.RULES["decision"]
    assert spec["rules"]["sentence_pattern"] == rules.RULES["sentence_pattern"]
    # the windows a long text is read in: the stride and pooling train chose by CV (its evidence in lengths.json)
    reading = tiny.json("lengths.json")["reading"]
    assert spec["rules"]["windows"] == rules.truncation(64, reading["stride"], reading["pool"]) == reading["rule"]
    assert reading["stride"] in (62, 46) and reading["pool"] in rules.POOLS and "truncation" not in spec["text_encoder"]
    assert spec["rules"]["poster"] == spec["poster_encoder"]["preprocessing"]
    shipped = tiny.json("metrics.json")["shipped"]
    assert spec["fusion_head"]["heads"] == {m: shipped[m] for m in spec["thresholds"]}


def test_rerun_is_cached_and_identical(tiny):
    before = (tiny.site_data / "metrics.json").read_text()
    start = time.perf_counter()
    second = tiny.run("all")
    elapsed = time.perf_counter() - start
    for stage in (
        "data",
        "select",
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
    for upstream in ("data", "select", "finetune", "embed_plots", "embed_posters"):
        assert f"[{upstream}] cached" in out
    assert "[train] running" in out


def test_finetune_learns_from_the_chosen_extra_rows_and_scores_dev_rows(tiny):
    import numpy as np
    import pandas as pd

    folder = tiny.stage("finetune")
    history = json.loads((folder / "history.json").read_text())
    selected = json.loads((tiny.stage("select") / "selected.json").read_text())
    assert history["extra_rows"] == selected["rows"]
    assert len(history["epochs"]) == 2  # fixed in config (the tiny run's --epochs 2), never chosen
    for h in history["epochs"]:
        assert h["train_loss"] > 0 and h["held_loss"] > 0 and 0 <= h["held_micro_ap"] <= 1
    assert (folder / "encoder.safetensors").stat().st_size > 1_000_000
    movies = pd.read_csv(tiny.stage("data") / "movies.csv")
    assert np.load(folder / "embeddings.npy").shape == (len(movies), 384)


def test_heads_probabilities_cover_every_row(tiny):
    import numpy as np
    import pandas as pd

    movies = pd.read_csv(tiny.stage("data") / "movies.csv")
    with np.load(tiny.stage("train") / "probs.npz") as probs:
        for key in probs.files:
            assert np.isfinite(probs[key]).all() and probs[key].shape == (len(movies), 4), key
    history = json.loads((tiny.stage("train") / "history.json").read_text())
    assert all(len(h["folds"]) == 3 for h in history.values())


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
    assert svg.startswith("<svg") and "switched by the poster" in svg and "64 tokens" in svg
    heads = json.loads((tiny.models / "manifest.json").read_text())["fusion_head"]["heads"]
    assert f"no poster → {architecture.head_name(heads['plot'])}" in svg  # the head the manifest runs for each mode
    assert f"poster → {heads['plot+poster'].replace('_', ' ')}" in svg
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
    assert first["shipped"] == second["shipped"]


@pytest.mark.slow
def test_the_pipeline_runs_without_extra_rows(tmp_path):
    """`make pipeline EXTRA=''` (the README promises it): no extra rows, so the encoder stays the pretrained one
    with a genre head that adds no prior (all zeros; no main-set label ever reaches the encoder), the heads
    learn from the dev rows alone, and predict runs what was exported."""
    import re

    import numpy as np
    from safetensors.numpy import load_file

    from tests.conftest import TinyRun

    run = TinyRun(tmp_path)
    # export must choose its format with no extra-row plots to calibrate GPTQ on
    args = run.args("all")
    args[args.index("--extra") + 1] = ""
    first = cli(*args)
    (folder,) = set(re.findall(r"^\[finetune\] (?:running ->|cached:) (\S+)$", first.stdout, re.M))
    history = json.loads((tmp_path / folder / "history.json").read_text())
    assert history == {"epochs": [], "extra_rows": 0}
    head = load_file(str(tmp_path / folder / "head.safetensors"))
    assert not np.any(head["weight"]) and not np.any(head["bias"])
    assert run.json("metrics.json")["extra_rows"] == 0
    choice = run.json("models.json")["shipped"]["text_encoder"]["format_choice"]
    assert "skipped" in choice["tried"]["int4"] and choice["ships"] == "weights"
    plots = tmp_path / "plots.csv"
    plots.write_text("overview\nA detective hunts a killer through the rain-soaked city at night.\n")
    out = tmp_path / "genres.csv"
    cli("predict", plots, "--out", out, "--models", run.models)
    assert out.read_text().count("\n") == 2


def test_a_run_without_long_texts_ships_the_bag_unblended(tiny):
    """No storylines nor long plots: the heads learn from overviews alone and train blends nothing, so the
    manifest ships the bag of words at weight 0 in both modes, and passes the schema."""
    out = tiny.run("export", "--storylines", "", "--long_plots", "").stdout
    (folder,) = re.findall(r"^\[export\] running -> (\S+)$", out, re.M)
    spec = json.loads((Path(folder) / "manifest.json").read_text())
    assert manifest.problem(spec) is None
    assert spec["bag_of_words"]["blend"] == {"plot": 0.0, "plot+poster": 0.0}
    assert "[bag] fold -1" in out  # the bag still learned, from overviews and extra rows
