"""publish.target_checks: the one place the site's targets are judged (the table and the missed note print it),
on the files that ship: their F1 (fp32 beside it), their micro margin over the best peer, and on long texts
(stage `lengths`) their F1 on IMDb storylines and their margin over the TF-IDF peer on long plots."""

import pytest

from pipeline.stages import publish

CFG = {"target_plot_micro": 0.65, "target_plot_macro": 0.58, "target_margin_points": 3.0}
METRICS = {"comparison": {"plot": {"shipped": "ours"}}}


def shipped(micro: float, macro: float, fp32_micro: float = 0.7, fp32_macro: float = 0.6) -> dict:
    return {"plot": {"micro_f1": micro, "macro_f1": macro, "fp32_micro_f1": fp32_micro, "fp32_macro_f1": fp32_macro}}


def margin(points: float, lo: float = 1.2, hi: float = 4.8) -> dict:
    return {"plot": {"best_peer": "tfidf_lr", "micro": {"diff": points, "lo": lo, "hi": hi}}}


@pytest.mark.parametrize(
    "points, met",
    [(3.0, True), (2.95, False), (2.999, False), (3.2, True)],  # 2.95 and 2.999 print as 3.0 at one decimal
)
def test_margin_is_met_only_at_or_over_the_goal(points, met):
    rows = publish.target_checks(CFG, METRICS, shipped(0.7, 0.6), margin(points), {})
    (row,) = [r for r in rows if r["target"].startswith("micro F1 over")]
    assert row["met"] is met and row["measured"] == points and row["ci"] == [1.2, 4.8]


def test_f1_targets_read_the_shipped_files_with_fp32_beside_them():
    rows = {
        r["target"]: r for r in publish.target_checks(CFG, METRICS, shipped(0.649, 0.59, 0.651, 0.57), margin(3.5), {})
    }
    assert rows["micro F1"] == {
        "mode": "plot",
        "target": "micro F1",
        "goal": 0.65,
        "measured": 0.649,  # the shipped files miss where fp32 (0.651) would meet: the files decide
        "fp32": 0.651,
        "met": False,
    }
    assert rows["macro F1"]["measured"] == 0.59 and rows["macro F1"]["met"] and rows["macro F1"]["fp32"] == 0.57


def test_a_target_missing_from_the_config_is_not_checked():
    rows = publish.target_checks({"target_plot_micro": 0.65}, METRICS, shipped(0.7, 0.6), margin(3.5), {})
    assert [r["target"] for r in rows] == ["micro F1"]


def lengths(story_micro, story_macro, ours_long, peer_long, n=40) -> dict:
    f1 = lambda micro, macro=0.5: {"micro": micro, "macro": macro, "texts": n}  # noqa: E731
    return {
        "shipped_files": {
            "storylines": {"shipped": f1(story_micro, story_macro), "tfidf_lr": f1(0.6)},
            "long_plots": {
                "shipped": f1(0.6),
                "tfidf_lr": f1(0.6),
                "over_250_words": {"shipped": f1(ours_long), "tfidf_lr": f1(peer_long)},
            },
        }
    }


@pytest.mark.parametrize(
    "ours,peer,met",
    [(0.70, 0.70, True), (0.699, 0.70, False), (0.73, 0.70, True)],  # at least level with the peer
)
def test_long_plots_must_read_at_least_as_well_as_the_tfidf_peer(ours, peer, met):
    cfg = {"target_long_margin_points": 0.0, "target_synopsis_micro": 0.67, "target_synopsis_macro": 0.61}
    rows = publish.target_checks(cfg, METRICS, shipped(0.7, 0.6), margin(3.5), lengths(0.68, 0.60, ours, peer))
    by = {r["target"]: r for r in rows}
    long = by["micro F1 over TF-IDF + LR, long plots over 250 words (40)"]
    assert long["met"] is met and long["measured"] == pytest.approx(100 * (ours - peer))
    assert by["micro F1, IMDb storylines"]["met"] and not by["macro F1, IMDb storylines"]["met"]  # 0.60 < 0.61


def test_no_long_texts_no_long_text_targets():
    cfg = {"target_long_margin_points": 0.0, "target_synopsis_micro": 0.67}
    rows = publish.target_checks(cfg, METRICS, shipped(0.7, 0.6), margin(3.5), {"reading": None})
    assert not [r for r in rows if "IMDb" in r["target"] or "long plots" in r["target"]]
