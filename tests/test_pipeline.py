"""The whole pipeline on invented data: curation, split, training, evaluation, export, cache."""

import hashlib
import json
import time

import pytest

from tests.conftest import cli

STAGES = ["data", "embed", "train", "evaluate", "export", "all", "predict"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage):
    out = cli(stage, "--help").stdout
    assert "usage: python -m pipeline" in out
    if stage != "predict":
        assert "--fusion_epochs" in out and "--data" in out


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

    (folder,) = (tiny.work / "data").iterdir()
    movies = pd.read_csv(folder / "movies.csv")
    assert movies.tmdb_id.is_unique
    assert set(movies.split) == {"train", "val", "test"}
    assert tiny.json("metrics.json")["split"] == movies.split.value_counts().to_dict()


def test_metrics_cover_every_model_on_the_test_split(tiny):
    metrics = tiny.json("metrics.json")
    ids = [m["id"] for m in metrics["models"]]
    assert ids == ["tfidf_lr", "text_lr", "poster_lr", "concat_lr", "fusion", "fusion_plot_only"]
    for m in metrics["models"]:
        for key in ("micro_f1", "macro_f1", "weighted_f1", "samples_f1", "micro_precision", "micro_recall"):
            assert 0.0 <= m[key] <= 1.0
        assert set(m["per_genre"]) == set(metrics["labels"])
    assert metrics["labels"] == ["Action", "Comedy", "Horror", "Romance"]
    # the invented genres are easy to tell apart: a model that learned nothing would not get here
    assert metrics["best"]["micro_f1"] > 0.6


def test_manifest_describes_the_exported_files(tiny):
    spec = json.loads((tiny.models / "manifest.json").read_text())
    assert spec["labels"] == tiny.json("metrics.json")["labels"]
    assert len(spec["thresholds"]) == len(spec["labels"])
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
    for stage in ("data", "embed", "train", "evaluate", "export"):
        assert f"[{stage}] cached" in second.stdout
    assert "running" not in second.stdout
    assert (tiny.site_data / "metrics.json").read_text() == before
    print(f"cached re-run took {elapsed:.1f} s")


def test_config_change_reruns_only_downstream(tiny):
    out = tiny.run("train", "--fusion_lr", "0.002").stdout
    assert "[data] cached" in out and "[embed] cached" in out
    assert "[train] running" in out
