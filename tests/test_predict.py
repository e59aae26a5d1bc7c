"""`python -m pipeline predict`: output format, posters, and every kind of bad input."""

import csv
import json

import pandas as pd
import pytest

from tests.conftest import ROOT, cli
from tests.tiny_data import poster


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def inputs(tmp_path):
    import random

    (tmp_path / "img").mkdir()
    poster(tmp_path / "img" / "a.jpg", random.Random(1), ["Horror"])
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "img" / "notes.txt").write_text("hello")
    return tmp_path


def predict(models, csv_path, out, check=True):
    return cli("predict", csv_path, "--out", out, "--models", models, check=check)


def test_output_columns_probabilities_and_genres(tiny, inputs):
    rows = [
        [11, "A haunted cabin, a demon and a scream in the night.", "img/a.jpg"],
        [12, "A wedding mix-up, an awkward roommate and a prank.", ""],
    ]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    predict(tiny.models, src, inputs / "out.csv")
    out = pd.read_csv(inputs / "out.csv", keep_default_na=False)
    labels = json.loads((tiny.models / "manifest.json").read_text())["labels"]
    assert list(out.columns) == ["tmdb_id", *labels, "genres"]
    assert out.tmdb_id.tolist() == [11, 12]
    probs = out[labels].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    for _, row in out.iterrows():
        assert row.genres and set(row.genres.split("|")) <= set(labels)


def test_without_tmdb_id_or_poster_columns(tiny, inputs):
    src = write_csv(inputs / "in.csv", ["overview"], [["Two friends plan a heist and a chase across the city."]])
    predict(tiny.models, src, inputs / "out.csv")
    out = pd.read_csv(inputs / "out.csv")
    assert "tmdb_id" not in out.columns and len(out) == 1


def test_poster_changes_the_prediction_and_empty_poster_is_plot_only(tiny, inputs):
    plot = "A ghost and a demon in a haunted cabin."
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, plot, "img/a.jpg"], [2, plot, ""]])
    predict(tiny.models, src, inputs / "out.csv")
    out = pd.read_csv(inputs / "out.csv").drop(columns=["tmdb_id", "genres"]).to_numpy()
    assert abs(out[0] - out[1]).max() > 1e-4


def test_missing_overview_column_is_a_one_line_error(tiny, inputs):
    src = write_csv(inputs / "in.csv", ["tmdb_id", "plot"], [[1, "text"]])
    proc = predict(tiny.models, src, inputs / "out.csv", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "overview" in proc.stderr
    assert not (inputs / "out.csv").exists()


def test_unreadable_posters_fall_back_to_plot_only(tiny, inputs):
    plot = "A soldier and a mercenary in a gunfight."
    rows = [[1, plot, "img/broken.jpg"], [2, plot, "img/missing.jpg"], [3, plot, "img/notes.txt"], [4, plot, ""]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    proc = predict(tiny.models, src, inputs / "out.csv")
    assert proc.stderr.count("warning: row") == 3
    out = pd.read_csv(inputs / "out.csv").drop(columns=["tmdb_id", "genres"]).to_numpy()
    for i in range(3):  # each bad poster row equals the plot-only row
        assert abs(out[i] - out[3]).max() < 1e-6


def test_odd_rows_do_not_end_the_run(tiny, inputs):
    rows = [[1, ""], [2, "x" * 20000], [3, "日本語のあらすじ。"], [4, "A normal plot about a family dinner."]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview"], rows)
    predict(tiny.models, src, inputs / "out.csv")
    out = pd.read_csv(inputs / "out.csv", keep_default_na=False)
    assert out.tmdb_id.tolist() == [1, 2, 3, 4]


def test_unreadable_csv_is_an_error(tiny, inputs):
    proc = predict(tiny.models, inputs / "nope.csv", inputs / "out.csv", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0


def test_committed_models_predict(tmp_path):
    """The shipped models in assets/models run through the same CLI."""
    src = write_csv(tmp_path / "in.csv", ["overview"], [["A detective hunts a serial killer through a rainy city."]])
    cli("predict", src, "--out", tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    spec = json.loads((ROOT / "assets/models/manifest.json").read_text())
    assert list(out.columns) == [*spec["labels"], "genres"]
