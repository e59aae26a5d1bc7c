"""No row's stacked feature, threshold or CV score comes from a model that saw its labels.

Every input a dev row's out-of-fold prediction is stacked from is checked here by changing that row's
labels and asserting the input is bit-identical, while changing a training row's labels moves it (or
the test proves nothing): the text encoder's outputs (fine-tuned on extra rows only), the choice of
extra rows (made on extra rows only), the heads' out-of-fold probabilities, the peers' (C chosen inside
each fold), and the decisions every CV score and threshold report is computed from.
"""

import csv
import subprocess
import sys

import numpy as np
import pytest
from torch import nn

from pipeline import config
from pipeline.choose import thresholds
from pipeline.learn import fusion, logreg
from tests import tiny_data
from tests.conftest import ROOT, TINY


def tiny_cfg(**kw):
    cfg = config.load()
    cfg.update(fusion_epochs=5, fusion_hidden=16, patience=5, **kw)
    return cfg


def flip(y, row):
    y = y.copy()
    y[row] = 1 - y[row]
    return y


def permute_main_labels(folder):
    """The tiny data with every main row's genres moved to another row (the same genre counts)."""
    rows = list(csv.reader(open(folder / "movies.csv", newline="")))
    genres = [r[4] for r in rows[1:]]
    shuffled = genres[1:] + genres[:1]
    for r, g in zip(rows[1:], shuffled):
        r[4] = g
    with open(folder / "movies.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def encoder_runs(tmp_path_factory):
    """The select and finetune stages on the tiny data, and again with the main rows' labels permuted."""
    base = tmp_path_factory.mktemp("honest")
    extra = tiny_data.make_extra(base / "extra")
    outs = {}
    for name in ("labels", "permuted"):
        data = tiny_data.make(base / name)
        if name == "permuted":
            permute_main_labels(data)
        args = [*TINY, "--epochs", "1", "--data", data, "--extra", extra, "--work", base / name / "cache"]
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "finetune", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = base / name / "cache"
    return outs


def test_encoder_outputs_and_extra_rows_never_read_a_main_label(encoder_runs):
    a, b = (encoder_runs[k] for k in ("labels", "permuted"))
    (rows_a,), (rows_b,) = (list((c / "select").glob("*/rows.npy")) for c in (a, b))
    np.testing.assert_array_equal(np.load(rows_a), np.load(rows_b))
    # the curation keeps a movie by its genres, so the two runs may keep different rows: compare by movie
    import pandas as pd

    emb, ids = {}, {}
    for name, c in (("a", a), ("b", b)):
        (path,) = (c / "finetune").glob("*/embeddings.npy")
        (movies,) = (c / "data").glob("*/movies.csv")
        emb[name], ids[name] = np.load(path), pd.read_csv(movies).tmdb_id.tolist()
    common = sorted(set(ids["a"]) & set(ids["b"]))
    assert len(common) >= len(ids["a"]) - 2  # a rare-genre row or two may move in or out
    rows_in = {name: [ids[name].index(t) for t in common] for name in ids}
    np.testing.assert_array_equal(emb["a"][rows_in["a"]], emb["b"][rows_in["b"]])


@pytest.mark.parametrize("head", ["plot_head", "fusion", "poster_head"])
def test_heads_out_of_fold_probabilities_ignore_their_labels(head):
    rng = np.random.default_rng(0)
    n, g = 60, 4
    e, image = rng.normal(size=(n, 12)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    has_poster = np.ones((n, 1), np.float32)
    y = (rng.random((n, g)) < 0.4).astype(np.float32)
    fold = np.arange(n) % 3
    fold[:6] = -1  # test rows
    uses_text, uses_image = fusion.HEADS[head]
    e = e if uses_text else e[:, :0]
    text_head = nn.Linear(e.shape[1], g)
    cfg = tiny_cfg(modality_dropout=0.3)
    kw = {"use_image": uses_image, "drop": 0.3 if head == "fusion" else 0.0}
    base, _, _ = fusion.cross_fit(cfg, text_head, e, image, has_poster, y, fold, **kw)
    row = 8  # fold 2
    same, _, _ = fusion.cross_fit(cfg, text_head, e, image, has_poster, flip(y, row), fold, **kw)
    for mode in base:
        np.testing.assert_array_equal(base[mode][fold == fold[row]], same[mode][fold == fold[row]])
        others = (fold >= 0) & (fold != fold[row])
        assert np.abs(base[mode][others] - same[mode][others]).max() > 0


@pytest.mark.parametrize("dense", [True, False])
def test_peers_out_of_fold_probabilities_and_their_c_ignore_their_labels(dense):
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n, g = 90, 3
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = ((x[:, :g] + rng.normal(size=(n, g))) > 0.5).astype(np.float32)
    fold = np.arange(n) % 3
    fold[:9], fold[9:30] = -1, logreg.EXTRA  # test rows, extra (training-only) rows
    x_in = x if dense else sp.csr_matrix(np.abs(x))
    base, info = logreg.nested_probs(x_in, y, fold, [0.01, 1.0], scale=dense)
    assert np.isnan(base[fold == logreg.EXTRA]).all() and np.isfinite(base[fold != logreg.EXTRA]).all()
    row = np.flatnonzero(fold == 1)[0]
    same, info_same = logreg.nested_probs(x_in, flip(y, row), fold, [0.01, 1.0], scale=dense)
    np.testing.assert_array_equal(base[fold == 1], same[fold == 1])
    assert info["c_by_fold"]["1"] == info_same["c_by_fold"]["1"]
    assert np.abs(base[fold == 0] - same[fold == 0]).max() > 0


def test_cv_decisions_use_thresholds_and_strength_from_the_other_folds():
    """A fold's decisions and the threshold strength chosen for it (nested) never read its labels."""
    shrinks = [0.0, 3.0, 10.0, 100.0, np.inf]
    rng = np.random.default_rng(2)
    n, g = 240, 4
    probs = rng.random((n, g))
    y = (rng.random((n, g)) < probs).astype(np.float32)
    fold = np.arange(n) % 3
    fold[::17] = -1  # test rows: never a tuning row
    base, base_shrink = thresholds.oof_decisions(probs, y, fold, shrinks)
    changed = y.copy()
    changed[fold == 2] = 1 - changed[fold == 2]  # every label of fold 2
    changed[fold == -1] = 1 - changed[fold == -1]
    same, same_shrink = thresholds.oof_decisions(probs, changed, fold, shrinks)
    np.testing.assert_array_equal(base[fold == 2], same[fold == 2])
    assert base_shrink["2"] == same_shrink["2"]
    assert (base[(fold >= 0) & (fold != 2)] != same[(fold >= 0) & (fold != 2)]).any()
    assert not base[fold == -1].any()
    # the flip does move a strength chosen with fold 2's labels, so a leaky choice would fail the check above
    dev = fold >= 0
    leaky = [thresholds.choose_shrink(probs[dev], labels[dev], fold[dev], shrinks) for labels in (y, changed)]
    assert leaky[0] != leaky[1]
    # and the test rows' flip moves thresholds tuned with them, so tuning on test rows would fail too
    with_test = np.where(fold == -1, 3, fold)
    cuts = [
        thresholds.fit(probs, labels, np.where(with_test != 2, with_test, -1), shrinks)[0] for labels in (y, changed)
    ]
    assert not np.array_equal(*cuts)


def test_rows_that_do_not_train_change_no_head_and_are_scored_out_of_fold():
    """Texts scored only (long plots, windows): their labels and features reach no head, while they are
    predicted by their fold's head; a trainable text row of another fold does move the heads."""
    rng = np.random.default_rng(2)
    n, g = 60, 4
    e, image = rng.normal(size=(2 * n, 12)).astype(np.float32), rng.normal(size=(2 * n, 8)).astype(np.float32)
    has_poster = np.ones((2 * n, 1), np.float32)
    y = (rng.random((2 * n, g)) < 0.4).astype(np.float32)
    fold = np.tile(np.arange(n) % 3, 2)
    fold[:6] = fold[n : n + 6] = -1
    movie = np.tile(np.arange(n), 2)  # rows n.. are a second text of the same movies
    cfg, head = tiny_cfg(), nn.Linear(12, g)
    scored_only = np.arange(2 * n) < n
    base, _, _ = fusion.cross_fit(cfg, head, e, image, has_poster, y, fold, scored_only, movie, drop=0.3)
    y2, e2 = y.copy(), e.copy()
    y2[n:] = 1 - y2[n:]
    e2[n:] = rng.normal(size=(n, 12))
    same, _, _ = fusion.cross_fit(cfg, head, e2, image, has_poster, y2, fold, scored_only, movie, drop=0.3)
    for mode in base:
        np.testing.assert_array_equal(base[mode][:n], same[mode][:n])
        assert np.isfinite(base[mode]).all()  # every row scored: dev rows by their fold's head, the rest by the final
    both = np.ones(2 * n, bool)
    moved, _, _ = fusion.cross_fit(cfg, head, e2, image, has_poster, y2, fold, both, movie, drop=0.3)
    assert np.abs(moved["plot"][:n] - base["plot"][:n]).max() > 0


def test_early_stopping_keeps_a_movie_s_texts_on_one_side():
    """A movie's overview and its storyline are never split between the rows a fold head learns from and the
    rows that stop it (the stopping loss would read a text of a movie it learned)."""
    rng = np.random.default_rng(3)
    n, g = 90, 3
    e = rng.normal(size=(3 * n, 6)).astype(np.float32)
    image, has = np.zeros((3 * n, 0), np.float32), np.zeros((3 * n, 1), np.float32)
    y = (rng.random((3 * n, g)) < 0.4).astype(np.float32)
    fold, movie = np.tile(np.arange(n) % 3, 3), np.tile(np.arange(n), 3)
    seen = {}

    def spy(cfg, text_head, e, image, has_poster, y, fit, stop=None, **kw):
        seen["fit"], seen["stop"] = fit, stop
        return None, [], 1

    real = fusion.train_head
    fusion.train_head = spy
    try:
        fusion.fold_head(tiny_cfg(), nn.Linear(6, g), e, image, has, y, fold, 0, None, movie, use_image=False)
    finally:
        fusion.train_head = real
    fit_movies, stop_movies = set(movie[seen["fit"]]), set(movie[seen["stop"]])
    assert fit_movies and stop_movies and not fit_movies & stop_movies
    assert len(seen["fit"]) + len(seen["stop"]) == (fold != 0).sum()  # every row of the other folds, once
    assert not (fold[seen["fit"]] == 0).any() and not (fold[seen["stop"]] == 0).any()
