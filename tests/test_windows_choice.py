"""The choice of how long texts are read and learned from (pipeline/choose/windows.py), on hand-made scores."""

import numpy as np
import pytest

from pipeline.choose import windows


def scores(micro, macro, micro2=None, macro2=None):
    return {
        "plot": {"micro": micro, "macro": macro},
        "plot+poster": {"micro": micro if micro2 is None else micro2, "macro": macro if macro2 is None else macro2},
    }


BASE = scores(0.60, 0.50)


@pytest.mark.parametrize(
    "overviews,eligible",
    [
        (scores(0.60, 0.50), True),
        (scores(0.5971, 0.4971), True),  # 0.29 points under in both: within the bound
        (scores(0.60, 0.4969), False),  # macro 0.31 points under
        (scores(0.60, 0.50, 0.5969, 0.50), False),  # plot + poster micro 0.31 under
        (scores(0.65, 0.55), True),
    ],
)
def test_a_variant_must_keep_the_overviews_within_the_bound(overviews, eligible):
    assert windows.OVERVIEW_BOUND == 0.003  # issue 28: "within 0.3 points of today or better"
    assert windows.keeps_overviews(overviews, BASE) is eligible
    evidence = {
        "overviews": {"overviews": BASE, "texts": scores(0.50, 0.40)},
        "joined": {"overviews": overviews, "texts": scores(0.70, 0.60)},
    }
    assert windows.choose_variant(evidence, "overviews") == ("joined" if eligible else "overviews")


def test_the_best_texts_score_wins_among_eligible_variants_and_ties_go_first():
    evidence = {
        "overviews": {"overviews": BASE, "texts": scores(0.50, 0.40)},
        "storylines": {"overviews": BASE, "texts": scores(0.55, 0.45)},
        "joined": {"overviews": BASE, "texts": scores(0.55, 0.45)},
    }
    assert windows.choose_variant(evidence, "overviews") == "storylines"


READ = {254: 800, 190: 1000}  # windows read at each stride


@pytest.mark.parametrize(
    "denser, chosen",
    [
        (scores(0.6125, 0.5), (190, "max_probability")),  # criterion 0.55625 against 0.55: 0.56 points better
        (scores(0.5531, 0.5531), (190, "max_probability")),  # 0.31 points better: over the tie
        (scores(0.5529, 0.5529), (254, "mean_embedding")),  # 0.29 points better: within it, fewer windows
        (scores(0.55, 0.55), (254, "mean_embedding")),  # equal: fewer windows
    ],
)
def test_a_reading_of_more_windows_must_be_better_by_more_than_the_tie(denser, chosen):
    assert windows.READING_TIE == 0.003  # the 0.3 points issue 28 allows overviews to lose
    reading = {(254, "mean_embedding"): scores(0.55, 0.55), (190, "max_probability"): denser}
    assert windows.choose_reading(reading, READ) == chosen


def test_among_readings_of_as_many_windows_the_best_wins_and_ties_go_first():
    reading = {
        (254, "mean_embedding"): scores(0.55, 0.55),
        (254, "mean_probability"): scores(0.552, 0.552),  # within the tie of the best, and better than the first
        (190, "mean_probability"): scores(0.554, 0.554),
        (254, "max_probability"): scores(0.552, 0.552),  # equal to mean_probability: the first of them wins
    }
    assert windows.choose_reading(reading, READ) == (254, "mean_probability")


@pytest.mark.parametrize("how", ["mean_probability", "max_probability"])
def test_window_probabilities_are_pooled_per_text(how):
    per_window = np.array([[0.1, 0.9], [0.3, 0.5], [0.2, 0.2], [0.8, 0.4], [0.6, 0.0], [0.4, 1.0]], np.float32)
    counts = np.array([1, 2, 3])
    got = windows.pooled(per_window, counts, how)
    by_hand = {
        "mean_probability": [[0.1, 0.9], [0.25, 0.35], [0.6, 0.4666667]],
        "max_probability": [[0.1, 0.9], [0.3, 0.5], [0.8, 1.0]],
    }[how]
    np.testing.assert_allclose(got, by_hand, rtol=1e-6)


def test_one_threshold_for_every_genre_is_fitted_on_the_dev_overviews_only():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.3).astype(np.float32)
    probs = {m: np.clip(y * 0.6 + rng.random((40, 3)) * 0.4, 0, 1).astype(np.float32) for m in windows.MODES}
    dev = np.arange(40) < 30
    cut = windows.cuts(probs, y, np.flatnonzero(dev))
    scrambled = {m: p.copy() for m, p in probs.items()}
    for p in scrambled.values():
        p[~dev] = rng.random((10, 3))  # the held-out rows' probabilities change nothing
    assert windows.cuts(scrambled, y, np.flatnonzero(dev)) == cut
