"""End to end, the test split decides nothing: the whole tiny pipeline run again with the test rows' labels
shuffled among themselves (same split, same plots and posters), and the test movies' storylines and long plots
shuffled among them too, makes every choice the first run made (models, thresholds and their pull,
format, every logistic-regression C, extra rows, how long texts are read and learned from), every shipped
file (the heads' own float initializers to rounding) and every cross-validated figure equal, while the test
scores move (so the shuffle reached what reads test labels)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TinyRun, cli


def choices(site_data) -> dict:
    """Everything chosen, and every figure computed on dev folds only, as the site's data records them."""
    metrics = json.loads((site_data / "metrics.json").read_text())
    models = json.loads((site_data / "models.json").read_text())
    lengths = json.loads((site_data / "lengths.json").read_text())
    return {
        "shipped": metrics["shipped"],
        "thresholds": metrics["thresholds"],
        "threshold_shrink": metrics["threshold_shrink"],
        "threshold_shrink_cv": metrics["threshold_shrink_cv"],
        "every_c": metrics["peers"]["c_by_fold"],
        "best_peer": metrics["peers"]["best"],
        "extra_choice": metrics["extra_choice"],
        "cv": {
            m["id"]: (m["cv_micro_f1"], m["cv_macro_f1"], m["cv_threshold_shrink_by_fold"]) for m in metrics["models"]
        },
        "format": models["shipped"]["text_encoder"]["format_choice"],
        "manifest_thresholds": models["thresholds"],
        "manifest_windows": models["rules"]["windows"],
        # every shipped file the same bytes: the heads and the bag of words learn from dev rows and texts only, the
        # encoders from the extra rows (the text encoder) or from nothing here (the poster encoder); the heads'
        # graph, whose float initializers are compared by head_initializers
        "files": {name: info for name, info in models["files"].items() if name != "fusion_head.onnx"},
        "bag_blend": models["bag_of_words"]["blend"],
        "long_text_reading": lengths["reading"],
        "by_length_out_of_fold": lengths["bands"]["dev"],
        "long_plots_out_of_fold": lengths["long_plots"].get("main_dev"),
    }


def head_initializers(models_dir) -> dict:
    """The float initializers the heads' graph holds itself (the rest are in its packed weights file)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(models_dir / "fusion_head.onnx"), load_external_data=False).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if not i.external_data}


def scores_on_test(site_data) -> dict:
    metrics = json.loads((site_data / "metrics.json").read_text())
    return {m["id"]: (m["micro_f1"], m["macro_f1"]) for m in metrics["models"]}


def shuffled_texts(tiny: TinyRun, folder) -> tuple:
    """Copies of the tiny storylines and long plots where the test movies' texts are shuffled among them."""
    movies = pd.read_csv(tiny.stage("data") / "movies.csv", keep_default_na=False)
    test_ids = set(movies.tmdb_id[movies.fold < 0].astype(str))
    out = []
    for src, name, column in (
        (tiny.storylines, "storylines.csv", "storyline"),
        (tiny.long_plots, "movies.csv", "plot"),
    ):
        table = pd.read_csv(src / name, keep_default_na=False, dtype={"tmdb_id": str})
        rows = np.flatnonzero(table.tmdb_id.isin(test_ids).to_numpy())
        assert len(rows) >= 2, name  # the tiny data ties texts to test movies, or the shuffle proves nothing
        table.loc[rows, column] = table[column].to_numpy()[np.roll(rows, 1)]
        (folder / src.name).mkdir()
        table.to_csv(folder / src.name / name, index=False)
        out.append(folder / src.name)
    return tuple(out)


@pytest.mark.slow
def test_shuffling_the_test_labels_changes_no_choice(tiny, tmp_path):
    again = TinyRun.__new__(TinyRun)  # the same data folders, its own cache and outputs
    again.base, again.data, again.extra = tmp_path, tiny.data, tiny.extra
    again.storylines, again.long_plots = shuffled_texts(tiny, tmp_path)
    again.work, again.site_data, again.models = tmp_path / "cache", tmp_path / "_data", tmp_path / "models"
    again.figures = tmp_path / "figures"
    # the data stage's output, copied under the same key (so the split is the first run's), with the test
    # rows' genres shuffled among the test rows; every later stage runs anew on it
    data_stage = tiny.stage("data")
    copy = again.work / "data" / data_stage.name
    shutil.copytree(data_stage, copy)
    movies = pd.read_csv(copy / "movies.csv", keep_default_na=False, dtype={"poster": str})
    test = np.flatnonzero(movies.fold.to_numpy() < 0)
    shuffled = np.random.default_rng(0).permutation(test)
    assert (movies.genres.to_numpy()[shuffled] != movies.genres.to_numpy()[test]).sum() >= len(test) // 2
    movies.loc[test, "genres"] = movies.genres.to_numpy()[shuffled]
    movies.to_csv(copy / "movies.csv", index=False)

    second = cli(*again.args("all"))
    assert f"[data] cached: {copy}" in second.stdout  # the shuffled table, not a new split
    assert choices(again.site_data) == choices(tiny.site_data)
    # Equal to float rounding, not bytes: long_text embeds texts in batches of similar length, and shuffling the
    # test movies' texts changes a dev text's batch mates, hence its padding and its embedding's rounding (up to
    # 1.6e-6 in these weights on the tiny run, 2026-12-07): the bound is 60 times that. How far a head that learned
    # the shuffled test rows would move was not measured; the packed weights file is compared by bytes above.
    first_head, again_head = head_initializers(tiny.models), head_initializers(again.models)
    assert first_head.keys() == again_head.keys() and first_head
    for name, value in first_head.items():
        np.testing.assert_allclose(again_head[name], value, rtol=0, atol=1e-4, err_msg=name)
    first, moved = scores_on_test(tiny.site_data), scores_on_test(again.site_data)
    assert first.keys() == moved.keys() and first != moved
